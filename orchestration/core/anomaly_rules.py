"""The 17 anomaly rules of the fleet: code, severity, scope and detection criterion.

Pure: no Django. A rule looks at one kind of facts (a finished run, a worker's last
hour, the whole fleet) and answers:

* a dict of details — the anomaly is present;
* False — it is not (an open anomaly of this code and subject resolves);
* None — the facts cannot tell (nothing opens or resolves).

Severities follow the seed: critical alerts at once, high within 5 minutes, medium
within 15 minutes, low is only logged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Detection thresholds (seed values).
QUEUE_OVERFLOW_DEPTH = 1000
MEMORY_EXHAUSTED_PERCENT = 90.0
DISK_FULL_PERCENT = 99.0
HIGH_FAILURE_RATE = 0.10
# Below this many runs in the hour a rate says little (one crash would be 100 %).
MIN_RUNS_FOR_RATE = 3
SLOW_FACTOR = 2.0
QUOTA_LOW_PERCENT = 20.0
LOCK_CONTENTION_FAILURES = 3
ELEVATED_RETRY_RATE = 0.05
TIMEOUT_WARNING_FRACTION = 0.8

ALERT_DELAY_SECONDS = {"critical": 0, "high": 300, "medium": 900}  # low: log only


@dataclass(frozen=True)
class RunFacts:
    """A finished (or skipped) run."""

    status: str
    duration_s: float = 0.0
    expected_duration_s: float | None = None
    timeout_s: float | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    skipped_reason: str = ""
    skipped_detail: Mapping[str, Any] = field(default_factory=dict)

    @property
    def executed(self) -> bool:
        return self.status in ("succeeded", "failed", "timed_out")


@dataclass(frozen=True)
class WorkerFacts:
    """One worker over the last hour, and its data freshness."""

    runs_last_hour: int
    failures_last_hour: int
    lock_failures: int
    enabled: bool = True
    last_success_age_s: float | None = None  # None: never succeeded
    freshness_s: float | None = None
    has_cadence: bool = True


@dataclass(frozen=True)
class FleetFacts:
    queue_depth: int
    jobs_last_hour: int = 0
    retried_jobs_last_hour: int = 0
    memory_percent: float | None = None
    disk_percent: float | None = None


Check = Callable[[Any], "dict[str, Any] | bool | None"]


@dataclass(frozen=True)
class AnomalyRule:
    code: str
    severity: str
    scope: str  # run | worker | fleet
    description: str
    check: Check


def _num(metrics: Mapping[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list | tuple):
        return float(len(value))
    return None


# --- run scope --------------------------------------------------------------------
def worker_crash(f: RunFacts):
    if f.status == "crashed":
        return {"reason": "the process running this worker stopped answering"}
    return False if f.executed else None


def data_corruption(f: RunFacts):
    if not f.executed:
        return None
    corrupt = _num(f.metrics, "corrupt_items") or 0
    if f.metrics.get("data_valid") is False or corrupt > 0:
        return {"data_valid": f.metrics.get("data_valid"), "corrupt_items": corrupt}
    return False


def dependency_failure(f: RunFacts):
    if f.skipped_reason == "upstream_failed":
        return dict(f.skipped_detail)
    return False if f.executed else None


def slow_execution(f: RunFacts):
    if f.status != "succeeded" or not f.expected_duration_s:
        return None
    if f.duration_s > SLOW_FACTOR * f.expected_duration_s:
        return {"duration_s": f.duration_s, "expected_s": f.expected_duration_s}
    return False


def api_quota_low(f: RunFacts):
    remaining = _num(f.metrics, "quota_remaining_pct")
    if remaining is None:
        return None
    return {"quota_remaining_pct": remaining} if remaining < QUOTA_LOW_PERCENT else False


def partial_success(f: RunFacts):
    if f.status != "succeeded":
        return None
    total, failed = _num(f.metrics, "items_total") or 0, _num(f.metrics, "items_failed") or 0
    if total > 0 and 0 < failed < total:
        return {"items_total": total, "items_failed": failed}
    return False


def cache_miss(f: RunFacts):
    if not f.executed:
        return None
    misses = _num(f.metrics, "cache_misses") or 0
    if misses > 0 or f.metrics.get("cache_hit") is False:
        return {"cache_misses": misses}
    return False


def timeout_warning(f: RunFacts):
    if f.status != "succeeded" or not f.timeout_s:
        return None
    if f.duration_s > TIMEOUT_WARNING_FRACTION * f.timeout_s:
        return {"duration_s": f.duration_s, "timeout_s": f.timeout_s}
    return False


def run_retries(f: RunFacts):
    retries, requests = _num(f.metrics, "retries"), _num(f.metrics, "requests")
    if retries is None or not requests:
        return None
    rate = retries / requests
    return {"retries": retries, "requests": requests, "rate": round(rate, 4)} if rate > ELEVATED_RETRY_RATE else False


def skip_due_to_lock(f: RunFacts):
    if f.skipped_reason in ("lock_held", "upstream_running"):
        return {"reason": f.skipped_reason, **dict(f.skipped_detail)}
    return False if f.executed else None


def skip_due_to_freshness(f: RunFacts):
    if f.skipped_reason == "already_fresh":
        return dict(f.skipped_detail)
    return False if f.executed else None


def minor_validation_issue(f: RunFacts):
    if not f.executed:
        return None
    warnings = _num(f.metrics, "validation_warnings") or 0
    return {"validation_warnings": warnings} if warnings > 0 else False


# --- worker scope -----------------------------------------------------------------
def high_failure_rate(f: WorkerFacts):
    if f.runs_last_hour < MIN_RUNS_FOR_RATE:
        return None
    rate = f.failures_last_hour / f.runs_last_hour
    if rate > HIGH_FAILURE_RATE:
        return {"failures": f.failures_last_hour, "runs": f.runs_last_hour, "rate": round(rate, 4)}
    return False


def stale_data(f: WorkerFacts):
    if not f.enabled or not f.freshness_s or not f.has_cadence:
        return None
    if f.last_success_age_s is None or f.last_success_age_s > f.freshness_s:
        return {"last_success_age_s": f.last_success_age_s, "freshness_s": f.freshness_s}
    return False


def lock_contention(f: WorkerFacts):
    if f.lock_failures >= LOCK_CONTENTION_FAILURES:
        return {"failed_acquisitions": f.lock_failures}
    return False


# --- fleet scope ------------------------------------------------------------------
def queue_overflow(f: FleetFacts):
    return {"queue_depth": f.queue_depth} if f.queue_depth > QUEUE_OVERFLOW_DEPTH else False


def resource_exhaustion(f: FleetFacts):
    if f.memory_percent is None and f.disk_percent is None:
        return None
    memory_high = f.memory_percent is not None and f.memory_percent > MEMORY_EXHAUSTED_PERCENT
    disk_full = f.disk_percent is not None and f.disk_percent >= DISK_FULL_PERCENT
    if memory_high or disk_full:
        return {"memory_percent": f.memory_percent, "disk_percent": f.disk_percent}
    return False


def elevated_retries(f: FleetFacts):
    if not f.jobs_last_hour:
        return None
    rate = f.retried_jobs_last_hour / f.jobs_last_hour
    if rate > ELEVATED_RETRY_RATE:
        return {"retried": f.retried_jobs_last_hour, "jobs": f.jobs_last_hour, "rate": round(rate, 4)}
    return False


RULES: list[AnomalyRule] = [
    AnomalyRule("WORKER_CRASH", "critical", "run", "Worker process died unexpectedly", worker_crash),
    AnomalyRule("QUEUE_OVERFLOW", "critical", "fleet", "Queue depth > 1000 jobs", queue_overflow),
    AnomalyRule("DATA_CORRUPTION", "critical", "run", "Invalid data detected in output", data_corruption),
    AnomalyRule("DEPENDENCY_FAILURE", "critical", "run", "Required upstream worker failed", dependency_failure),
    AnomalyRule("RESOURCE_EXHAUSTION", "critical", "fleet", "Memory > 90 % or disk full", resource_exhaustion),
    AnomalyRule("HIGH_FAILURE_RATE", "high", "worker", "> 10 % failures in the last hour", high_failure_rate),
    AnomalyRule("SLOW_EXECUTION", "high", "run", "Duration > 2× expected", slow_execution),
    AnomalyRule("STALE_DATA", "high", "worker", "Data older than the freshness threshold", stale_data),
    AnomalyRule("API_QUOTA_LOW", "high", "run", "API quota < 20 %", api_quota_low),
    AnomalyRule("LOCK_CONTENTION", "high", "worker", "Failed to acquire the lock 3 times", lock_contention),
    AnomalyRule("ELEVATED_RETRIES", "medium", "fleet", "> 5 % of jobs retried", elevated_retries),
    AnomalyRule("PARTIAL_SUCCESS", "medium", "run", "Some items failed in the batch", partial_success),
    AnomalyRule("CACHE_MISS", "medium", "run", "Expected cache data missing", cache_miss),
    AnomalyRule("TIMEOUT_WARNING", "medium", "run", "Duration > 80 % of the timeout", timeout_warning),
    AnomalyRule("SKIP_DUE_TO_LOCK", "low", "run", "Another instance running", skip_due_to_lock),
    AnomalyRule("SKIP_DUE_TO_FRESHNESS", "low", "run", "Data already fresh", skip_due_to_freshness),
    AnomalyRule("MINOR_VALIDATION_ISSUE", "low", "run", "Non-critical validation warning", minor_validation_issue),
]
# A run that reports retries/requests is also checked for elevated retries.
RUN_EXTRA: list[AnomalyRule] = [
    AnomalyRule("ELEVATED_RETRIES", "medium", "run", "> 5 % of the run's requests retried", run_retries),
]
# Anomalies raised by other capabilities through the same rows and alert channels; no
# fleet facts are evaluated for them. A service that health monitoring finds down (the
# root cause, its failing dependents named in the details) is one.
OTHER: list[AnomalyRule] = [
    AnomalyRule(
        "SERVICE_DOWN",
        "critical",
        "service",
        "A monitored service is down (the root cause; dependents failing because of it are listed)",
        lambda facts: None,
    ),
    # Loop protection: one automatic remediation kept acting on the same target and is
    # paused for it until a person resumes it (the loop's guardrails open it).
    AnomalyRule(
        "REMEDIATION_LOOP",
        "high",
        "automation",
        "An automatic remediation repeated on one target too often in an hour and is paused there",
        lambda facts: None,
    ),
]
BY_CODE: dict[str, AnomalyRule] = {rule.code: rule for rule in [*RULES, *OTHER]}
CODES = [rule.code for rule in RULES]  # the fleet's seventeen


@dataclass
class Evaluation:
    fired: dict[str, dict[str, Any]] = field(default_factory=dict)
    cleared: set[str] = field(default_factory=set)


def evaluate(scope: str, facts: Any) -> Evaluation:
    """Run every rule of ``scope`` over ``facts``."""
    result = Evaluation()
    rules = [r for r in RULES if r.scope == scope] + (RUN_EXTRA if scope == "run" else [])
    for rule in rules:
        outcome = rule.check(facts)
        if outcome is None:
            continue
        if outcome is False:
            if rule.code not in result.fired:
                result.cleared.add(rule.code)
        else:
            result.fired[rule.code] = dict(outcome) if isinstance(outcome, Mapping) else {}
            result.cleared.discard(rule.code)
    return result


def alert_delay(severity: str) -> int | None:
    """Seconds before an open anomaly is alerted; None means log only."""
    return ALERT_DELAY_SECONDS.get(severity)
