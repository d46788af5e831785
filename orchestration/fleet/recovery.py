"""Recovery strategies per anomaly code (seed table).

Contract for a strategy::

    @recovery_strategy("SLOW_EXECUTION")
    def raise_timeout(anomaly: Anomaly, now: datetime) -> dict: ...

It changes real state (rows, schedules, breakers), returns a JSON summary of what it
did, and raises when it could not act. It must be safe to repeat. Every attempt is
an orchestration ``Action`` (cycle = the loop's current cycle, 0 before the first)
with its outcome in the ledger. The loop's guardrails apply per strategy and worker
(``AutomationPolicy`` "recovery:<strategy>"): an hourly limit, loop protection, and
for a risky strategy (pausing schedules, tripping a worker's breaker) a person's
approval unless a person made it automatic; a later pass records whether the anomaly
cleared (the Action effective or not). An anomaly a recovery did not clear escalates
through the escalation policies (``core.escalation``), like every other anomaly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from orchestration.core.choices import CLAIMABLE_STATUSES, ActionStatus, DeferredBy, Priority, Severity
from orchestration.core.jobs.backoff import retry_delay
from orchestration.core.models import Anomaly, Job
from orchestration.core.models.ledger import record
from orchestration.fleet.choices import RunTrigger
from orchestration.fleet.models import Worker
from orchestration.fleet.runner import request_run
from orchestration.fleet.sync import sync_schedule
from orchestration.loop import guardrails
from orchestration.loop.models import Action, AutomationPolicy, GuardrailCounter, LoopState

log = logging.getLogger("orchestration.fleet")

Strategy = Callable[[Anomaly, datetime], dict[str, Any]]
_STRATEGIES: dict[str, tuple[str, Strategy]] = {}
# Strategies that stop work a person may be counting on: they wait for approval.
RISKY: set[str] = set()
RULE_NAME = "fleet-recovery"
# Guardrail defaults of a strategy's policy row (people edit the row afterwards).
MAX_PER_HOUR = 4
LOOP_LIMIT = 8

PRIORITY_BY_SEVERITY = {"critical": 10, "high": 8, "medium": 5, "low": 2}
MAX_RATE_FACTOR = 8.0


class RecoveryError(Exception):
    pass


def recovery_strategy(code: str, name: str, *, risky: bool = False) -> Callable[[Strategy], Strategy]:
    def register(func: Strategy) -> Strategy:
        _STRATEGIES[code] = (name, func)
        if risky:
            RISKY.add(name)
        return func

    return register


def strategies() -> dict[str, str]:
    return {code: name for code, (name, _) in sorted(_STRATEGIES.items())}


def _worker(anomaly: Anomaly) -> Worker:
    worker = anomaly.worker or Worker.objects.filter(name=anomaly.subject.removeprefix("worker:")).first()
    if worker is None:
        raise RecoveryError(f"no worker for {anomaly.subject}")
    worker.refresh_from_db()
    return worker


def current_cycle() -> int:
    return LoopState.objects.filter(pk=LoopState.SINGLETON_ID).values_list("cycle_count", flat=True).first() or 0


def policy_of(name: str) -> AutomationPolicy:
    return AutomationPolicy.of(
        f"recovery:{name}", risky=name in RISKY, max_per_hour=MAX_PER_HOUR, loop_limit=LOOP_LIMIT
    )


def recover(anomaly: Anomaly, *, now: datetime | None = None, actor: str = "orchestrator", cycle: int | None = None):
    """Run the strategy for this anomaly once, if the guardrails allow; returns the
    Action row (None: no strategy, or a request already waits for a person)."""
    if anomaly.code not in _STRATEGIES:
        return None
    now = now or timezone.now()
    name, func = _STRATEGIES[anomaly.code]
    waiting = Action.objects.filter(
        rule_name=RULE_NAME,
        params__anomaly_id=anomaly.pk,
        status__in=(ActionStatus.AWAITING_APPROVAL, ActionStatus.APPROVED),
        executed_at__isnull=True,
    )
    if waiting.exists():
        return None
    verdict, first = GuardrailCounter.attempt(f"recovery:{name}", anomaly.subject, policy_of(name).policy(), now)
    cycle = current_cycle() if cycle is None else cycle
    if not verdict.runs:
        # Held back: wait the cool-down before asking again, and say so once.
        Anomaly.objects.filter(pk=anomaly.pk).update(last_recovery_at=now)
        if not (first or verdict.outcome == guardrails.APPROVAL):
            return None
        return _held(anomaly, name, verdict, now, cycle)
    return _run(anomaly, name, func, now=now, actor=actor, cycle=cycle, reason=verdict.reason)


def _fields(anomaly: Anomaly, name: str, cycle: int, now: datetime) -> dict[str, Any]:
    return {
        "cycle": cycle,
        "rule_name": RULE_NAME,
        "action_type": name,
        "priority": PRIORITY_BY_SEVERITY.get(anomaly.severity, 5),
        "reason": f"{anomaly.code} on {anomaly.subject}"[:300],
        "target": anomaly.subject[:200],
        "params": {"anomaly_id": anomaly.pk, "code": anomaly.code},
        "trigger": anomaly.details,
        "created_at": now,
    }


def _held(anomaly: Anomaly, name: str, verdict: guardrails.Verdict, now: datetime, cycle: int) -> Action:
    from orchestration.loop.cycle import HELD_STATUS

    approval = verdict.outcome == guardrails.APPROVAL
    action = Action.objects.create(
        **_fields(anomaly, name, cycle, now),
        status=HELD_STATUS[verdict.outcome],
        guardrail=verdict.reason[:300],
        expires_at=now + timedelta(minutes=settings.ORCHESTRATOR_APPROVAL_TIMEOUT_MINUTES) if approval else None,
    )
    if approval:
        action.ask_people()
        record(
            "action.awaiting_approval",
            f"{name} for {anomaly.code} on {anomaly.subject} waits for a person's approval",
            severity=Severity.WARNING,
            subject=anomaly.subject,
            data={"action_id": action.pk, "anomaly_id": anomaly.pk, "strategy": name},
        )
    return action


def _run(
    anomaly: Anomaly,
    name: str,
    func: Strategy,
    *,
    now: datetime,
    actor: str,
    cycle: int,
    reason: str = "",
    row: Action | None = None,
) -> Action:
    """Run the strategy and record it: on a new Action row, or on the approved ``row``."""
    started = time.perf_counter()
    try:
        result, ok, error = func(anomaly, now) or {}, True, ""
    except Exception as exc:  # the failure is the action's outcome
        result, ok, error = {}, False, f"{type(exc).__name__}: {exc}"
    outcome = {
        "status": ActionStatus.SUCCEEDED if ok else ActionStatus.FAILED,
        "result": result,
        "error": error,
        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
        # Checked as the loop's actions are: an anomaly still open this long after its
        # recovery means the recovery was not effective.
        "verify_after": now + timedelta(seconds=settings.ORCHESTRATOR_VERIFY_AFTER_SECONDS) if ok else None,
    }
    if row is None:
        action = Action.objects.create(**_fields(anomaly, name, cycle, now), guardrail=reason[:300], **outcome)
    else:
        Action.objects.filter(pk=row.pk).update(**outcome)
        action = Action.objects.get(pk=row.pk)
    entry = {
        "at": now.isoformat(),
        "action_id": action.pk,
        "strategy": name,
        "ok": ok,
        "result": result,
        "error": error,
    }
    if action.decided_by:
        entry["approved_by"] = action.decided_by
    anomaly.refresh_from_db()
    Anomaly.objects.filter(pk=anomaly.pk).update(
        recovery=[*anomaly.recovery, entry][-20:],
        recovery_attempts=anomaly.recovery_attempts + 1,
        last_recovery_at=now,
    )
    record(
        "worker.recovery" if ok else "worker.recovery_failed",
        f"{name} for {anomaly.code} on {anomaly.subject}: "
        + (str(result) if ok else error)
        + (f" (approved by {action.decided_by})" if action.decided_by else ""),
        severity=Severity.INFO if ok else Severity.ERROR,
        subject=anomaly.subject,
        data={"anomaly_id": anomaly.pk, **entry},
        actor=actor,
    )
    return action


def run_approved(now: datetime | None = None) -> list[int]:
    """Run the recoveries a person approved (each claimed once)."""
    now = now or timezone.now()
    by_name = {name: func for name, func in _STRATEGIES.values()}
    done = []
    for row in Action.objects.filter(rule_name=RULE_NAME, status=ActionStatus.APPROVED, executed_at__isnull=True)[:50]:
        if not row.claim_approved(now):
            continue
        anomaly = Anomaly.objects.filter(pk=(row.params or {}).get("anomaly_id")).first()
        func = by_name.get(row.action_type)
        if anomaly is None or func is None:
            Action.objects.filter(pk=row.pk).update(status=ActionStatus.FAILED, error="its anomaly or strategy is gone")
            continue
        if anomaly.resolved_at is not None:
            # The condition that asked for it cleared while it waited: running it now
            # would change a worker for nothing.
            _moot(row, anomaly, now)
            continue
        GuardrailCounter.attempt(
            f"recovery:{row.action_type}", row.target, policy_of(row.action_type).policy(), now, approved=True
        )
        _run(anomaly, row.action_type, func, now=now, actor="orchestrator", cycle=row.cycle, row=row)
        done.append(row.pk)
    return done


def _moot(row: Action, anomaly: Anomaly, now: datetime) -> None:
    reason = f"not run: {anomaly.code} on {anomaly.subject} resolved before it ran"
    Action.objects.filter(pk=row.pk).update(status=ActionStatus.EXPIRED, error=reason)
    record(
        "action.expired",
        f"{row.action_type} on {row.target} (approved by {row.decided_by}) {reason}",
        subject=row.target,
        data={"action_id": row.pk, "anomaly_id": anomaly.pk, "strategy": row.action_type},
    )


def verify_recoveries(now: datetime | None = None) -> int:
    """The later check of a recovery: effective when its anomaly has resolved since."""
    now = now or timezone.now()
    verified = 0
    due = Action.objects.filter(
        rule_name=RULE_NAME, status=ActionStatus.SUCCEEDED, verified_at__isnull=True, verify_after__lte=now
    )
    for row in due[:100]:
        anomaly = Anomaly.objects.filter(pk=(row.params or {}).get("anomaly_id")).first()
        effective = anomaly is None or anomaly.resolved_at is not None
        waited = int((now - (row.executed_at or row.created_at)).total_seconds())
        note = "the anomaly resolved" if effective else f"the anomaly is still open {waited} s later"
        verified += int(row.mark_verified(effective, note, now))
    return verified


def retry_open(now: datetime | None = None, *, cycle: int | None = None) -> list[int]:
    """Recover again the open anomalies whose last attempt is past the cool-down."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.FLEET_RECOVERY_COOLDOWN_SECONDS)
    due = Anomaly.objects.filter(
        Q(last_recovery_at__isnull=True) | Q(last_recovery_at__lte=cutoff),
        resolved_at__isnull=True,
        code__in=list(_STRATEGIES),
        recovery_attempts__lt=settings.FLEET_MAX_RECOVERY_ATTEMPTS,
    )
    done = []
    for anomaly in due[:100]:
        action = recover(anomaly, now=now, cycle=cycle)
        if action is not None:
            done.append(action.pk)
    return done


