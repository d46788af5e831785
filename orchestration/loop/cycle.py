"""One control-loop cycle: lease → snapshot → rules → actions → ledger.

The query count is constant: the snapshot uses aggregates, rules are one SELECT,
ledger entries and actions are bulk-inserted, and the loop state is written once.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from orchestration.core.choices import ActionStatus, Severity
from orchestration.core.dbfaults import close_connections
from orchestration.core.jobs.queue import worker_identity
from orchestration.core.models import LedgerEntry
from orchestration.core.models.ledger import ledger_entry, record
from orchestration.loop import decider, guardrails
from orchestration.loop.executor import ActionContext, ActionResult, execute
from orchestration.loop.models import Action, GuardrailCounter, LoopState, Rule
from orchestration.loop.monitor import build_snapshot

log = logging.getLogger("orchestration.loop")

# A cycle normally takes milliseconds. Its runner renews the lease while the cycle
# runs (a third of this apart), so a runner killed mid-cycle holds it up to this long:
# another runner, or a cluster's standby loop, takes the next cycle within seconds.
CYCLE_LEASE_SECONDS = 5.0
# Periodic runners take the lease up to this long before a cycle is due (see cycle_lead).
LEAD_SECONDS = 0.5


def cycle_lead(interval_seconds: float, lead_seconds: float = LEAD_SECONDS) -> float:
    """How long before a cycle is due its runner may take the lease: the write that
    takes it may wait for a busy database (SQLite under many writers), and then it
    delays no cycle. A quarter of the interval at most, so cycles stay interval apart."""
    return max(0.0, min(lead_seconds, interval_seconds / 4))


class _LeaseKeeper(threading.Thread):
    """Renews the cycle lease while a cycle runs longer than a third of it. A cycle of
    milliseconds never touches the database from here."""

    def __init__(self, owner: str) -> None:
        super().__init__(daemon=True, name="cycle-lease")
        self.owner = owner
        self.done = threading.Event()

    def run(self) -> None:
        try:
            while not self.done.wait(CYCLE_LEASE_SECONDS / 3):
                try:
                    LoopState.renew_cycle_lease(self.owner, CYCLE_LEASE_SECONDS)
                except Exception as exc:  # the cycle itself will meet the outage too
                    log.warning("renewing the cycle lease failed: %s", exc)
                    close_connections()
        finally:
            close_connections()

    def __enter__(self) -> _LeaseKeeper:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.done.set()


class CycleBusy(Exception):
    """Another process is running a cycle right now."""


@dataclass
class CycleOutcome:
    ran: bool
    result: dict[str, Any] | None = None


def rule_specs(rules: list[Rule], now) -> list[decider.RuleSpec]:
    return [
        decider.RuleSpec(
            name=r.name,
            conditions=r.conditions,
            action_type=r.action_type,
            priority=r.priority,
            reason=r.description,
            params=r.action_params or {},
            rule_id=r.pk,
        )
        for r in rules
        if not r.cooling_down(now)
    ]


def run_cycle(
    *,
    dry_run: bool | None = None,
    manual: bool = True,
    actor: str = "orchestrator",
    owner: str | None = None,
    wait_seconds: float = 5.0,
    lead_seconds: float = 0.0,
) -> dict[str, Any] | None:
    """Run one cycle if this process gets the lease.

    ``manual`` (run-once from a person) ignores the interval and the enabled switch,
    and waits up to ``wait_seconds`` for a running cycle to finish; it raises
    ``CycleBusy`` if it never gets the lease. Periodic runners pass ``manual=False``
    and get None when it is not their turn.
    """
    owner = owner or worker_identity()
    deadline = time.monotonic() + (wait_seconds if manual else 0)
    lead = 0.0
    if not manual:
        # A plain read first: a runner that is not due costs no write (on SQLite,
        # no wait for the database's write lock).
        row = (
            LoopState.objects.filter(pk=LoopState.SINGLETON_ID)
            .values("enabled", "interval_seconds", "next_cycle_due_at", "lease_owner", "lease_expires_at")
            .first()
        )
        if row is not None:
            lead = cycle_lead(row["interval_seconds"], lead_seconds)
            now = timezone.now()
            due = row["next_cycle_due_at"]
            held = row["lease_owner"] and row["lease_expires_at"] is not None and row["lease_expires_at"] >= now
            if not row["enabled"] or held or (due is not None and due > now + timedelta(seconds=lead)):
                return None
    while not LoopState.acquire_cycle_lease(owner, CYCLE_LEASE_SECONDS, respect_interval=not manual, lead=lead):
        if not LoopState.objects.filter(pk=LoopState.SINGLETON_ID).exists():
            LoopState.get()
            continue
        if time.monotonic() >= deadline:
            if manual:
                raise CycleBusy("another cycle is running; try again in a moment")
            return None
        time.sleep(0.05)
    with _LeaseKeeper(owner):
        return _run_with_lease(owner, dry_run=dry_run, actor=actor, manual=manual)


@dataclass(frozen=True)
class CycleRun:
    """What one cycle knows before it decides anything (plain data)."""

    cycle: int
    dry: bool
    manual: bool
    owner: str
    actor: str
    started: datetime
    interval_seconds: float
    late_ms: float | None

    @property
    def base(self) -> dict[str, Any]:
        return {"cycle": self.cycle, "dry_run": self.dry, "manual": self.manual, "owner": self.owner}

    @property
    def next_due(self) -> datetime:
        return self.started + timedelta(seconds=self.interval_seconds)


@dataclass(frozen=True)
class EntrySpec:
    """A ledger entry to write, as plain data."""

    event_type: str
    message: str
    severity: str = Severity.INFO
    subject: str = ""
    data: dict[str, Any] = field(default_factory=dict)


# --- pure: what a cycle records ---------------------------------------------------------
def late_by_ms(started: datetime, due: datetime | None) -> float | None:
    """How late this cycle started against its due time (what the loop promises to keep)."""
    return round(max(0.0, (started - due).total_seconds()) * 1000, 1) if due is not None else None


def action_status(outcome: ActionResult | None) -> str:
    if outcome is None:
        return ActionStatus.PLANNED
    return ActionStatus.SUCCEEDED if outcome.ok else ActionStatus.FAILED


HELD_STATUS = {
    guardrails.APPROVAL: ActionStatus.AWAITING_APPROVAL,
    guardrails.RATE_LIMITED: ActionStatus.RATE_LIMITED,
    guardrails.PAUSED: ActionStatus.PAUSED,
    guardrails.TRIPPED: ActionStatus.PAUSED,
}


@dataclass(frozen=True)
class Guard:
    """What the guardrails said of one planned action; ``record``: whether a held-back
    action gets its own row (the first of a run of hold-backs, every approval request)."""

    verdict: guardrails.Verdict
    record: bool = True
    conditions: list[dict[str, Any]] = field(default_factory=list)


def guarded_fields(run: CycleRun, action: decider.PlannedAction, guard: Guard, outcome: ActionResult | None):
    """The Action row of a guarded action: run (with what to verify later) or held back."""
    fields = action_fields(run, action, outcome)
    fields["guardrail"] = guard.verdict.reason[:300]
    if guard.verdict.runs:
        if outcome is not None and outcome.ok and guard.conditions:
            fields["verify_conditions"] = guard.conditions
            fields["verify_after"] = run.started + timedelta(seconds=settings.ORCHESTRATOR_VERIFY_AFTER_SECONDS)
        return fields
    fields["status"] = HELD_STATUS[guard.verdict.outcome]
    if guard.verdict.outcome == guardrails.APPROVAL:
        fields["expires_at"] = run.started + timedelta(minutes=settings.ORCHESTRATOR_APPROVAL_TIMEOUT_MINUTES)
        fields["verify_conditions"] = guard.conditions
    return fields


def action_fields(run: CycleRun, action: decider.PlannedAction, outcome: ActionResult | None) -> dict[str, Any]:
    """The fields of the Action row for one planned action (outcome None: not executed)."""
    return {
        "cycle": run.cycle,
        "rule_id": action.rule_id,
        "rule_name": action.rule,
        "action_type": action.type,
        "priority": action.priority,
        "reason": action.reason[:300],
        "target": action.target[:200],
        "params": action.params,
        "trigger": action.trigger,
        "status": action_status(outcome),
        "result": outcome.result if outcome else {},
        "error": outcome.error if outcome else "",
        "duration_ms": outcome.duration_ms if outcome else 0,
        "created_at": run.started,
    }


def action_entry(run: CycleRun, action: decider.PlannedAction, outcome: ActionResult) -> EntrySpec:
    return EntrySpec(
        "orchestrator.action_executed" if outcome.ok else "orchestrator.action_failed",
        f"{action.type}: {action.reason}" + (f" — {outcome.error}" if outcome.error else ""),
        severity=Severity.INFO if outcome.ok else Severity.ERROR,
        subject=action.target or action.rule,
        data={**run.base, **outcome.as_dict()},
    )


def started_entry(run: CycleRun, planned: list[decider.PlannedAction], summary_line: str, score: int) -> EntrySpec:
    return EntrySpec(
        "orchestrator.cycle_started",
        f"Cycle {run.cycle}: {summary_line}",
        data={**run.base, "health_score": score, "actions": len(planned)},
    )


def cycle_summary(
    run: CycleRun,
    planned: list[decider.PlannedAction],
    results: list[ActionResult],
    system: dict[str, Any],
    duration_ms: float,
) -> dict[str, Any]:
    """The loop state's ``last_cycle`` (also the closing ledger entry's data)."""
    succeeded = sum(1 for r in results if r.ok)
    return {
        "cycle": run.cycle,
        "started_at": run.started.isoformat(),
        "duration_ms": duration_ms,
        "health_score": system["health_score"],
        "health_status": system["status"],
        # What lowered the score, so wherever it is shown it is explained.
        "deductions": system.get("deductions", []),
        "actions": len(planned),
        "succeeded": succeeded,
        "failed": len(results) - succeeded,
        "dry_run": run.dry,
        "summary": decider.summarize(planned),
        "owner": run.owner,
        "late_ms": run.late_ms,
    }


def closing_entry(run: CycleRun, summary: dict[str, Any]) -> EntrySpec:
    """cycle_completed when the cycle planned actions, cycle_idle when it had none."""
    if summary["actions"]:
        failed = summary["failed"]
        return EntrySpec(
            "orchestrator.cycle_completed",
            f"Cycle {run.cycle}: {summary['succeeded']} succeeded, {failed} failed" + (" (dry run)" if run.dry else ""),
            severity=Severity.WARNING if failed else Severity.INFO,
            data=summary,
        )
    return EntrySpec(
        "orchestrator.cycle_idle",
        f"Cycle {run.cycle}: no actions needed, health {summary['health_score']} ({summary['health_status']})",
        data=summary,
    )


def cycle_entries(
    run: CycleRun,
    planned: list[decider.PlannedAction],
    results: list[ActionResult],
    summary: dict[str, Any],
) -> list[EntrySpec]:
    """Every ledger entry of a cycle that ran, in the order they happened."""
    entries = [started_entry(run, planned, summary["summary"], summary["health_score"])] if planned else []
    executed = [r.action for r in results]
    entries += [action_entry(run, action, outcome) for action, outcome in zip(executed, results, strict=True)]
    return [*entries, closing_entry(run, summary)]


def cycle_result(
    run: CycleRun,
    snapshot: dict[str, Any],
    planned: list[decider.PlannedAction],
    results: list[ActionResult],
    summary: dict[str, Any],
) -> dict[str, Any]:
    """What run_cycle returns (the API's and the command's answer)."""
    return {
        "cycle": run.cycle,
        "dry_run": run.dry,
        "snapshot": snapshot,
        "decision": {"actions": [a.as_dict() for a in planned], "summary": summary["summary"]},
        "execution": {
            "succeeded": summary["succeeded"],
            "failed": summary["failed"],
            "results": [r.as_dict() for r in results],
        },
        "duration_ms": summary["duration_ms"],
        "timestamp": run.started.isoformat(),
        "next_cycle_due_at": run.next_due.isoformat(),
    }


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# --- steps around the database ----------------------------------------------------------
def _run_with_lease(owner: str, *, dry_run: bool | None, actor: str, manual: bool) -> dict[str, Any]:
    run = _begin(owner, dry_run=dry_run, actor=actor, manual=manual)
    clock = time.perf_counter()
    # Ledger rows as the cycle goes (each dated when it happened); a failure still writes them.
    entries: list[LedgerEntry] = []
    try:
        snapshot = build_snapshot(run.started)
        rules = list(Rule.objects.filter(enabled=True))
        planned = decider.decide(rule_specs(rules, run.started), snapshot)
        if planned:
            started = started_entry(run, planned, decider.summarize(planned), snapshot["system"]["health_score"])
            entries = _ledger_rows(run, [started])
        ctx = ActionContext(snapshot, run.started, run.cycle, actor)
        guards: list[Guard | None] = [None] * len(planned)
        results: list[ActionResult] = []
        if not run.dry:
            # A person's earlier decisions first: expired approvals, approved actions, checks due.
            Action.expire_due(run.started)
            run_approved(ctx)
            verify_due(snapshot, run.started)
            guards = guard_actions(planned, {r.pk: r for r in rules}, run.started)
            runnable = [a for a, g in zip(planned, guards, strict=True) if g is None or g.verdict.runs]
            results = execute(runnable, ctx)
        duration_ms = round((time.perf_counter() - clock) * 1000, 2)
        summary = cycle_summary(run, planned, results, snapshot["system"], duration_ms)
        entries += _ledger_rows(run, cycle_entries(run, planned, results, summary)[len(entries) :])
        _write_cycle(run, planned, guards, results, summary, entries)
        log.info("cycle %s: %s (%.1f ms)", run.cycle, summary["summary"], duration_ms)
        return cycle_result(run, snapshot, planned, results, summary)
    except Exception as exc:
        log.exception("cycle %s failed", run.cycle)
        _write_failure(run, exc, entries)
        raise


def _begin(owner: str, *, dry_run: bool | None, actor: str, manual: bool) -> CycleRun:
    """Read the loop's row and, for a lease taken ahead (cycle_lead), wait for the due time."""
    state = LoopState.objects.get(pk=LoopState.SINGLETON_ID)
    due = state.next_cycle_due_at if not manual else None
    if due is not None:
        early = (due - timezone.now()).total_seconds()
        if early > 0:
            time.sleep(min(early, CYCLE_LEASE_SECONDS / 3))
    started = timezone.now()
    return CycleRun(
        cycle=state.cycle_count + 1,
        dry=state.dry_run if dry_run is None else dry_run,
        manual=manual,
        owner=owner,
        actor=actor,
        started=started,
        interval_seconds=state.interval_seconds,
        late_ms=late_by_ms(started, due),
    )


