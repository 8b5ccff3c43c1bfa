"""The serving benchmark's verdict on the p99 ratio: read from its interval over rounds, not the point."""

import pytest

from benchmarks.serve_latency import p99_verdict


@pytest.mark.parametrize(
    ("interval", "verdict"),
    [
        ([0.95, 1.25], "met"),
        ([1.10, 1.30], "met"),  # the bound itself is within the target
        ([0.98, 1.35], "undecided"),  # a point estimate of 1.2 here is not a result
        ([1.29, 1.60], "undecided"),
        ([1.31, 1.80], "not met"),
    ],
)
def test_the_p99_ratio_is_judged_on_its_interval(interval: list[float], verdict: str) -> None:
    assert p99_verdict(interval, 1.3) == verdict