# --- strategies (seed table) ------------------------------------------------------
@recovery_strategy("WORKER_CRASH", "restart_worker")
def restart_worker(anomaly: Anomaly, now: datetime) -> dict:
    """Restart the worker (a fresh run); the critical alert goes out with the anomaly."""

    worker = _worker(anomaly)
    if not worker.enabled:
        return {"restarted": False, "reason": "worker disabled"}
    run = request_run(worker, trigger=RunTrigger.RECOVERY, actor="orchestrator")
    return {"restarted": True, "run_id": run.pk, "execution_id": run.execution_id}


@recovery_strategy("QUEUE_OVERFLOW", "pause_new_jobs", risky=True)
def pause_new_jobs(anomaly: Anomaly, now: datetime) -> dict:
    """Pause new scheduled runs while the anomaly is open (the run gate checks it) and
    push low-priority pending jobs back 5 minutes so urgent work drains first."""
    ids = list(
        Job.objects.filter(status__in=CLAIMABLE_STATUSES, priority=Priority.LOW).values_list("pk", flat=True)[:5000]
    )
    # Never earlier than a not_before a client set, and marked as recovery's own.
    deferred = Job.objects.filter(pk__in=ids).defer_until(now + timedelta(minutes=5), by=DeferredBy.RECOVERY)
    return {"scheduled_runs_paused": True, "deferred_low_priority_jobs": deferred}


