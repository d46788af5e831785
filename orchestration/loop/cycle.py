"""One control-loop cycle: lease → snapshot → rules → actions → ledger.

The query count is constant: the snapshot uses aggregates, rules are one SELECT,
ledger entries and actions are bulk-inserted, and the loop state is written once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from orchestration.choices import ActionStatus, Severity
from orchestration.jobs.queue import worker_identity
from orchestration.loop import decider
from orchestration.loop.executor import ActionContext, execute
from orchestration.loop.monitor import build_snapshot
from orchestration.models import Action, LedgerEntry, LoopState, Rule
from orchestration.models.ledger import ledger_entry

log = logging.getLogger("orchestration.loop")

# A cycle normally takes milliseconds; if its process dies the lease frees itself.
CYCLE_LEASE_SECONDS = 60


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
) -> dict[str, Any] | None:
    """Run one cycle if this process gets the lease.

    ``manual`` (run-once from a person) ignores the interval and the enabled switch,
    and waits up to ``wait_seconds`` for a running cycle to finish; it raises
    ``CycleBusy`` if it never gets the lease. Periodic runners pass ``manual=False``
    and get None when it is not their turn.
    """
    owner = owner or worker_identity()
    deadline = time.monotonic() + (wait_seconds if manual else 0)
    while not LoopState.acquire_cycle_lease(owner, CYCLE_LEASE_SECONDS, respect_interval=not manual):
        if not LoopState.objects.filter(pk=LoopState.SINGLETON_ID).exists():
            LoopState.get()
            continue
        if time.monotonic() >= deadline:
            if manual:
                raise CycleBusy("another cycle is running; try again in a moment")
            return None
        time.sleep(0.05)
    return _run_with_lease(owner, dry_run=dry_run, actor=actor, manual=manual)


def _run_with_lease(owner: str, *, dry_run: bool | None, actor: str, manual: bool) -> dict[str, Any]:
    started = timezone.now()
    clock = time.perf_counter()
    state = LoopState.objects.get(pk=LoopState.SINGLETON_ID)
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
