"""The health sweep: gate each service through its breaker, probe concurrently, then
persist results, breaker transitions and alerts.

Probing happens in threads without database access; everything the database needs
is written afterwards from the calling thread in one transaction, so a sweep of N
services costs about one timeout of wall time plus a few milliseconds of writes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from health import breaker as rules
from health import status as pure
from health import status_copy
from health.checker import ProbeResult, run_probes
from health.choices import BreakerState, ServiceHealth
from health.models import (
    CircuitBreaker,
    HealthCheck,
    MaintenanceWindow,
    Service,
    ServiceAlert,
    ServiceDay,
    breaker_name,
)
from orchestration.core import anomalies
from orchestration.core.choices import Severity
from orchestration.core.models import Anomaly
from orchestration.core.models.ledger import record as ledger_record

SERVICE_DOWN = "SERVICE_DOWN"

log = logging.getLogger("health")


@dataclass
class SweepResult:
    started_at: datetime
    duration_ms: float = 0.0
    checked: list[str] = field(default_factory=list)
    skipped_circuit_open: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    transitions: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at.isoformat(),
            "duration_ms": round(self.duration_ms, 1),
            "checked": self.checked,
            "failed": self.failed,
            "skipped_circuit_open": self.skipped_circuit_open,
            "transitions": self.transitions,
        }


# --- claiming due services -----------------------------------------------------------
def claim_due(now: datetime | None = None, *, limit: int = 1000) -> list[Service]:
    """Services whose check is due, each claimed by moving its ``next_check_at``:
    however many runners call this at once, a service is handed to exactly one of them
    per interval. One read and one UPDATE per distinct interval, inside a transaction
    that holds the rows (row locks skipping those another runner holds on PostgreSQL,
    the IMMEDIATE write lock on SQLite): a claim per row cost 1.3 ms, more than a tick
    at 1,000 checks/s. Only the columns the claim reads are loaded; the sweep reads
    each service fresh."""
    now = now or timezone.now()
    with transaction.atomic():
        due = Service.objects.due(now).only("pk", "name", "next_check_at", "check_interval_seconds")
        if connection.features.has_select_for_update_skip_locked:
            due = due.select_for_update(skip_locked=True)
        claimed = list(due.order_by("next_check_at", "pk")[:limit])
        by_interval: dict[int, list[Service]] = {}
        for service in claimed:
            by_interval.setdefault(service.check_interval_seconds, []).append(service)
        for interval, group in by_interval.items():
            following = now + timedelta(seconds=interval)
            for start in range(0, len(group), CLAIM_CHUNK):
                chunk = group[start : start + CLAIM_CHUNK]
                Service.objects.filter(pk__in=[s.pk for s in chunk]).update(next_check_at=following)
            for service in group:
                service.next_check_at = following
    return claimed


CLAIM_CHUNK = 500  # ids per UPDATE, well under any backend's parameter limit


# --- the sweep -------------------------------------------------------------------------
def check_services(
    services: Iterable[Service] | None = None, *, now: datetime | None = None, actor: str = "system"
) -> SweepResult:
    """Check these services (default: every enabled one) now, concurrently."""
    started = time.perf_counter()
    now = now or timezone.now()
    result = SweepResult(started_at=now)
    targets = list(Service.objects.enabled().select_related("circuit") if services is None else services)
    if not targets:
        return result

    circuits = _fresh_circuits(targets)
    circuits.load(pk for pk, state in circuits.states.items() if state != BreakerState.CLOSED)
    allowed: list[Service] = []
    for service in targets:
        # Closed breakers (the usual case) let everything through without a write.
        if circuits.states[service.pk] == BreakerState.CLOSED:
            allowed.append(service)
            continue
        circuit = circuits.rows[service.pk]
        if circuit.allow(now):
            allowed.append(service)
            if circuit.state == BreakerState.HALF_OPEN:
                result.transitions.setdefault(service.name, rules.HALF_OPENED)
        else:
            result.skipped_circuit_open.append(service.name)
    if result.skipped_circuit_open:
        # No request goes out while the circuit is open; the service reads circuit_open.
        Service.objects.filter(name__in=result.skipped_circuit_open).update(health=ServiceHealth.CIRCUIT_OPEN)

    probes = [s.probe_item() for s in allowed]
    outcomes = run_probes(
        probes, max_workers=settings.HEALTH_MAX_WORKERS, max_body_bytes=settings.HEALTH_MAX_BODY_BYTES
    )
    with transaction.atomic():
        _persist(allowed, outcomes, circuits, now, actor, result)
        reconcile_alerts(now)
    status_copy.forget()  # (this process's copy; another's ages out within its max age)
    result.duration_ms = (time.perf_counter() - started) * 1000
    log.info(
        "health sweep: %d checked, %d failed, %d skipped (circuit open) in %.0f ms",
        len(result.checked),
        len(result.failed),
        len(result.skipped_circuit_open),
        result.duration_ms,
    )
    return result


@dataclass
class Circuits:
    """The services' breakers as the sweep needs them: every breaker's pk and state (a
    closed one lets its check through and a success on it is one shared UPDATE), full
    rows only for the others, read in one query when needed. Reading every row in full
    was a twentieth of a check's CPU. A row read after probing rather than before is as
    good: recording on it is a compare-and-swap on its version either way."""

    ids: dict[int, int]  # service pk → breaker pk
    states: dict[int, str]  # service pk → breaker state as read at the start
    rows: dict[int, CircuitBreaker] = field(default_factory=dict)  # service pk → breaker, once read

    def load(self, service_pks: Iterable[int]) -> None:
        wanted = [pk for pk in service_pks if pk not in self.rows]
        if wanted:
            found = CircuitBreaker.objects.in_bulk([self.ids[pk] for pk in wanted])
            self.rows.update((pk, found[self.ids[pk]]) for pk in wanted)


def _fresh_circuits(services: Sequence[Service]) -> Circuits:
    missing = [s for s in services if not s.circuit_id]
    for service in missing:
        service.ensure_circuit()
    ids = {s.pk: s.circuit_id for s in services}
    state_of = dict(CircuitBreaker.objects.filter(pk__in=list(ids.values())).values_list("pk", "state"))
    return Circuits(ids, {pk: state_of[breaker] for pk, breaker in ids.items()})


def _persist(
    services: Sequence[Service],
    outcomes: Sequence[ProbeResult],
    circuits: Circuits,
    now: datetime,
    actor: str,
    result: SweepResult,
) -> None:
    by_pk = {s.pk: s for s in services}
    failing_now = {by_pk[o.key].name for o in outcomes if not o.success}
    roots = _root_causes(failing_now, checked={s.name for s in services})
    still_closed = _bump_closed_successes(outcomes, circuits.ids, now)
    circuits.load(o.key for o in outcomes if not (o.success and circuits.ids[o.key] in still_closed))
    states: dict[int, str] = {}
    for outcome in outcomes:
        service = by_pk[outcome.key]
        if outcome.success and circuits.ids[outcome.key] in still_closed:
            states[service.pk] = BreakerState.CLOSED
            continue
        circuit = circuits.rows[outcome.key]
        transition = circuit.record(outcome.success, now, actor=actor, context=blame_context(service.name, roots))
        states[service.pk] = circuit.state
        if transition:
            result.transitions[service.name] = transition
    counters = [(o.key, check_health(o.success, states[o.key]), o) for o in outcomes]
    for outcome in outcomes:
        result.checked.append(by_pk[outcome.key].name)
        if not outcome.success:
            result.failed.append(by_pk[outcome.key].name)
    _write_counters(counters, now)
    _add_to_days(counters, now)
    _write_history(counters, states, now)


# --- pure: what a probe's outcome means ------------------------------------------------
def check_health(success: bool, breaker_state: str) -> str:
    """A service's health after a check, given its breaker after recording it."""
    if success:
        return ServiceHealth.HEALTHY
    return ServiceHealth.CIRCUIT_OPEN if breaker_state == BreakerState.OPEN else ServiceHealth.UNHEALTHY