def _reduce_rate(worker: Worker) -> dict:

    before = worker.rate_factor
    worker.rate_factor = min(MAX_RATE_FACTOR, max(1.0, before) * 2)
    worker.save(update_fields=["rate_factor", "updated_at"])
    sync_schedule(worker)
    return {"rate_factor": [before, worker.rate_factor], "note": worker.cadence_text()}


@recovery_strategy("HIGH_FAILURE_RATE", "open_circuit_reduce_rate", risky=True)
def open_circuit_reduce_rate(anomaly: Anomaly, now: datetime) -> dict:
    worker = _worker(anomaly)
    circuit = worker.ensure_circuit()
    circuit.trip(actor="orchestrator", reason=f"recovery of {anomaly.code}")
    return {"breaker": circuit.state, **_reduce_rate(worker)}


@recovery_strategy("API_QUOTA_LOW", "reduce_fetch_frequency")
def reduce_fetch_frequency(anomaly: Anomaly, now: datetime) -> dict:
    return _reduce_rate(_worker(anomaly))


@recovery_strategy("SLOW_EXECUTION", "raise_timeout")
def raise_timeout(anomaly: Anomaly, now: datetime) -> dict:
    """Raise the timeout by half, never above the worker's cap; report memory in use."""
    import psutil

    worker = _worker(anomaly)
    before, cap = worker.timeout_seconds, worker.timeout_cap
    after = min(cap, int(before * 1.5))
    if worker.max_timeout_seconds is None:
        worker.max_timeout_seconds = cap  # pin the cap to the original timeout
    worker.timeout_seconds = after
    worker.save(update_fields=["timeout_seconds", "max_timeout_seconds", "updated_at"])
    return {
        "timeout_seconds": [before, after],
        "cap": cap,
        "at_cap": after == cap,
        "memory_percent": psutil.virtual_memory().percent,
    }


