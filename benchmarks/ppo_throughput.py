"""PPO training throughput on ``PortfolioEnv`` (N = 32) against CartPole-v1, same RLlib settings.

    python benchmarks/ppo_throughput.py --json out.json [--quick]   (or python -m benchmarks.ppo_throughput)

Measures env steps sampled per second of wall time *including learning* (``Algorithm.train()``:
sampling, GAE, SGD epochs, weight sync) per iteration, over ten iterations after one warm-up, the
algorithms' iterations taken in turn so that the machine's load drifts hit them alike; each figure
is the median iteration (the per-iteration rates are in the JSON). Both envs run
in the same process with identical settings: RLlib's default PPO module, the env's vector entry
point (``gym_env_vectorize_mode="vector_entry_point"``), the same runners, envs per runner, batch,
minibatch and epochs. Headline: ``ratio = portfolio / cartpole`` (target >= 0.7). The portfolio run is
repeated with the catalog's ``ppo_mlp`` module (what the specs train) for reference.

The enriched observation (what the on-policy specs observe: the 24 ``DEFAULT_FEATURES`` columns,
normalised with train-window statistics, plus the fraction-missing channel) is measured in the same
run on a small synthetic replay store ingested into a temporary folder (same N, same episode length):
``ratio_enriched = portfolio_enriched / cartpole`` (target >= 0.6), and with ``ppo_mlp``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script path: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks.common import on_local_ray, print_table, quick_and_json_args, write_report

N_ASSETS = 32


def _portfolio_env_config() -> dict[str, Any]:
    return {
        "data": {"kind": "synthetic", "n_assets": N_ASSETS, "n_steps": 2000, "seed": 0},
        "sim": {"episode_len": 252},
        "flat_obs": True,
    }


def _enriched_env_config(root: str) -> dict[str, Any]:
    """The specs' observation on a replay store's train split (normaliser fitted there)."""
    from raytrade.envs.replay_loader import DEFAULT_FEATURES
    from raytrade.tune_specs.spec import train_normalizer

    data = {"kind": "replay", "root": root, "split": "train"}
    return {
        "data": data,
        "feature_columns": list(DEFAULT_FEATURES),
        "normalizer": train_normalizer(data, DEFAULT_FEATURES).model_dump(mode="json"),
        "sim": {"episode_len": 252},
        "flat_obs": True,
    }


def _synthetic_store(root: Path) -> str:
    """A 3-year daily synthetic store of ``N_ASSETS`` equities (train split ~470 bars)."""
    from raytrade.replay.ingest import ingest_frames
    from raytrade.replay.sources.synthetic import generate

    market = generate(n_symbols=N_ASSETS, years=3.0, seed=0, n_crypto=0)
    ingest_frames(root, market.bars, market.macro, show_progress=False)
    return str(root)


def _settings(config: Any, batch: int, envs: int) -> Any:
    return config.env_runners(
        num_env_runners=0, num_envs_per_env_runner=envs, gym_env_vectorize_mode="vector_entry_point"
    ).training(train_batch_size_per_learner=batch, minibatch_size=batch // 4, num_epochs=4, lr=3e-4)


def _interleaved_throughput(configs: dict[str, Any], iterations: int) -> dict[str, list[float]]:
    """Env steps per second of each ``Algorithm.train()`` iteration, per config, iterations in turn.

    All algorithms are built first and warmed up with one iteration each; then each round trains
    every algorithm once, so a slow spell of the (shared, noisy) machine hits them all alike.
    """
    algos = {name: cfg.debugging(seed=0).build_algo() for name, cfg in configs.items()}
    try:
        for algo in algos.values():
            algo.train()  # warm-up: module build, first batch
        rates: dict[str, list[float]] = {name: [] for name in algos}
        for _ in range(iterations):
            for name, algo in algos.items():
                start = time.perf_counter()
                result = algo.train()
                seconds = time.perf_counter() - start
                rates[name].append(int(result["env_runners"]["num_env_steps_sampled"]) / seconds)
        return rates
    finally:
        for algo in algos.values():
            algo.stop()


def run(quick: bool = False) -> dict[str, Any]:
    """All measurements; ``quick`` shrinks the budget to a smoke test."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.tune.registry import register_env

    from raytrade.envs.gym_envs import PORTFOLIO_ENV_ID, make_portfolio_env
    from raytrade.models.catalog import ppo_config

    batch, envs, iterations = (512, 8, 2) if quick else (4000, 8, 10)
    register_env(PORTFOLIO_ENV_ID, make_portfolio_env)
    with tempfile.TemporaryDirectory(prefix="raytrade-bench-") as tmp:
        enriched = _enriched_env_config(_synthetic_store(Path(tmp) / "store"))
        configs = {
            "cartpole": PPOConfig().environment("CartPole-v1"),
            "portfolio": PPOConfig().environment(PORTFOLIO_ENV_ID, env_config=_portfolio_env_config()),
            "portfolio_ppo_mlp": ppo_config("ppo_mlp", _portfolio_env_config()),
            "portfolio_enriched": PPOConfig().environment(PORTFOLIO_ENV_ID, env_config=enriched),
            "portfolio_enriched_ppo_mlp": ppo_config("ppo_mlp", enriched),
        }
        settings = {k: _settings(c, batch, envs) for k, c in configs.items()}
        rates = _interleaved_throughput(settings, iterations)
    out: dict[str, Any] = {
        "config": {"N": N_ASSETS, "batch": batch, "envs_per_runner": envs, "iterations": iterations},
        # the median iteration: one iteration disturbed by the machine does not move it
        **{f"{name}_steps_per_s": float(np.median(r)) for name, r in rates.items()},
        "per_iteration_steps_per_s": rates,
    }
    out["ratio"] = out["portfolio_steps_per_s"] / out["cartpole_steps_per_s"]
    out["ratio_ppo_mlp"] = out["portfolio_ppo_mlp_steps_per_s"] / out["cartpole_steps_per_s"]
    out["ratio_enriched"] = out["portfolio_enriched_steps_per_s"] / out["cartpole_steps_per_s"]
    out["ratio_enriched_ppo_mlp"] = (
        out["portfolio_enriched_ppo_mlp_steps_per_s"] / out["cartpole_steps_per_s"]
    )
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = quick_and_json_args(__doc__, argv)
    out = on_local_ray(lambda: run(quick=args.quick))
    print_table(
        "PPO throughput incl. learning (env steps/s, one process)",
        [
            ("CartPole-v1", out["cartpole_steps_per_s"], "reference"),
            (f"PortfolioEnv N={N_ASSETS}", out["portfolio_steps_per_s"], "default PPO module"),
            (f"PortfolioEnv N={N_ASSETS}, ppo_mlp", out["portfolio_ppo_mlp_steps_per_s"], "catalog module"),
            ("ratio portfolio / cartpole", out["ratio"], ">= 0.7"),
            ("ratio ppo_mlp / cartpole", out["ratio_ppo_mlp"], "reference"),
            (
                f"PortfolioEnv N={N_ASSETS}, enriched",
                out["portfolio_enriched_steps_per_s"],
                "default PPO module",
            ),
            (
                f"PortfolioEnv N={N_ASSETS}, enriched, ppo_mlp",
                out["portfolio_enriched_ppo_mlp_steps_per_s"],
                "catalog module",
            ),
            ("ratio enriched / cartpole", out["ratio_enriched"], ">= 0.6"),
            ("ratio enriched ppo_mlp / cartpole", out["ratio_enriched_ppo_mlp"], "reference"),
        ],
    )
    write_report(args.json, "ppo_throughput", out)
    return out


if __name__ == "__main__":
    main()
