"""Seeded synthetic :class:`MarketData` and the ``env_config["data"]`` dispatcher.

The synthetic market is a log random walk with a weak, *known* predictive signal: an AR(1) state
``s_t`` (observable at ``t``) shifts the next bar's expected return by ``ic * sigma * s_t``. The
forecast feature ``fc_mean`` is exactly that expectation, so a policy has something real to learn
and nothing it sees comes from the future. Listings are ragged (staggered starts, some early
delistings) so masking and delisting paths are exercised. Same seed, same arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from raytrade.envs.config import DataConfig, ReplayDataConfig, SyntheticDataConfig
from raytrade.envs.market_data import MarketData
from raytrade.replay.loop_rules import LoopRules

SYNTHETIC_FEATURES: tuple[str, ...] = (
    "ret_1",
    "ret_5",
    "ret_20",
    "vol_20",
    "spread_bps",
    "fc_mean",
    "fc_std",
    "kelly_lite",
)


def _trailing(x: np.ndarray, k: int) -> np.ndarray:
    """Sum of ``x`` over the last ``k`` rows including the current one (shorter at the start)."""
    c = np.cumsum(x, axis=0)
    out = c.copy()
    out[k:] = c[k:] - c[:-k]
    return out


def synthetic_market_data(
    n_assets: int = 8,
    n_steps: int = 1000,
    seed: int = 0,
    n_crypto: int = 0,
    ragged: bool = True,
    periods_per_year: int = 252,
    ic: float = 0.05,
) -> MarketData:
    """A seeded random-walk market of ``n_steps`` bars x ``n_assets`` (the last ``n_crypto`` crypto)."""
    if not 0 <= n_crypto <= n_assets:
        raise ValueError(f"n_crypto must be in [0, n_assets={n_assets}], got {n_crypto}")
    rng = np.random.default_rng(seed)
    t, n = n_steps, n_assets
    is_crypto = np.arange(n) >= n - n_crypto
    sigma = np.where(is_crypto, rng.uniform(0.03, 0.05, n), rng.uniform(0.01, 0.03, n))
    signal = np.zeros((t, n))
    eps = rng.standard_normal((t, n))
    phi = 0.9
    signal[0] = eps[0]
    for i in range(1, t):  # AR(1) recursion over time only, once at build time
        signal[i] = phi * signal[i - 1] + np.sqrt(1 - phi**2) * eps[i]
    mu = ic * sigma * signal  # expected return of bar t + 1, known at t
    noise = rng.standard_normal((t, n)) * sigma
    ret = np.zeros((t, n))
    ret[1:] = mu[:-1] + noise[1:]
    gap_share = rng.uniform(0.2, 0.5, n)
    log_close = np.log(rng.uniform(10, 500, n)) + np.cumsum(ret, axis=0)
    close = np.exp(log_close)
    open_ = np.empty_like(close)
    open_[0] = close[0]
    open_[1:] = np.exp(log_close[:-1] + gap_share * ret[1:])

    listed = np.ones((t, n), dtype=bool)
    if ragged and n > 1:
        first = np.where(rng.random(n) < 0.5, rng.integers(0, max(t // 4, 1), n), 0)
        last = np.where(rng.random(n) < 0.25, rng.integers(t // 2, t, n), t - 1)
        first[0], last[0] = 0, t - 1
        rows = np.arange(t)[:, None]
        listed = (rows >= first) & (rows <= last)
        for j in range(n):  # fill prices outside the listing so arithmetic stays finite
            open_[: first[j], j] = open_[first[j], j]
            close[: first[j], j] = close[first[j], j]
            open_[last[j] + 1 :, j] = close[last[j], j]
            close[last[j] + 1 :, j] = close[last[j], j]

    spread = rng.uniform(2, 30, n) * (1 + 0.3 * np.abs(rng.standard_normal((t, n))))
    dvol = np.exp(rng.uniform(np.log(1e6), np.log(5e9), n)) * np.exp(0.3 * rng.standard_normal((t, n)))
    vol_20 = np.sqrt(np.maximum(_trailing(ret**2, 20) / np.minimum(np.arange(1, t + 1), 20)[:, None], 1e-8))
    fc_std = np.broadcast_to(sigma, (t, n))
    rules = LoopRules()
    kelly = np.minimum(rules.kelly_cap, np.maximum(0.0, rules.kelly_scale * np.abs(mu) / vol_20**2))
    feats = np.stack([ret, _trailing(ret, 5), _trailing(ret, 20), vol_20, spread, mu, fc_std, kelly], axis=-1)
    feats = np.where(listed[..., None], feats, 0.0).astype(np.float32)
    ts = np.datetime64("2020-01-01T00:00:00", "us") + np.arange(t) * np.timedelta64(1, "D")
    return MarketData(
        ts=ts,
        symbols=tuple(f"SYN{j:03d}" + ("USD" if is_crypto[j] else "") for j in range(n)),
        asset_class=tuple("crypto" if c else "equity" for c in is_crypto),
        open=open_,
        close=close,
        listed=listed,
        spread_bps=spread,
        dollar_volume=dvol,
        features=feats,
        feature_names=SYNTHETIC_FEATURES,
        regime_code=np.zeros((t, n), dtype=np.int8),
        periods_per_year=periods_per_year,
    )


def market_data_from_config(cfg: DataConfig | dict[str, Any]) -> MarketData:
    """Build the MarketData an ``env_config["data"]`` entry names (dispatch on ``kind``)."""
    if isinstance(cfg, dict):
        kind = cfg.get("kind")
        if kind == "replay":
            cfg = ReplayDataConfig.model_validate(cfg)
        elif kind == "synthetic":
            cfg = SyntheticDataConfig.model_validate(cfg)
        else:
            raise ValueError(f"data.kind must be 'synthetic' or 'replay', got {kind!r}")
    if isinstance(cfg, SyntheticDataConfig):
        return synthetic_market_data(
            n_assets=cfg.n_assets,
            n_steps=cfg.n_steps,
            seed=cfg.seed,
            n_crypto=cfg.n_crypto,
            ragged=cfg.ragged,
            periods_per_year=cfg.periods_per_year,
        )
    from raytrade.envs.replay_loader import load_market_data_from_config  # imported only when used

    return load_market_data_from_config(cfg)
