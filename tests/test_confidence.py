"""The served confidence means what the serving contract says (``serve.decide`` module doc)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

from raytrade.envs.gym_envs import GATE_ACTION_FIELDS, GATE_MODES
from raytrade.serve.decide import action_confidence


def test_gaussian_confidence_is_twice_the_sign_agreement_probability_minus_one() -> None:
    mean = np.array([[0.0, 0.5, 1.0, -1.0, 3.0]])
    std = np.array([[1.0, 1.0, 1.0, 1.0, 1.0]])
    module = SimpleNamespace(action_space=gym.spaces.Box(-1.0, 1.0, (5,)))
    inputs = torch.tensor(np.concatenate([mean, np.log(std)], axis=-1))
    served = action_confidence(module, inputs)[0]
    draws = np.random.default_rng(0).normal(mean, std, size=(200_000, 5))
    agree = (np.sign(draws) == np.sign(mean)).mean(axis=0)  # p: a sample has the deterministic sign
    np.testing.assert_allclose(served[1:], 2 * agree[1:] - 1, atol=0.005)
    assert served[0] == 0.0  # a coin flip
    np.testing.assert_allclose(served[1:3], [0.383, 0.683], atol=0.001)  # p = 0.69, 0.84


def _torch_confidence(module: SimpleNamespace, dist_inputs: torch.Tensor) -> np.ndarray:
    """The confidence as torch computed it before it moved to numpy (the reference)."""
    inputs = dist_inputs.detach().double()
    if isinstance(module.action_space, gym.spaces.Box):
        mean, log_std = inputs.chunk(2, dim=-1)
        return torch.erf(mean.abs() / (log_std.exp() * math.sqrt(2.0))).numpy()
    per_symbol = inputs.reshape(inputs.shape[0], len(module.action_space.nvec) // GATE_ACTION_FIELDS, -1)
    return torch.softmax(per_symbol[..., : len(GATE_MODES)], dim=-1).max(dim=-1).values.numpy()


def _hostile(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """float32 distribution inputs: wide normals, tiny and huge values, and some NaN and +-inf."""
    x = rng.standard_normal(shape) * rng.choice([1e-6, 0.1, 1.0, 10.0, 1e3], size=shape)
    special = rng.choice([np.nan, np.inf, -np.inf, 0.0, 88.0, -104.0], size=shape)
    return np.where(rng.random(shape) < 0.05, special, x).astype(np.float32)


@pytest.mark.parametrize("space", ["box", "gate"])
def test_numpy_confidence_equals_the_torch_one(space: str) -> None:
    """The confidence is computed in numpy (no torch per request): on 400 random batches with NaN,
    inf, tiny and huge inputs, it equals torch's float64 maths within 1e-12, NaN where torch gives
    NaN (the service then sends 0)."""
    rng = np.random.default_rng(7)
    n = 32
    if space == "box":
        module = SimpleNamespace(action_space=gym.spaces.Box(-1.0, 1.0, (n,)))
        width = 2 * n
    else:
        module = SimpleNamespace(action_space=gym.spaces.MultiDiscrete([len(GATE_MODES), 2, 3] * n))
        width = n * (len(GATE_MODES) + 2 + 3)
    for _ in range(400):
        inputs = torch.from_numpy(_hostile(rng, (int(rng.integers(1, 9)), width)))
        got, want = action_confidence(module, inputs), _torch_confidence(module, inputs)
        assert got.shape == want.shape and got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, equal_nan=True)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))


def test_the_confidence_takes_the_distribution_inputs_as_a_numpy_array() -> None:
    """No tensor needed: the service may hand the inputs over as the array it already has."""
    module = SimpleNamespace(action_space=gym.spaces.Box(-1.0, 1.0, (2,)))
    inputs = np.array([[0.0, 1.0, 0.0, 0.0]], dtype=np.float32)  # means 0 and 1, std 1
    np.testing.assert_allclose(action_confidence(module, inputs), [[0.0, math.erf(1 / math.sqrt(2))]])
