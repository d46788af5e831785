"""What routing learns from outcomes. Pure: statistics in, numbers out.

Confidence is how sure the brain is of a choice: 0.7 with no history, moving toward a
target set by the observed success rate as evidence accumulates
(evidence = 1 − e^(−n/5): 0.86 after 10 outcomes, ≈1 after 30). A success rate of 95 %
or more targets 1.0, 50 % targets 0.7, and lower rates pull confidence below 0.7.
So 10 straight successes give ≈ 0.96 and 100 outcomes at 95 % give ≈ 1.0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_CONFIDENCE = 0.7
EVIDENCE_SCALE = 5.0
# Success rate of a service we know nothing about: optimistic enough to be tried.
PRIOR_SUCCESS_RATE = 0.7
PRIOR_WEIGHT = 2.0
# Weight of the newest latency sample in the moving average (about the last ten tries).
EWMA_ALPHA = 0.2
# A failure counts as at least this slow: an error answered fast (a 429, a 500) must
# never look like a fast success to a latency-aware balancer.
ERROR_PENALTY_MS = 1000.0
ERROR_PENALTY_FACTOR = 5.0


def ewma_sample(success: bool, execution_ms: float) -> float:
    """The latency a try adds to the moving average: its own, or a penalty if it failed."""
    if success:
        return execution_ms
    return max(ERROR_PENALTY_MS, execution_ms * ERROR_PENALTY_FACTOR)


def evidence(n: int) -> float:
    return 1.0 - math.exp(-max(0, n) / EVIDENCE_SCALE)


def confidence(successes: int, total: int) -> float:
    if total <= 0:
        return DEFAULT_CONFIDENCE
    rate = successes / total
    if rate >= 0.5:
        target = DEFAULT_CONFIDENCE + (1.0 - DEFAULT_CONFIDENCE) * min(1.0, (rate - 0.5) / 0.45)
    else:
        target = DEFAULT_CONFIDENCE - 0.4 * (0.5 - rate) / 0.5
    return round(DEFAULT_CONFIDENCE + (target - DEFAULT_CONFIDENCE) * evidence(total), 4)


@dataclass(frozen=True)
class ServiceStats:
    """Learned outcome statistics of one service for one task type."""

    service: str
    count: int = 0
    successes: int = 0
    avg_ms: float | None = None
    ewma_ms: float | None = None

    @property
    def success_rate(self) -> float | None:
        return self.successes / self.count if self.count else None

    def smoothed_rate(self) -> float:
        """Success rate pulled toward the prior while evidence is thin."""
        return (self.successes + PRIOR_SUCCESS_RATE * PRIOR_WEIGHT) / (self.count + PRIOR_WEIGHT)


def recent_ms(stats: ServiceStats) -> float | None:
    """The latency the balancers believe: the moving average, else the lifetime one."""
    return stats.ewma_ms or stats.avg_ms


def best_scores(stats: list[ServiceStats]) -> dict[str, float]:
    """score = smoothed success rate × speed, where speed = fastest recent latency / own
    (1.0 for the fastest, and for services without timings yet)."""
    timed = [recent_ms(s) for s in stats if recent_ms(s)]
    fastest = min(timed) if timed else None
    scores = {}
    for s in stats:
        own = recent_ms(s)
        speed = (fastest / own) if (fastest and own) else 1.0
        scores[s.service] = round(s.smoothed_rate() * speed, 6)
    return scores


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile (p95 of 20 values is the 19th smallest)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]