def _ledger_rows(run: CycleRun, specs: list[EntrySpec]) -> list[LedgerEntry]:
    return [
        ledger_entry(s.event_type, s.message, severity=s.severity, subject=s.subject, data=s.data, actor=run.actor)
        for s in specs
    ]


def guard_actions(planned: list[decider.PlannedAction], rules: dict[int, Rule], now: datetime) -> list[Guard | None]:
    """Ask the guardrails about each planned action (counted per rule and target). An
    action that already waits for a person is not asked again while it waits."""
    if not planned:
        return []
    waiting = set(
        Action.objects.filter(
            status__in=(ActionStatus.AWAITING_APPROVAL, ActionStatus.APPROVED), executed_at__isnull=True
        ).values_list("rule_id", "target")
    )
    guards: list[Guard | None] = []
    for action in planned:
        rule = rules.get(action.rule_id) if action.rule_id else None
        if rule is None:
            guards.append(None)
            continue
        if (rule.pk, action.target[:200]) in waiting:
            verdict = guardrails.Verdict(guardrails.APPROVAL, guardrails.Counter(), "already waiting for a person")
            guards.append(Guard(verdict, record=False))
            continue
        verdict, first = GuardrailCounter.attempt(f"rule:{rule.name}", action.target, rule.policy(), now)
        record = verdict.runs or verdict.outcome == guardrails.APPROVAL or first
        guards.append(Guard(verdict, record=record, conditions=list(rule.conditions)))
    return guards


