"""``raytrade summary``'s table: columns sized to their cells, so the live loop's microsecond timestamps
stay apart."""

from __future__ import annotations

from raytrade.replay.summary import StoreSummary, TableSummary


def test_microsecond_timestamps_stay_in_separate_columns() -> None:
    summary = StoreSummary(
        "/store",
        (
            TableSummary("bars", 1234567, 50, "2020-01-01T00:00:00+00:00", "2024-01-01T00:00:00+00:00"),
            TableSummary(
                "experience", 17, 7, "2026-12-04T03:51:51.090551+00:00", "2026-12-04T03:52:11.222553+00:00"
            ),
        ),
    )
    assert summary.render().splitlines() == [
        "replay store /store",
        "table            rows  symbols  from                              to",
        "bars        1,234,567       50  2020-01-01T00:00:00+00:00         2024-01-01T00:00:00+00:00",
        "experience         17        7  2026-12-04T03:51:51.090551+00:00  2026-12-04T03:52:11.222553+00:00",
    ]
