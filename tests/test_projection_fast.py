"""The torch projection's no-grad path (the compiled numpy projection) against its autograd path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raytrade.envs.projection import _project_box_l1_autograd, project_box_l1_torch, project_weights_torch


def _problem(rng: np.random.Generator, rows: int, n: int, scale: float) -> tuple[torch.Tensor, ...]:
    """Scores, a box with masked (``[0, 0]``) and long-only (``[0, u]``) assets, per-row gross caps
    and a group: at ``scale`` 5 most scores hit their box, at 0.05 few constraints bind."""
    v = torch.tensor(rng.normal(size=(rows, n)) * scale)
    upper = torch.tensor(rng.uniform(0.1, 1.5, (rows, n)) * (rng.random((rows, n)) > 0.2))
    lower = torch.tensor(-rng.uniform(0.1, 1.5, (rows, n)) * (rng.random((rows, n)) > 0.3)) * (upper > 0)
    caps = torch.tensor(rng.uniform(0.0, 3.0, rows))
    group = torch.tensor(rng.random(n) < 0.4)
    return v, lower, upper, caps, group


CASES = [(n, scale) for n in (1, 2, 32, 64) for scale in (0.05, 1.0, 5.0)]


@pytest.mark.parametrize(("n", "scale"), CASES)
def test_no_grad_path_is_the_autograd_projection_in_float64(n: int, scale: float) -> None:
    # both are exact algorithms in float64: they differ by the order of a handful of float64 sums
    rng = np.random.default_rng(n * 10 + int(scale * 100))
    v, lower, upper, caps, group = _problem(rng, 16, n, scale)
    for g, gc in ((None, None), (group, 0.7)):
        with torch.no_grad():
            fast = project_box_l1_torch(v, lower, upper, caps, g, gc)
            ref = _project_box_l1_autograd(v, lower, upper, caps, g, gc)
        assert fast.dtype == torch.float64
        torch.testing.assert_close(fast, ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize(("n", "scale"), CASES)
def test_no_grad_path_in_float32_is_the_float64_projection_rounded_once(n: int, scale: float) -> None:
    rng = np.random.default_rng(n * 10 + int(scale * 100) + 1)
    v, lower, upper, caps, _ = _problem(rng, 16, n, scale)
    v32 = v.float()
    with torch.no_grad():
        fast = project_box_l1_torch(v32, lower.float(), upper.float(), caps.float())
        exact = _project_box_l1_autograd(
            v32.double(), lower.float().double(), upper.float().double(), caps.float().double()
        )
        old = _project_box_l1_autograd(v32, lower.float(), upper.float(), caps.float())
    assert fast.dtype == torch.float32
    # |w| <= 1.5: one float32 ulp is at most 1.19e-7, and a float64 value 1e-12 away rounds to
    # the same float32 or its neighbour
    torch.testing.assert_close(fast, exact.float(), atol=1.2e-7, rtol=0)
    # the autograd path runs a float32 cumsum over 2N breakpoints: to first order its sums (and so
    # its threshold) are off by up to 2N float32 epsilons (measured here: 1.25e-6 at N = 64)
    torch.testing.assert_close(fast, old, atol=2 * n * torch.finfo(torch.float32).eps, rtol=0)


def test_all_zero_scores_project_to_exact_zeros() -> None:
    with torch.no_grad():
        w = project_weights_torch(torch.zeros(3, 8), 1.0, 0.5, mask=torch.rand(3, 8) > 0.5)
    assert torch.equal(w, torch.zeros(3, 8))


def test_masked_assets_get_exact_zeros_and_caps_hold() -> None:
    v = torch.tensor([[0.9, -0.8, 0.7, 0.6], [0.9, 0.9, 0.9, 0.9]])
    mask = torch.tensor([[True, False, True, True], [True, True, True, True]])
    with torch.inference_mode():
        w = project_weights_torch(v, 1.0, 0.5, mask=mask)
    # row 0: min(0.5, 0.9 - t) + min(0.5, 0.7 - t) + min(0.5, 0.6 - t) = 1 at t = 0.4 (the first
    # asset still at its cap); row 1: four capped 0.5s shrink alike to 1 / 4
    torch.testing.assert_close(w[0], torch.tensor([0.5, 0.0, 0.3, 0.2]), atol=1e-7, rtol=0)
    torch.testing.assert_close(w[1], torch.full((4,), 0.25), atol=1e-7, rtol=0)


def test_a_row_with_a_non_finite_score_comes_back_all_nan() -> None:
    v = torch.tensor([[float("nan"), 0.5, 0.2], [0.1, 0.2, 0.3], [float("inf"), 0.0, 0.0]])
    with torch.no_grad():
        w = project_weights_torch(v, 1.0, 1.0)
    assert torch.isnan(w[0]).all() and torch.isnan(w[2]).all()
    torch.testing.assert_close(w[1], torch.tensor([0.1, 0.2, 0.3]), atol=0, rtol=0)  # within the cap


def test_with_a_gradient_wanted_the_autograd_path_answers_bit_for_bit() -> None:
    rng = np.random.default_rng(7)
    v, lower, upper, caps, group = _problem(rng, 8, 32, 1.0)
    x1, x2 = v.clone().requires_grad_(True), v.clone().requires_grad_(True)
    w1 = project_box_l1_torch(x1, lower, upper, caps, group, 0.7)
    w2 = _project_box_l1_autograd(x2, lower, upper, caps, group, 0.7)
    weights = torch.linspace(-1, 1, 32, dtype=v.dtype)
    (w1 * weights).sum().backward()
    (w2 * weights).sum().backward()
    assert torch.equal(w1, w2)
    assert x1.grad is not None and x2.grad is not None and torch.equal(x1.grad, x2.grad)