def blame_context(name: str, roots: dict[str, list[str]]) -> dict[str, str] | None:
    """A breaker transition of a service failing because of another names the root
    cause and is only informational; None when the service is its own root cause."""
    blamed = roots.get(name, [name])
    if blamed == [name]:
        return None
    return {"root_cause": ", ".join(blamed), "severity": Severity.INFO}


# --- steps around the database ----------------------------------------------------------
def _bump_closed_successes(outcomes: Sequence[ProbeResult], breaker_ids: dict[int, int], now: datetime) -> set[int]:
    """Successes on closed breakers (the usual case): one conditional UPDATE for all of
    them, which returns the pks it covered ("still closed" and the write are one step);
    everything else goes through CircuitBreaker.record, which ledgers transitions. Plain
    SQL (RETURNING: SQLite 3.35+, PostgreSQL): a locking SELECT and an ORM UPDATE, each
    building its IN list of pks, cost twice as much CPU as the statement."""
    ok_pks = [breaker_ids[o.key] for o in outcomes if o.success]
    if not ok_pks:
        return set()
    qn = connection.ops.quote_name
    c = {f.name: qn(f.column) for f in CircuitBreaker._meta.concrete_fields}
    sql = (
        f"UPDATE {qn(CircuitBreaker._meta.db_table)} SET {c['consecutive_failures']} = 0, "
        f"{c['consecutive_successes']} = {c['consecutive_successes']} + 1, {c['last_success_at']} = %s, "
        f"{c['version']} = {c['version']} + 1, {c['updated_at']} = %s "
        f"WHERE {c['id']} IN ({', '.join(['%s'] * len(ok_pks))}) AND {c['state']} = %s RETURNING {c['id']}"
    )
    stamp = connection.ops.adapt_datetimefield_value(now)
    with connection.cursor() as cursor:
        cursor.execute(sql, [stamp, stamp, *ok_pks, str(BreakerState.CLOSED)])
        return {pk for (pk,) in cursor.fetchall()}


