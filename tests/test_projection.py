"""Constraint projection: exact against a closed form, a QP, a KKT certificate and a bisection."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import scipy.optimize as so
import torch

from raytrade.envs.projection import (
    _project_box_l1_full,
    _threshold,
    project_box_l1,
    project_box_l1_torch,
    project_weights,
    project_weights_torch,
)


def _random_problem(rng: np.random.Generator, n: int) -> dict[str, Any]:
    v = rng.normal(0, 1, n) * rng.choice([0.1, 1.0, 3.0])
    upper = rng.uniform(0, 1.5, n) * (rng.random(n) > 0.2)
    lower = -rng.uniform(0, 1.5, n) * (rng.random(n) > 0.3)
    return {
        "v": v,
        "lower": lower,
        "upper": upper,
        "gross_cap": float(rng.uniform(0, 3)),
        "group": rng.random(n) < 0.5,
        "group_cap": float(rng.uniform(0, 1.5)),
    }


def _objective(w: np.ndarray, v: np.ndarray) -> float:
    return float(((w - v) ** 2).sum())


def _slsqp(p: dict[str, Any]) -> tuple[np.ndarray, float]:
    """The QP with split parts w = p - q, p, q >= 0 (smooth, so SLSQP applies)."""
    v, g = p["v"], p["group"].astype(float)
    n = v.shape[0]

    def obj(x: np.ndarray) -> float:
        d = x[:n] - x[n:] - v
        return float(d @ d)

    def jac(x: np.ndarray) -> np.ndarray:
        d = 2 * (x[:n] - x[n:] - v)
        return np.concatenate([d, -d])

    cons = [
        {"type": "ineq", "fun": lambda x: p["gross_cap"] - x.sum(), "jac": lambda x: -np.ones(2 * n)},
        {
            "type": "ineq",
            "fun": lambda x: p["group_cap"] - (x[:n] * g).sum() - (x[n:] * g).sum(),
            "jac": lambda x: -np.concatenate([g, g]),
        },
    ]
    bounds = [(0, u) for u in p["upper"]] + [(0, -lo) for lo in p["lower"]]
    res = so.minimize(
        obj,
        np.zeros(2 * n),
        jac=jac,
        bounds=bounds,
        constraints=cons,
        method="SLSQP",
        options={"ftol": 1e-16, "maxiter": 2000},
    )
    return res.x[:n] - res.x[n:], float(res.fun)


def _polish_qp(p: dict[str, Any], w_qp: np.ndarray, tol: float = 1e-6) -> np.ndarray:
    """Active-set polish of the QP solution: fix the elements SLSQP left at 0 or at a bound, and
    solve the KKT equations of the active L1 constraints exactly for the others (a 2 x 2 system)."""
    v, lo, hi, g = p["v"], p["lower"], p["upper"], p["group"].astype(float)
    fixed = np.where(np.abs(w_qp) < tol, 0.0, np.nan)
    fixed = np.where(np.abs(w_qp - hi) < tol, hi, fixed)
    fixed = np.where(np.abs(w_qp - lo) < tol, lo, fixed)
    free = np.isnan(fixed)
    s = np.sign(v)
    rows, rhs = [], []
    lam_on = abs(np.abs(w_qp).sum() - p["gross_cap"]) < tol
    mu_on = abs((np.abs(w_qp) * g).sum() - p["group_cap"]) < tol
    # |w_i| = |v_i| - lam - mu g_i on free elements; active constraints hold with equality
    for on, weight, cap in ((lam_on, np.ones_like(v), p["gross_cap"]), (mu_on, g, p["group_cap"])):
        if on:
            rows.append([-(weight * free).sum(), -(weight * free * g).sum()])
            rhs.append(
                cap - (weight * np.abs(np.nan_to_num(fixed))).sum() - (weight * free * np.abs(v)).sum()
            )
    lam = mu = 0.0
    if rows:
        a, b = np.array(rows), np.array(rhs)
        cols = [i for i, on in enumerate((lam_on, mu_on)) if on]
        sol = np.linalg.lstsq(a[:, cols], b, rcond=None)[0]
        lam = float(sol[cols.index(0)]) if lam_on else 0.0
        mu = float(sol[cols.index(1)]) if mu_on else 0.0
    return np.where(free, s * (np.abs(v) - lam - mu * g), np.nan_to_num(fixed))


def _bisection_reference(p: dict[str, Any]) -> np.ndarray:
    """Independent solver: nested bisection on the two dual thresholds (200 halvings each)."""
    v, lo, hi, g = p["v"], p["lower"], p["upper"], p["group"]

    def prox(thr: np.ndarray) -> np.ndarray:
        return np.clip(np.sign(v) * np.maximum(np.abs(v) - thr, 0), lo, hi)

    def search(f: Callable[[float], float], budget: float) -> float:  # smallest t >= 0 with f(t) <= budget
        if f(0.0) <= budget:
            return 0.0
        a, b = 0.0, float(np.abs(v).max()) + 1.0
        for _ in range(200):
            m = 0.5 * (a + b)
            a, b = (a, m) if f(m) <= budget else (m, b)
        return b

    tau_g = search(lambda t: float(np.abs(prox(np.where(g, t, np.inf)))[g].sum()), p["group_cap"])
    floor = np.where(g, tau_g, 0.0)
    tau = search(lambda t: float(np.abs(prox(np.maximum(t, floor))).sum()), p["gross_cap"])
    return prox(np.maximum(tau, floor))


def _solve(p: dict[str, Any]) -> np.ndarray:
    return project_box_l1(p["v"], p["lower"], p["upper"], p["gross_cap"], p["group"], p["group_cap"])


def test_closed_form_example() -> None:
    # a = [3, 1, 0.5], cap 1, budget 2: 1 + (1 - tau) + (0.5 - tau) = 2 -> tau = 0.25
    w = project_weights(np.array([3.0, -1.0, 0.5]), gross_cap=2.0, per_asset_cap=1.0)
    assert np.array_equal(w, [1.0, -0.75, 0.25])


def test_feasible_input_is_returned_unchanged() -> None:
    v = np.array([0.3, -0.2, 0.1])
    assert np.array_equal(project_weights(v, gross_cap=2.0, per_asset_cap=1.0), v)


def test_mask_and_long_only() -> None:
    w = project_weights(
        np.array([0.5, -0.5, 0.7]),
        gross_cap=2.0,
        per_asset_cap=1.0,
        long_only=True,
        mask=np.array([True, True, False]),
    )
    assert np.array_equal(w, [0.5, 0.0, 0.0])


def test_matches_scipy_qp() -> None:
    rng = np.random.default_rng(0)
    for _ in range(60):
        p = _random_problem(rng, int(rng.integers(1, 10)))
        w = _solve(p)
        w_qp, f_qp = _slsqp(p)
        # SLSQP stops somewhere near the optimum (how near depends on the SciPy release) and may be
        # infeasible by ~1e-13: ours must be at least as good.
        gap = f_qp - _objective(w, p["v"])
        assert gap >= -1e-10
        # The objective is 2-strongly convex and w projects v onto a convex set C, so every x in C has
        # |x - w|^2 <= f(x) - f(w): SLSQP's own objective gap bounds its distance from our solution,
        # whatever its release (1e-10 covers its ~1e-13 infeasibility times a gradient of at most ~10).
        assert float(((w - w_qp) ** 2).sum()) <= gap + 1e-10
        # and equal to 1e-8 to the QP's solution polished on its own active set (read to within the
        # distance just bounded)
        active_tol = max(1e-6, 10 * np.sqrt(max(gap, 0.0)))
        assert np.abs(w - _polish_qp(p, w_qp, tol=active_tol)).max() < 1e-8


def test_matches_tight_bisection_reference() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        p = _random_problem(rng, int(rng.integers(1, 16)))
        assert np.abs(_solve(p) - _bisection_reference(p)).max() < 1e-10


def test_kkt_certificate() -> None:
    rng = np.random.default_rng(2)
    for _ in range(300):
        p = _random_problem(rng, int(rng.integers(1, 20)))
        v, lo, hi, g = p["v"], p["lower"], p["upper"], p["group"]
        w, tau, floor = _project_box_l1_full(v, lo, hi, p["gross_cap"], g, p["group_cap"])
        tau_f = float(tau)
        thr = np.maximum(tau_f, floor)
        mu = np.where(g, thr - tau_f, 0.0)
        # primal feasibility
        assert np.all(w >= lo - 1e-15) and np.all(w <= hi + 1e-15)
        assert np.abs(w).sum() <= p["gross_cap"] + 1e-10
        assert np.abs(w[g]).sum() <= p["group_cap"] + 1e-10
        # stationarity: w is the box-clipped soft threshold with multipliers tau, mu >= 0
        assert tau_f >= 0 and np.all(mu >= 0)
        assert np.abs(w - np.clip(np.sign(v) * np.maximum(np.abs(v) - thr, 0), lo, hi)).max() < 1e-12
        # complementary slackness
        if tau_f > 0:
            assert abs(np.abs(w).sum() - p["gross_cap"]) < 1e-10
        if mu.max(initial=0.0) > 0:
            assert abs(np.abs(w[g]).sum() - p["group_cap"]) < 1e-10


def test_batched_equals_row_by_row() -> None:
    rng = np.random.default_rng(3)
    v = rng.normal(size=(7, 5, 12))
    caps = rng.uniform(0.1, 3, size=(7, 5))
    w = project_box_l1(v, -0.4, 0.6, caps)
    for i in range(7):
        for j in range(5):
            assert np.array_equal(w[i, j], project_box_l1(v[i, j], -0.4, 0.6, caps[i, j]))


def test_numpy_and_torch_agree() -> None:
    rng = np.random.default_rng(4)
    v = rng.normal(size=(64, 16)) * 2
    mask = rng.random((64, 16)) > 0.2
    group = rng.random(16) < 0.3
    caps = rng.uniform(0, 3, 64)
    for long_only in (False, True):
        w_np = project_weights(v, caps, 0.5, long_only, mask, group, 0.7)
        w_t = project_weights_torch(
            torch.tensor(v), torch.tensor(caps), 0.5, long_only, torch.tensor(mask), torch.tensor(group), 0.7
        )
        assert np.abs(w_t.numpy() - w_np).max() < 1e-12


def test_torch_gradient_is_exact_jacobian() -> None:
    rng = np.random.default_rng(5)
    lo = torch.tensor(-rng.uniform(0.2, 1.0, 8))
    hi = torch.tensor(rng.uniform(0.2, 1.0, 8))
    group = torch.tensor(rng.random(8) < 0.4)
    for _ in range(5):
        v = torch.tensor(rng.normal(size=(3, 8)) * 1.5, requires_grad=True)
        assert torch.autograd.gradcheck(
            lambda x: project_box_l1_torch(x, lo, hi, 1.5, group, 0.6), (v,), eps=1e-7, atol=1e-6
        )


def test_torch_gradients_finite_float32() -> None:
    v = torch.randn(32, 10, generator=torch.Generator().manual_seed(0), requires_grad=True)
    w = project_weights_torch(v * 3, 1.0, 0.3, mask=torch.rand(32, 10, generator=torch.Generator()) > 0.1)
    (w * torch.linspace(-1, 1, 10)).sum().backward()
    assert v.grad is not None and torch.isfinite(v.grad).all()


@pytest.mark.parametrize("cap", [0.0, 1e-12])
def test_tiny_budget_gives_zero_or_tiny(cap: float) -> None:
    # exact up to one rounding of the inputs' scale (|v| <= 2)
    w = project_weights(np.array([[1.0, -2.0, 0.5]]), gross_cap=cap, per_asset_cap=1.0)
    assert np.abs(w).sum() <= cap + 4e-16


def test_ties_and_a_wide_universe_match_the_bisection_reference() -> None:
    # Repeated magnitudes and caps put several breakpoints on the same value; N = 64 is wider than
    # the simulator's universes. Both must still give the exact projection.
    rng = np.random.default_rng(11)
    for _ in range(100):
        n = int(rng.choice([3, 32, 64]))
        p = _random_problem(rng, n)
        p["v"] = rng.choice([-1.5, -0.5, 0.0, 0.5, 1.5], size=n) * rng.choice([0.3, 1.0])
        p["upper"] = np.where(rng.random(n) < 0.5, 0.5, p["upper"])
        p["lower"] = np.where(rng.random(n) < 0.5, -0.5, p["lower"])
        assert np.abs(_solve(p) - _bisection_reference(p)).max() < 1e-10


def test_two_dimensional_group_membership_equals_one_row_at_a_time() -> None:
    rng = np.random.default_rng(12)
    v = rng.normal(size=(6, 10)) * 2
    group = rng.random((6, 10)) < 0.4
    w = project_box_l1(v, -0.8, 0.9, 1.7, group, 0.6)
    for i in range(6):
        assert np.array_equal(w[i], project_box_l1(v[i], -0.8, 0.9, 1.7, group[i], 0.6))


def _threshold_problem(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    """``a = |v|``, caps, floors and a group mask with ties, zero caps and floors above ``a``."""
    a = np.abs(rng.normal(0, 1, n)) * rng.choice([0.1, 1.0, 3.0])
    if rng.random() < 0.3:  # repeated magnitudes: breakpoints that coincide
        a = rng.choice([0.0, 0.25, 0.5, 1.5], size=n)
    cap = rng.uniform(0, 1.5, n) * (rng.random(n) > 0.2)
    floor = np.where(rng.random(n) < 0.3, rng.uniform(0, 1, n), 0.0)
    return a, cap, floor, rng.random(n) < 0.5


def test_the_fast_threshold_search_equals_the_selection_search_bit_for_bit() -> None:
    # The Newton steps and the bracket rounds only choose where to look; the answer is the line
    # through the same two breakpoints with the same exact sums as the plain selection search (no
    # Newton steps, no rounds: the search before them), so it must be identical, not merely close.
    # Each path runs alone: rounds only (2 N + 1 rounds always close the bracket), selection only,
    # and the default hand-over between them.
    rng = np.random.default_rng(13)
    pts = np.empty(128)
    for _ in range(400):
        n = int(rng.choice([1, 4, 32, 64]))
        a, cap, floor, mask = _threshold_problem(rng, n)
        budget = float(rng.uniform(0, 2 * max(cap.sum(), 1e-3)))
        for use_mask in (False, True):
            args = (a, cap, budget, floor, mask, use_mask, pts)
            selection = _threshold(*args, 0, 0)
            for newton_steps, rounds in ((8, 2 * n + 1), (0, 2 * n + 1), (0, 1), (8, 1), (8, 4)):
                assert _threshold(*args, newton_steps, rounds) == selection, (newton_steps, rounds)
