"""Inline SVG line charts, computed in plain Python (no Django, no ORM).

The console draws its charts on the server so a page is complete without
JavaScript and a live refresh is just new HTML. A chart is a list of numbers (None
for a gap, e.g. a failed check without a response time) scaled into a fixed
viewBox; the template turns the result into ``<path>`` elements.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from orchestration.loop.health_score import status_for

WIDTH = 600
HEIGHT = 120
PAD = 4


@dataclass(frozen=True)
class Band:
    """A horizontal zone of the chart (e.g. the "critical" band below 50)."""

    y: float
    height: float
    css: str


@dataclass(frozen=True)
class Chart:
    line: str  # SVG path data of the line ("" when there is nothing to draw)
    area: str  # the same line closed down to the baseline, for a soft fill
    points: int  # how many values were drawn
    low: float | None
    high: float | None
    last: float | None
    width: int = WIDTH
    height: int = HEIGHT
    bands: list[Band] = field(default_factory=list)
    markers: list[tuple[float, float]] = field(default_factory=list)  # (x, y) of failed points

    @property
    def empty(self) -> bool:
        return self.points == 0


def _fmt(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def line_chart(
    values: Sequence[float | None],
    *,
    floor: float | None = None,
    ceiling: float | None = None,
    width: int = WIDTH,
    height: int = HEIGHT,
    bands: Sequence[tuple[float, float, str]] = (),
    failures: Sequence[bool] = (),
) -> Chart:
    """Scale ``values`` (oldest first) into a ``width`` × ``height`` box.

    ``floor``/``ceiling`` fix the y range (a health score is always 0–100); without
    them the range is the data's own, so a flat series still draws a visible line.
    ``bands`` are ``(from, to, css)`` value ranges shaded behind the line.
    ``failures[i]`` marks point ``i`` with a red dot at the baseline.
    """
    present = [v for v in values if v is not None]
    low = min(present) if present else None
    high = max(present) if present else None
    lo = floor if floor is not None else (low if low is not None else 0.0)
    hi = ceiling if ceiling is not None else (high if high is not None else 1.0)
    if hi <= lo:
        hi = lo + 1.0
    inner_h = height - 2 * PAD
    count = len(values)
    step = (width - 2 * PAD) / (count - 1) if count > 1 else 0.0

    def y_of(value: float) -> float:
        clamped = min(max(value, lo), hi)
        return PAD + inner_h * (1 - (clamped - lo) / (hi - lo))

    def x_of(index: int) -> float:
        return PAD + step * index if count > 1 else width / 2

    segments: list[list[tuple[float, float]]] = [[]]
    for index, value in enumerate(values):
        if value is None:
            if segments[-1]:
                segments.append([])
            continue
        segments[-1].append((x_of(index), y_of(value)))
    segments = [s for s in segments if s]
    line_parts = []
    area_parts = []
    base = height - PAD
    for seg in segments:
        if len(seg) == 1:  # a lone point still shows: a short flat tick
            (x, y) = seg[0]
            seg = [(max(PAD, x - 2), y), (min(width - PAD, x + 2), y)]
        line_parts.append("M" + " L".join(f"{_fmt(x)} {_fmt(y)}" for x, y in seg))
        area_parts.append(
            f"M{_fmt(seg[0][0])} {_fmt(base)} L"
            + " L".join(f"{_fmt(x)} {_fmt(y)}" for x, y in seg)
            + f" L{_fmt(seg[-1][0])} {_fmt(base)} Z"
        )
    drawn_bands = []
    for start, end, css in bands:
        top, bottom = y_of(max(start, end)), y_of(min(start, end))
        drawn_bands.append(Band(y=round(top, 1), height=round(bottom - top, 1), css=css))
    markers = [(round(x_of(i), 1), round(base, 1)) for i, failed in enumerate(failures) if failed and i < count]
    return Chart(
        line=" ".join(line_parts),
        area=" ".join(area_parts),
        points=len(present),
        low=low,
        high=high,
        last=present[-1] if present else None,
        width=width,
        height=height,
        bands=drawn_bands,
        markers=markers,
    )


def health_status(score: float | None) -> str:
    """The loop's own thresholds (healthy ≥ 80, degraded 50–79, critical < 50)."""
    return "unknown" if score is None else status_for(int(score))
