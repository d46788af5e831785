"""Score a worker run: reliability, performance, data quality, resource → overall.

Pure: no Django. Each component is 0–100; the overall score is weighted by the
worker's category (seed table; reporting, absent from the seed, is weighted like
the data-heavy categories because a report is only as good as its inputs).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# (reliability, performance, data_quality, resource)
WEIGHTS: dict[str, tuple[float, float, float, float]] = {
    "generation": (0.40, 0.30, 0.20, 0.10),
    "collection": (0.30, 0.20, 0.40, 0.10),
    "intelligence": (0.30, 0.20, 0.40, 0.10),
    "aggregation": (0.40, 0.30, 0.20, 0.10),
    "maintenance": (0.50, 0.20, 0.20, 0.10),
    "reporting": (0.30, 0.20, 0.40, 0.10),
}


@dataclass(frozen=True)
class RunOutcome:
    category: str
    success: bool
    duration_s: float
    expected_duration_s: float | None = None
    timeout_s: float | None = None
    timed_out: bool = False
    metrics: Mapping[str, Any] = field(default_factory=dict)
    memory_percent: float | None = None


@dataclass(frozen=True)
class Score:
    reliability: float
    performance: float
    data_quality: float
    resource: float
    overall: float
    recommendations: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "reliability_score": self.reliability,
            "performance_score": self.performance,
            "data_quality_score": self.data_quality,
            "resource_score": self.resource,
            "overall_score": self.overall,
        }


def _num(metrics: Mapping[str, Any], key: str, default: float = 0.0) -> float:
    value = metrics.get(key, default)
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list | tuple):
        return float(len(value))
    return default


def _clamp(value: float) -> float:
    return round(max(0.0, min(100.0, value)), 1)


def failed_fraction(metrics: Mapping[str, Any]) -> float:
    total = _num(metrics, "items_total")
    failed = _num(metrics, "items_failed")
    return failed / total if total > 0 else 0.0


def reliability(outcome: RunOutcome) -> float:
    """Completed without errors: 100; a batch with failed items loses their share."""
    if not outcome.success or outcome.timed_out:
        return 0.0
    return _clamp(100.0 * (1.0 - failed_fraction(outcome.metrics)))


def performance(outcome: RunOutcome) -> float:
    """100 up to the expected duration, 50 at twice it, 0 at four times; 0 on timeout.

    Without an expected duration, the timeout stands in: 100 below 80 % of it.
    """
    if outcome.timed_out:
        return 0.0
    expected = outcome.expected_duration_s
    if not expected:
        if not outcome.timeout_s:
            return 100.0
        expected = 0.8 * outcome.timeout_s
    ratio = outcome.duration_s / expected
    if ratio <= 1:
        return 100.0
    if ratio <= 2:
        return _clamp(100.0 - 50.0 * (ratio - 1))
    return _clamp(50.0 - 25.0 * (ratio - 2))


def data_quality(outcome: RunOutcome) -> float:
    """From what the run reported about its output.

    Recognised metrics: ``data_valid`` (False → 0), ``corrupt_items``, ``items_total`` /
    ``items_failed``, ``validation_errors`` (−10 each, at most −50),
    ``validation_warnings`` (−5 each, at most −30), ``cache_misses`` (−20).
    A failed run produced no usable output: 0.
    """
    m = outcome.metrics
    if not outcome.success or outcome.timed_out:
        return 0.0
    if m.get("data_valid") is False or _num(m, "corrupt_items") > 0:
        return 0.0
    score = 100.0 * (1.0 - failed_fraction(m))
    score -= min(50.0, 10.0 * _num(m, "validation_errors"))
    score -= min(30.0, 5.0 * _num(m, "validation_warnings"))
    if _num(m, "cache_misses") > 0:
        score -= 20.0
    return _clamp(score)


def resource(outcome: RunOutcome) -> float:
    """Memory in use on the machine during the run: 100 up to 70 %, 50 at 90 %, 0 at 100 %.

    A run may also report ``rss_mb`` against its own ``memory_budget_mb``.
    """
    scores = [100.0]
    mem = outcome.memory_percent
    if mem is not None:
        if mem <= 70:
            scores.append(100.0)
        elif mem <= 90:
            scores.append(100.0 - 2.5 * (mem - 70))
        else:
            scores.append(50.0 - 5.0 * (mem - 90))
    rss, budget = _num(outcome.metrics, "rss_mb"), _num(outcome.metrics, "memory_budget_mb")
    if budget > 0 and rss > 0:
        scores.append(100.0 if rss <= budget else 100.0 * budget / rss)
    return _clamp(min(scores))


def overall(category: str, components: Iterable[float]) -> float:
    weights = WEIGHTS.get(category, WEIGHTS["maintenance"])
    return _clamp(sum(w * c for w, c in zip(weights, components, strict=True)))


def recommendations(outcome: RunOutcome, rel: float, perf: float, dq: float, res: float) -> list[str]:
    out: list[str] = []
    if outcome.timed_out:
        out.append("Run timed out: raise the timeout or make the target faster.")
    elif rel < 100:
        out.append("Run had errors: check the run's error and failed items.")
    if not outcome.timed_out and perf < 50:
        out.append("Run took more than twice the expected duration: investigate slowness or adjust the expectation.")
    if outcome.success and dq < 70:
        out.append("Output quality is low: inspect validation errors, failed items and cache misses.")
    if res < 50:
        out.append("Memory pressure during the run: check resources on the node.")
    return out


def score(outcome: RunOutcome) -> Score:
    rel, perf, dq, res = reliability(outcome), performance(outcome), data_quality(outcome), resource(outcome)
    return Score(
        rel,
        perf,
        dq,
        res,
        overall(outcome.category, (rel, perf, dq, res)),
        recommendations(outcome, rel, perf, dq, res),
    )


def rollup(scores: Iterable[Mapping[str, float]]) -> dict[str, float | int]:
    """Averages of a period's run scores (hourly and daily reports)."""
    rows = list(scores)
    keys = ("reliability_score", "performance_score", "data_quality_score", "resource_score", "overall_score")
    if not rows:
        return {"runs": 0, **dict.fromkeys(keys, 0.0)}
    return {"runs": len(rows), **{k: round(sum(float(r[k]) for r in rows) / len(rows), 1) for k in keys}}