def run_approved(ctx: ActionContext) -> list[int]:
    """Run the rules' actions a person approved (each claimed once), writing the outcome
    onto the same Action row."""
    done = []
    for row in Action.objects.filter(status=ActionStatus.APPROVED, executed_at__isnull=True, rule__isnull=False)[:50]:
        if not row.claim_approved(ctx.now):
            continue
        action = decider.PlannedAction(
            type=row.action_type,
            priority=row.priority,
            reason=row.reason,
            target=row.target,
            params=row.params,
            trigger=row.trigger,
            rule=row.rule_name,
            rule_id=row.rule_id,
        )
        if row.rule is not None:
            GuardrailCounter.attempt(f"rule:{row.rule_name}", row.target, row.rule.policy(), ctx.now, approved=True)
        (outcome,) = execute([action], ctx)
        fields = {
            "status": action_status(outcome),
            "result": outcome.result,
            "error": outcome.error,
            "duration_ms": outcome.duration_ms,
        }
        if outcome.ok and row.verify_conditions:
            fields["verify_after"] = ctx.now + timedelta(seconds=settings.ORCHESTRATOR_VERIFY_AFTER_SECONDS)
        Action.objects.filter(pk=row.pk).update(**fields)
        record(
            "orchestrator.action_executed" if outcome.ok else "orchestrator.action_failed",
            f"{action.type} (approved by {row.decided_by}): {action.reason}"
            + (f" — {outcome.error}" if outcome.error else ""),
            severity=Severity.INFO if outcome.ok else Severity.ERROR,
            subject=action.target or action.rule,
            data={"cycle": ctx.cycle, "action_id": row.pk, "approved_by": row.decided_by, **outcome.as_dict()},
            actor=ctx.actor,
        )
        done.append(row.pk)
    return done


