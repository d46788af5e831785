"""Opening and resolving anomalies, for every layer that finds one (the fleet's
detection, the health sweep, pipeline gates): one open per code and subject, enforced
by a partial unique index. A new anomaly gets its recovery at once (the reactions the
fleet registers) and, when critical, its alert.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, connections, models, transaction
from django.db.models import F
from django.utils import timezone

from orchestration.core import alerts
from orchestration.core import anomaly_rules as rules
from orchestration.core.choices import AlertState, Severity
from orchestration.core.models import Anomaly
from orchestration.core.models.ledger import record

log = logging.getLogger("orchestration.fleet")

LEDGER_SEVERITY = {
    "critical": Severity.CRITICAL,
    "high": Severity.ERROR,
    "medium": Severity.WARNING,
    "low": Severity.INFO,
}

# What happens to a new anomaly: the fleet registers its recovery at start-up.
_reactions: list[Callable[[Anomaly], Any]] = []


def register_reaction(reaction: Callable[[Anomaly], Any]) -> None:
    if reaction not in _reactions:
        _reactions.append(reaction)


# --- open / resolve ---------------------------------------------------------------
def open_anomaly(
    code: str,
    subject: str,
    details: dict[str, Any],
    *,
    worker: models.Model | None = None,
    run: models.Model | None = None,
    now: datetime | None = None,
) -> tuple[Anomaly, bool]:
    """Open (or refresh) the anomaly ``code`` about ``subject``; True when new."""
    now = now or timezone.now()
    rule = rules.BY_CODE[code]
    current = Anomaly.objects.filter(code=code, subject=subject, resolved_at__isnull=True).first()
    if current is None:
        delay = rules.alert_delay(rule.severity)
        try:
            with transaction.atomic():
                current = Anomaly.objects.create(
                    code=code,
                    severity=rule.severity,
                    subject=subject,
                    worker=worker,
                    run=run,
                    details=details,
                    detected_at=now,
                    last_seen_at=now,
                    alert_state=AlertState.LOG_ONLY if delay is None else AlertState.PENDING,
                    alert_due_at=None if delay is None else now + timedelta(seconds=delay),
                )
        except IntegrityError:
            current = Anomaly.objects.filter(code=code, subject=subject, resolved_at__isnull=True).first()
        else:
            record(
                "worker.anomaly_detected",
                f"{code} on {subject}: {rule.description}",
                severity=LEDGER_SEVERITY[rule.severity],
                subject=subject,
                data={"anomaly_id": current.pk, "code": code, "severity": rule.severity, "details": details},
            )
            return current, True
    if current is not None:
        Anomaly.objects.filter(pk=current.pk).update(
            last_seen_at=now, occurrences=F("occurrences") + 1, details=details, run=run or current.run
        )
        current.refresh_from_db()
    return current, False


def resolve(code: str, subject: str, now: datetime | None = None) -> int:
    now = now or timezone.now()
    ids = list(
        Anomaly.objects.filter(code=code, subject=subject, resolved_at__isnull=True).values_list("pk", flat=True)
    )
    if not ids:
        return 0
    Anomaly.objects.filter(pk__in=ids, alert_state=AlertState.PENDING).update(alert_state=AlertState.SUPPRESSED)
    done = Anomaly.objects.filter(pk__in=ids, resolved_at__isnull=True).update(resolved_at=now)
    if done:
        record(
            "worker.anomaly_resolved",
            f"{code} on {subject} resolved: the condition cleared",
            subject=subject,
            data={"anomaly_ids": ids, "code": code},
        )
    return done


def apply(
    evaluation: rules.Evaluation,
    subject: str,
    *,
    worker: models.Model | None = None,
    run: models.Model | None = None,
    now: datetime | None = None,
    open_now: set[str] | None = None,
) -> list[Anomaly]:
    """Open what fired, resolve what cleared; returns the anomalies opened now.
    ``open_now``: which of the cleared codes are open about ``subject``, when the
    caller read them already (the fleet reads them with a run's last hour)."""
    opened = []
    for code, details in evaluation.fired.items():
        anomaly, created = open_anomaly(code, subject, details, worker=worker, run=run, now=now)
        if created:
            opened.append(anomaly)
    if evaluation.cleared:
        # One query for what is open, not one per cleared rule (most are not open).
        cleared = list(evaluation.cleared)
        still_open = open_codes(subject, cleared) if open_now is None else open_now
        for code in cleared:
            if code in still_open:
                resolve(code, subject, now)
    return opened


_OPEN_CODES: dict[tuple[str, int], str] = {}


def open_codes(subject: str, codes: list[str]) -> set[str]:
    """Which of ``codes`` are open about ``subject``. Plain SQL made once per database
    and number of codes: it runs after every worker run, and building it through the
    ORM cost more than the query itself."""
    connection = connections[Anomaly.objects.db]
    key = (connection.vendor, len(codes))
    text = _OPEN_CODES.get(key)
    if text is None:
        quote = connection.ops.quote_name
        c = {f.name: quote(f.column) for f in Anomaly._meta.concrete_fields}
        text = _OPEN_CODES[key] = (
            f"SELECT {c['code']} FROM {quote(Anomaly._meta.db_table)} WHERE {c['subject']} = %s "
            f"AND {c['code']} IN ({', '.join(['%s'] * len(codes))}) AND {c['resolved_at']} IS NULL"
        )
    with connection.cursor() as cursor:
        cursor.execute(text, [subject, *codes])
        return {row[0] for row in cursor.fetchall()}


def react(opened: list[Anomaly]) -> None:
    """Recover new anomalies at once and send the alerts that are due (critical)."""
    for anomaly in opened:
        for reaction in _reactions:
            try:
                reaction(anomaly)
            except Exception:  # recorded as a failed Action inside recover(); never stop detection
                log.exception("recovery of anomaly %s failed", anomaly.pk)
    if opened:
        alerts.deliver_due()