def _write_history(rows: list[tuple[int, str, ProbeResult]], states: dict[int, str], now: datetime) -> None:
    """One history row per check through executemany: bulk_create spent 0.16 s of ORM
    work per 1,000 rows preparing values this statement takes as they are."""
    if not rows:
        return
    qn = connection.ops.quote_name
    columns = ("service_id", "checked_at", "success", "health", "status_code", "response_time_ms")
    columns += ("error_message", "breaker_state")
    sql = (
        f"INSERT INTO {qn(HealthCheck._meta.db_table)} ({', '.join(qn(c) for c in columns)}) "
        f"VALUES ({', '.join(['%s'] * len(columns))})"
    )
    stamp = connection.ops.adapt_datetimefield_value(now)
    params = [
        (
            pk,
            stamp,
            outcome.success,
            health,
            outcome.status_code,
            outcome.response_time_ms,
            outcome.error_message or "",
            states[pk],
        )
        for pk, health, outcome in rows
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


def _add_to_days(rows: list[tuple[int, str, ProbeResult]], now: datetime) -> None:
    """Each check counted on its service's UTC day (the status page's uptime bars): one
    upsert per service through executemany, added in SQL like the counters."""
    if not rows:
        return
    qn = connection.ops.quote_name
    table = qn(ServiceDay._meta.db_table)
    sql = (
        f"INSERT INTO {table} ({qn('service_id')}, {qn('day')}, {qn('checks')}, {qn('successes')}) "
        f"VALUES (%s, %s, 1, %s) ON CONFLICT ({qn('service_id')}, {qn('day')}) DO UPDATE SET "
        f"{qn('checks')} = {table}.{qn('checks')} + 1, "
        f"{qn('successes')} = {table}.{qn('successes')} + excluded.{qn('successes')}"
    )
    day = connection.ops.adapt_datefield_value(now.astimezone(UTC).date())
    with connection.cursor() as cursor:
        cursor.executemany(sql, [(pk, day, 1 if outcome.success else 0) for pk, _, outcome in rows])


def _write_counters(rows: list[tuple[int, str, ProbeResult]], now: datetime) -> None:
    """One parameterised UPDATE per service through executemany: counters are
    incremented in SQL (never read-modify-write), and the statement is prepared once
    (a CASE-per-row bulk_update is slow for the ORM to build)."""
    if not rows:
        return
    qn = connection.ops.quote_name
    table = qn(Service._meta.db_table)
    sql = (
        f"UPDATE {table} SET {qn('health')} = %s, "
        f"{qn('total_checks')} = {qn('total_checks')} + 1, "
        f"{qn('successful_checks')} = {qn('successful_checks')} + %s, "
        # success → 0, failure → previous + 1
        f"{qn('consecutive_failures')} = ({qn('consecutive_failures')} + 1) * %s, "
        f"{qn('last_check_at')} = %s, {qn('last_response_time_ms')} = %s, {qn('last_status_code')} = %s, "
        f"{qn('last_error')} = %s, {qn('updated_at')} = %s WHERE {qn('id')} = %s"
    )
    stamp = connection.ops.adapt_datetimefield_value(now)
    params = [
        (
            health,
            1 if outcome.success else 0,
            0 if outcome.success else 1,
            stamp,
            outcome.response_time_ms,
            outcome.status_code,
            outcome.error_message,
            stamp,
            pk,
        )
        for pk, health, outcome in rows
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


def _dependency_graph() -> dict[str, list[str]]:
    through = Service.depends_on.through
    graph: dict[str, list[str]] = {}
    for src, dst in through.objects.filter(from_service__enabled=True).values_list(
        "from_service__name", "to_service__name"
    ):
        graph.setdefault(src, []).append(dst)
    return graph


def _root_causes(failing_now: set[str], *, checked: set[str]) -> dict[str, list[str]]:
    """Root causes over the services failing after this sweep: those that just failed
    plus those not checked now whose last known health is down."""
    stored_down = set(Service.objects.enabled().filter(health__in=pure.DOWN).values_list("name", flat=True))
    failing = failing_now | (stored_down - checked)
    return pure.root_causes(_dependency_graph(), failing)


# --- dependency-aware alerts ---------------------------------------------------------
def reconcile_alerts(now: datetime | None = None) -> dict[str, list[str]]:
    """Make open alerts match what is down: one alert per root cause, naming the
    dependents that fail because of it; resolve alerts whose service is fine (or is
    now explained by a deeper failure). Returns {"opened", "resolved", "updated"}."""
    now = now or timezone.now()
    # Only services down can alert or be blamed (plan_alerts reads no other row), so the
    # rest of a 20,000-service fleet is not read on every sweep.
    rows = list(
        Service.objects.enabled()
        .filter(health__in=pure.DOWN)
        .values_list("pk", "name", "health", "consecutive_failures", "last_error")
    )
    by_name = {name: (pk, health, failures, error) for pk, name, health, failures, error in rows}
    plan = plan_alerts(by_name, settings.HEALTH_ALERT_AFTER_FAILURES, _dependency_graph())
    open_alerts = {
        a.service.name: a for a in ServiceAlert.objects.filter(resolved_at__isnull=True).select_related("service")
    }
    changes: dict[str, list[str]] = {"opened": [], "resolved": [], "updated": []}
    for name, alert in open_alerts.items():
        if name not in plan.wanted and _resolve_alert(alert, resolution(name, plan), now):
            changes["resolved"].append(name)
    # Under maintenance nothing new alerts; an alert already open stays and still resolves.
    quiet = _under_maintenance(set(plan.wanted) - set(open_alerts), now)
    for root, affected in sorted(plan.wanted.items()):
        error = by_name[root][3] if root in by_name else ""
        alert = open_alerts.get(root)
        if alert is None:
            if root not in quiet and _open_alert(root, by_name[root][0], affected, error, now):
                changes["opened"].append(root)
        elif _refresh_alert(alert, root, affected, error, now):
            changes["updated"].append(root)
    _sync_anomalies(plan.wanted, by_name, now, quiet=quiet)
    if quiet:
        changes["quiet"] = sorted(quiet)
    return changes


def _under_maintenance(names: set[str], now: datetime) -> set[str]:
    if not names:
        return set()
    tags = dict(Service.objects.filter(name__in=names).values_list("name", "tags"))
    return MaintenanceWindow.quiet_services({name: tags.get(name) or [] for name in names}, now)


# --- pure: which alerts should be open -----------------------------------------------
@dataclass(frozen=True)
class AlertPlan:
    failing: set[str]  # services down now
    roots: dict[str, list[str]]  # each failing service's root causes
    wanted: dict[str, list[str]]  # root cause → its failing dependents: one open alert each


def plan_alerts(by_name: dict[str, tuple], threshold: int, graph: dict[str, list[str]]) -> AlertPlan:
    """``by_name``: name → (pk, health, consecutive failures, last error). A service
    alerts once its circuit is open or it failed ``threshold`` times in a row; the alert
    goes to its root causes, each listing every failing dependent."""
    failing = {name for name, (_, health, _, _) in by_name.items() if health in pure.DOWN}
    alerting = {
        name for name in failing if by_name[name][1] == ServiceHealth.CIRCUIT_OPEN or by_name[name][2] >= threshold
    }
    roots = pure.root_causes(graph, failing)
    wanted: dict[str, list[str]] = {}
    for name in sorted(alerting):
        for root in roots[name]:
            wanted.setdefault(root, [])
    for name in sorted(failing):
        for root in roots[name]:
            if root in wanted and name != root:
                wanted[root].append(name)
    return AlertPlan(failing, roots, wanted)


def resolution(name: str, plan: AlertPlan) -> str:
    """Why the open alert of a service no longer wanted is resolved."""
    if name in plan.failing:
        return f"now explained by {', '.join(plan.roots[name])} (root cause)"
    return "recovered"


def opened_message(root: str, error: str, affected: list[str]) -> str:
    message = f"{root} is down: {error or 'failing'}"
    if affected:
        message += f"; {len(affected)} dependent(s) failing because of it: {', '.join(affected)}"
    return message


# --- steps around the database ----------------------------------------------------------
def _resolve_alert(alert: ServiceAlert, reason: str, now: datetime) -> bool:
    name = alert.service.name
    if not ServiceAlert.objects.filter(pk=alert.pk, resolved_at__isnull=True).update(
        resolved_at=now, resolution=reason
    ):
        return False  # another process resolved it first
    ledger_record(
        "health.alert_resolved",
        f"{name}: alert resolved, {reason} after {_human(now - alert.opened_at)}",
        subject=breaker_name(name),
        data={"service": name, "resolution": reason, "affected": alert.affected},
    )
    return True


def _open_alert(root: str, service_id: int, affected: list[str], error: str, now: datetime) -> bool:
    try:
        with transaction.atomic():
            ServiceAlert.objects.create(service_id=service_id, opened_at=now, affected=affected, error_message=error)
    except IntegrityError:
        return False  # another process opened it first; it will keep it current
    ledger_record(
        "health.alert_opened",
        opened_message(root, error, affected),
        severity=Severity.ERROR,
        subject=breaker_name(root),
        data={"service": root, "root_cause": root, "affected": affected, "error": error},
    )
    return True


def _refresh_alert(alert: ServiceAlert, root: str, affected: list[str], error: str, now: datetime) -> bool:
    """Keep an open alert's dependents current; True when new dependents were added."""
    added = sorted(set(affected) - set(alert.affected))
    if affected != alert.affected:
        ServiceAlert.objects.filter(pk=alert.pk).update(affected=affected, error_message=error)
        _open_anomaly(root, error, affected, now)  # (refreshes the open one's details)
    if not added:
        return False
    ledger_record(
        "health.alert_updated",
        f"{', '.join(added)} failing because {root} is down (covered by the open alert on {root})",
        subject=breaker_name(root),
        data={"service": root, "root_cause": root, "added": added, "affected": affected},
    )
    return True


def _sync_anomalies(
    wanted: dict[str, list[str]], by_name: dict[str, tuple], now: datetime, *, quiet: set[str] = frozenset()
) -> None:
    """One open SERVICE_DOWN anomaly per open alert, none for anything else (a service
    recovered, renamed, disabled or deleted since); none opened under maintenance."""
    open_now = set(
        Anomaly.objects.filter(code=SERVICE_DOWN, resolved_at__isnull=True).values_list("subject", flat=True)
    )
    for root, affected in wanted.items():
        if service_subject(root) not in open_now and root not in quiet:
            _open_anomaly(root, by_name[root][3] if root in by_name else "", affected, now)
    for subject in open_now - {service_subject(root) for root in wanted}:
        anomalies.resolve(SERVICE_DOWN, subject, now)


def service_subject(name: str) -> str:
    return f"service:{name}"


def _open_anomaly(root: str, error: str, affected: list[str], now: datetime) -> None:
    """The alert as a fleet anomaly too, so a service outage reaches the alert channels
    (webhook, e-mail) and the open anomalies like every other incident, once per root
    cause. Health's own checks are its recovery: no fleet strategy is tried on it."""
    # The service's tags travel with it, so notification channels can route by them.
    details: dict[str, Any] = {"service": root, "error": error, "affected": affected}
    tags = Service.objects.filter(name=root).values_list("tags", flat=True).first()
    if tags:
        details["tags"] = tags
    anomalies.open_anomaly(SERVICE_DOWN, service_subject(root), details, now=now)


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"
