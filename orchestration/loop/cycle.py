"""One control-loop cycle: lease → snapshot → rules → actions → ledger.

The query count is constant: the snapshot uses aggregates, rules are one SELECT,
ledger entries and actions are bulk-inserted, and the loop state is written once.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from orchestration.core.choices import ActionStatus, Severity
from orchestration.core.dbfaults import close_connections
from orchestration.core.jobs.queue import worker_identity
from orchestration.core.models import LedgerEntry
from orchestration.core.models.ledger import ledger_entry
from orchestration.loop import decider
from orchestration.loop.executor import ActionContext, execute
from orchestration.loop.models import Action, LoopState, Rule
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


def _run_with_lease(owner: str, *, dry_run: bool | None, actor: str, manual: bool) -> dict[str, Any]:
    state = LoopState.objects.get(pk=LoopState.SINGLETON_ID)
    due = state.next_cycle_due_at if not manual else None
    if due is not None:
        early = (due - timezone.now()).total_seconds()
        if early > 0:  # the lease was taken ahead (cycle_lead): start on time, not early
            time.sleep(min(early, CYCLE_LEASE_SECONDS / 3))
    started = timezone.now()
    clock = time.perf_counter()
    # How late this cycle started against its due time (what the loop promises to keep).
    late_ms = round(max(0.0, (started - due).total_seconds()) * 1000, 1) if due is not None else None
    cycle = state.cycle_count + 1
    dry = state.dry_run if dry_run is None else dry_run
    entries: list[LedgerEntry] = []
    base = {"cycle": cycle, "dry_run": dry, "manual": manual, "owner": owner}
    try:
        snapshot = build_snapshot(started)
        rules = list(Rule.objects.filter(enabled=True))
        planned = decider.decide(rule_specs(rules, started), snapshot)
        system = snapshot["system"]
        summary_line = decider.summarize(planned)
        if planned:
            entries.append(
                ledger_entry(
                    "orchestrator.cycle_started",
                    f"Cycle {cycle}: {summary_line}",
                    data={**base, "health_score": system["health_score"], "actions": len(planned)},
                    actor=actor,
                )
            )
        results = [] if dry else execute(planned, ActionContext(snapshot, started, cycle, actor))
        action_rows = []
        for index, action in enumerate(planned):
            outcome = results[index] if results else None
            status = (
                ActionStatus.PLANNED
                if outcome is None
                else (ActionStatus.SUCCEEDED if outcome.ok else ActionStatus.FAILED)
            )
            action_rows.append(
                Action(
                    cycle=cycle,
                    rule_id=action.rule_id,
                    rule_name=action.rule,
                    action_type=action.type,
                    priority=action.priority,
                    reason=action.reason[:300],
                    target=action.target[:200],
                    params=action.params,
                    trigger=action.trigger,
                    status=status,
                    result=outcome.result if outcome else {},
                    error=outcome.error if outcome else "",
                    duration_ms=outcome.duration_ms if outcome else 0,
                    created_at=started,
                )
            )
            if outcome is not None:
                entries.append(
                    ledger_entry(
                        "orchestrator.action_executed" if outcome.ok else "orchestrator.action_failed",
                        f"{action.type}: {action.reason}" + (f" — {outcome.error}" if outcome.error else ""),
                        severity=Severity.INFO if outcome.ok else Severity.ERROR,
                        subject=action.target or action.rule,
                        data={**base, **outcome.as_dict()},
                        actor=actor,
                    )
                )
        succeeded = sum(1 for r in results if r.ok)
        failed = len(results) - succeeded
        duration_ms = round((time.perf_counter() - clock) * 1000, 2)
        result = {
            "cycle": cycle,
            "dry_run": dry,
            "snapshot": snapshot,
            "decision": {"actions": [a.as_dict() for a in planned], "summary": summary_line},
            "execution": {"succeeded": succeeded, "failed": failed, "results": [r.as_dict() for r in results]},
            "duration_ms": duration_ms,
            "timestamp": started.isoformat(),
            "next_cycle_due_at": (started + timedelta(seconds=state.interval_seconds)).isoformat(),
        }
        summary = {
            "cycle": cycle,
            "started_at": started.isoformat(),
            "duration_ms": duration_ms,
            "health_score": system["health_score"],
            "health_status": system["status"],
            "actions": len(planned),
            "succeeded": succeeded,
            "failed": failed,
            "dry_run": dry,
            "summary": summary_line,
            "owner": owner,
            "late_ms": late_ms,
        }
        if planned:
            entries.append(
                ledger_entry(
                    "orchestrator.cycle_completed",
                    f"Cycle {cycle}: {succeeded} succeeded, {failed} failed" + (" (dry run)" if dry else ""),
                    severity=Severity.WARNING if failed else Severity.INFO,
                    data=summary,
                    actor=actor,
                )
            )
        else:
            entries.append(
                ledger_entry(
                    "orchestrator.cycle_idle",
                    f"Cycle {cycle}: no actions needed, health {system['health_score']} ({system['status']})",
                    data=summary,
                    actor=actor,
                )
            )
        # One transaction for everything the cycle writes: its actions, the rules'
        # cooldown marks, the ledger entries and the loop state (lease released).
        with transaction.atomic():
            if action_rows:
                Action.objects.bulk_create(action_rows)
                fired = [a.rule_id for a in planned if a.rule_id]
                if fired and not dry:
                    Rule.objects.filter(pk__in=fired, cooldown_seconds__gt=0).update(last_fired_at=started)
            LedgerEntry.objects.bulk_create(entries)
            LoopState.release_cycle_lease(
                owner,
                cycle_count=cycle,
                last_cycle_started_at=started,
                last_cycle_finished_at=timezone.now(),
                next_cycle_due_at=started + timedelta(seconds=state.interval_seconds),
                last_cycle=summary,
                last_health_score=system["health_score"],
            )
        log.info("cycle %s: %s (%.1f ms)", cycle, summary_line, duration_ms)
        return result
    except Exception as exc:
        log.exception("cycle %s failed", cycle)
        entries.append(
            ledger_entry(
                "orchestrator.cycle_error",
                f"Cycle {cycle} failed: {type(exc).__name__}: {exc}",
                severity=Severity.ERROR,
                data={**base, "error": f"{type(exc).__name__}: {exc}"},
                actor=actor,
            )
        )
        LedgerEntry.objects.bulk_create(entries)
        LoopState.release_cycle_lease(
            owner,
            cycle_count=cycle,
            last_cycle_started_at=started,
            last_cycle_finished_at=timezone.now(),
            next_cycle_due_at=started + timedelta(seconds=state.interval_seconds),
            last_cycle={"cycle": cycle, "error": f"{type(exc).__name__}: {exc}", "started_at": started.isoformat()},
        )
        raise
