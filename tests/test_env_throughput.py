"""The throughput benchmark's peer comparison: a median of paired, interleaved runs."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from benchmarks import env_throughput
from benchmarks.env_throughput import paired_median_ratio


def test_the_ratio_is_the_median_of_the_paired_ratios_not_the_ratio_of_medians() -> None:
    # pairs 10/2, 20/10, 30/5 -> 5, 2, 6: median 5 (the medians' ratio would be 20/5 = 4)
    assert paired_median_ratio([10.0, 20.0, 30.0], [2.0, 10.0, 5.0]) == 5.0


def test_unpaired_runs_are_refused_naming_the_counts() -> None:
    with pytest.raises(ValueError, match="got 2 and 1"):
        paired_median_ratio([1.0, 2.0], [1.0])


def test_the_two_sides_run_interleaved_and_every_pair_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def runner(
        name: str, rates: list[tuple[float, float]]
    ) -> Callable[[int, int, int], Callable[[], tuple[float, float]]]:
        def make(b: int, n: int, n_steps: int) -> Callable[[], tuple[float, float]]:
            it = iter(rates)

            def measure() -> tuple[float, float]:
                calls.append(name)
                return next(it)

            return measure

        return make

    monkeypatch.setattr(
        env_throughput, "_core_runner", runner("core", [(10.0, 40.0), (20.0, 30.0), (30.0, 60.0)])
    )
    monkeypatch.setattr(
        env_throughput, "_vectorbt_runner", runner("vbt", [(2.0, 8.0), (10.0, 10.0), (5.0, 20.0)])
    )
    out = env_throughput._paired(4, 2, 10, repeats=3)
    assert calls == ["core", "vbt"] * 3
    assert out["core_vs_vectorbt_pairs"] == [5.0, 2.0, 6.0] and out["core_vs_vectorbt"] == 5.0
    assert out["core_vs_vectorbt_cpu_pairs"] == [5.0, 3.0, 3.0] and out["core_vs_vectorbt_cpu"] == 3.0
    assert (out["core_asset_steps_per_s"], out["vectorbt_cpu_asset_steps_per_s"]) == (20.0, 10.0)