def verify_due(snapshot: dict[str, Any], now: datetime) -> int:
    """The later check: did the condition that fired each action clear since?"""
    verified = 0
    due = Action.objects.filter(verified_at__isnull=True, verify_after__lte=now, status=ActionStatus.SUCCEEDED).exclude(
        verify_conditions=[]
    )
    for row in due[:100]:
        effective = guardrails.cleared(row.verify_conditions, snapshot)
        if effective is None:
            continue
        values = {c["field"]: decider.resolve(snapshot, c["field"]) for c in row.verify_conditions}
        shown = ", ".join(f"{k}={v}" for k, v in values.items() if v is not decider.MISSING)
        note = ("the condition cleared" if effective else "the condition still holds") + (
            f" ({shown})" if shown else ""
        )
        verified += int(row.mark_verified(effective, note, now))
    return verified


def _write_cycle(
    run: CycleRun,
    planned: list[decider.PlannedAction],
    guards: list[Guard | None],
    results: list[ActionResult],
    summary: dict[str, Any],
    entries: list[LedgerEntry],
) -> None:
    """One transaction for everything the cycle writes: its actions, the rules'
    cooldown marks, the ledger entries and the loop state (lease released)."""
    outcomes = {id(r.action): r for r in results}
    rows = []
    for action, guard in zip(planned, guards, strict=True):
        outcome = outcomes.get(id(action))
        if guard is None:
            rows.append(Action(**action_fields(run, action, outcome)))
        elif guard.record:
            rows.append(Action(**guarded_fields(run, action, guard, outcome)))
            if guard.verdict.outcome == guardrails.APPROVAL:
                entries.append(
                    ledger_entry(
                        "action.awaiting_approval",
                        f"{action.type} waits for a person's approval: {action.reason}",
                        severity=Severity.WARNING,
                        subject=action.target or action.rule,
                        data={**run.base, **action.as_dict()},
                        actor=run.actor,
                    )
                )
    with transaction.atomic():
        if planned:
            for created in Action.objects.bulk_create(rows):
                if created.status == ActionStatus.AWAITING_APPROVAL and created.pk:
                    created.ask_people()
            fired = [a.rule_id for a in planned if a.rule_id]
            if fired and not run.dry:
                Rule.objects.filter(pk__in=fired, cooldown_seconds__gt=0).update(last_fired_at=run.started)
        LedgerEntry.objects.bulk_create(entries)
        LoopState.release_cycle_lease(
            run.owner,
            cycle_count=run.cycle,
            last_cycle_started_at=run.started,
            last_cycle_finished_at=timezone.now(),
            next_cycle_due_at=run.next_due,
            last_cycle=summary,
            last_health_score=summary["health_score"],
        )


def _write_failure(run: CycleRun, exc: Exception, entries: list[LedgerEntry]) -> None:
    error = error_text(exc)
    entry = EntrySpec(
        "orchestrator.cycle_error",
        f"Cycle {run.cycle} failed: {error}",
        severity=Severity.ERROR,
        data={**run.base, "error": error},
    )
    LedgerEntry.objects.bulk_create([*entries, *_ledger_rows(run, [entry])])
    LoopState.release_cycle_lease(
        run.owner,
        cycle_count=run.cycle,
        last_cycle_started_at=run.started,
        last_cycle_finished_at=timezone.now(),
        next_cycle_due_at=run.next_due,
        last_cycle={"cycle": run.cycle, "error": error, "started_at": run.started.isoformat()},
    )
