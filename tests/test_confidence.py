"""The served confidence means what the serving contract says (``serve.decide`` module doc)."""

from __future__ import annotations

from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import torch

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
