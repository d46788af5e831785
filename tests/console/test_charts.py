"""The SVG chart maths (plain Python, no database)."""

from __future__ import annotations

from orchestration.console import charts


def test_it_scales_values_into_the_box_with_a_fixed_range():
    chart = charts.line_chart([0, 50, 100], floor=0, ceiling=100, width=104, height=108)
    # x from 4 to 100, y from 104 (value 0) to 4 (value 100)
    assert chart.line == "M4 104 L52 54 L100 4"
    assert chart.area.startswith("M4 104 L4 104") and chart.area.endswith("L100 104 Z")
    assert (chart.points, chart.low, chart.high, chart.last) == (3, 0, 100, 100)


def test_values_outside_the_range_are_clamped():
    chart = charts.line_chart([-10, 150], floor=0, ceiling=100, width=104, height=108)
    assert chart.line == "M4 104 L100 4"


def test_gaps_split_the_line_and_failures_get_markers():
    chart = charts.line_chart([10, None, 30, 40], floor=0, ceiling=40, width=34, height=48, failures=[0, 1, 0, 0])
    assert chart.line.count("M") == 2  # two segments around the gap
    assert chart.markers == [(12.7, 44)]  # step (34 - 2·4) / 3 ≈ 8.67 from x = 4
    assert chart.points == 3


def test_a_flat_series_without_a_range_still_draws():
    chart = charts.line_chart([5, 5, 5])
    assert chart.line and not chart.empty
    assert chart.low == chart.high == 5


def test_a_lone_point_is_a_short_tick_and_nothing_is_empty():
    assert charts.line_chart([7]).line.count("L") == 1
    empty = charts.line_chart([])
    assert empty.empty and empty.line == "" and empty.last is None
    assert charts.line_chart([None, None]).empty


def test_bands_are_drawn_between_their_values():
    chart = charts.line_chart([1], floor=0, ceiling=100, height=108, bands=[(0, 50, "low")])
    band = chart.bands[0]
    assert (band.y, band.height, band.css) == (54.0, 50.0, "low")


def test_health_status_uses_the_loops_thresholds():
    assert [charts.health_status(s) for s in (None, 100, 80, 79, 50, 49)] == [
        "unknown", "healthy", "healthy", "degraded", "degraded", "critical",
    ]  # fmt: skip