@recovery_strategy("STALE_DATA", "refresh_upstream")
def refresh_upstream(anomaly: Anomaly, now: datetime) -> dict:
    """Force a run of the worker whose data is stale (unless one is already queued)."""

    worker = _worker(anomaly)
    if not worker.enabled:
        raise RecoveryError(f"worker {worker.name} is disabled; cannot refresh it")
    active = worker.runs.filter(status__in=("queued", "running")).first()
    if active is not None:
        return {"refresh": "already queued", "run_id": active.pk}
    run = request_run(worker, trigger=RunTrigger.REFRESH, actor="orchestrator")
    return {"refresh": "queued", "run_id": run.pk}


@recovery_strategy("LOCK_CONTENTION", "lengthen_lock_timeout")
def lengthen_lock_timeout(anomaly: Anomaly, now: datetime) -> dict:
    worker = _worker(anomaly)
    before = worker.effective_lock_timeout
    after = min(int(before * 1.5), worker.timeout_cap * 4)
    Worker.objects.filter(pk=worker.pk).update(lock_timeout_seconds=after)
    return {"lock_timeout_seconds": [before, after]}


@recovery_strategy("DEPENDENCY_FAILURE", "retry_with_backoff")
def retry_with_backoff(anomaly: Anomaly, now: datetime) -> dict:
    """Queue the blocked worker again after an exponential delay (1, 2, 4 … min).
    Optional upstreams never block (they are skipped by the gate), so only required
    ones get here."""

    worker = _worker(anomaly)
    delay = 60 * retry_delay(anomaly.recovery_attempts + 1, "exponential")
    run = request_run(worker, trigger=RunTrigger.RECOVERY, not_before=now + timedelta(seconds=delay))
    return {"retry_run_id": run.pk, "delay_seconds": delay}
