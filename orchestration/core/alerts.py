"""Alert channels by registry, routed by severity.

Contract for a channel::

    @alert_channel("name")
    class MyChannel(AlertChannel):
        def configured(self) -> bool: ...
        def send(self, alert: Alert) -> dict: ...   # raise AlertError on failure

Routes come from ``FLEET_ALERT_ROUTES`` (severity → channel names; ``escalation``
for escalations, ``gate`` for people's notices): ``ledger`` and ``channels``, the
notification channels kept as data (Apprise), which also hold what the old
``FLEET_ALERT_WEBHOOK_URL`` and ``FLEET_ALERT_EMAILS`` settings described.
Critical anomalies are alerted at once, high within 5 minutes,
medium within 15; an anomaly that resolves before its alert is due is not alerted.
Low anomalies are only logged. Delivery is claimed row by row with a conditional
UPDATE (pending → sending), so two sweeps never send the same alert twice.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.utils import timezone

from orchestration.core import notifications
from orchestration.core.anomaly_rules import BY_CODE
from orchestration.core.choices import AlertState, Severity
from orchestration.core.models import Anomaly, NotificationChannel
from orchestration.core.models.ledger import record
from orchestration.core.redaction import redact, redact_text

log = logging.getLogger("orchestration.fleet")


class AlertError(Exception):
    pass


@dataclass
class Alert:
    anomaly_id: int
    code: str
    severity: str
    subject: str
    message: str
    detected_at: str
    details: dict[str, Any] = field(default_factory=dict)
    escalated: bool = False

    @classmethod
    def of(cls, anomaly: Anomaly, *, escalated: bool = False) -> Alert:

        rule = BY_CODE.get(anomaly.code)
        prefix = "ESCALATED: " if escalated else ""
        return cls(
            anomaly_id=anomaly.pk,
            code=anomaly.code,
            severity=anomaly.severity,
            subject=anomaly.subject,
            message=f"{prefix}{anomaly.code} on {anomaly.subject}: {rule.description if rule else ''}",
            detected_at=anomaly.detected_at.isoformat(),
            details=anomaly.details,
            escalated=escalated,
        )


@dataclass
class Notice:
    """A message for one person (e.g. a gate waiting for them), with their own links.

    The links are credentials of that person: channels that keep a copy (the ledger)
    leave them out."""

    subject: str
    title: str
    message: str
    recipient: str
    email: str = ""
    links: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


class AlertChannel:
    name = ""

    def configured(self) -> bool:
        return True

    def send(self, alert: Alert) -> dict[str, Any]:
        raise NotImplementedError

    def notify(self, notice: Notice) -> dict[str, Any]:
        """Deliver a person's notice; channels that cannot reach one person say so."""
        return {"skipped": f"{self.name} does not deliver notices to a person"}


_CHANNELS: dict[str, AlertChannel] = {}


def alert_channel(name: str):
    def register(cls):
        instance = cls()
        instance.name = name
        _CHANNELS[name] = instance
        return cls

    return register


def channels() -> list[str]:
    return sorted(_CHANNELS)


@alert_channel("ledger")
class LedgerChannel(AlertChannel):
    def send(self, alert: Alert) -> dict[str, Any]:
        entry = record(
            "worker.alert",
            alert.message,
            severity=Severity.CRITICAL if alert.severity == "critical" or alert.escalated else Severity.ERROR,
            subject=alert.subject,
            data=asdict(alert),
        )
        return {"ledger_id": entry.pk}

    def notify(self, notice: Notice) -> dict[str, Any]:
        entry = record(
            "notice.sent",
            f"{notice.title} (to {notice.recipient})",
            subject=notice.subject,
            data={"recipient": notice.recipient, "details": notice.details, "links": sorted(notice.links)},
        )
        return {"ledger_id": entry.pk}


@alert_channel("channels")
class NotificationChannels(AlertChannel):
    """The notification channels people keep as data (Apprise URLs), each routed by
    severity and tags; queued here and delivered with retries by ``deliver_due``."""

    def configured(self) -> bool:

        return NotificationChannel.objects.filter(enabled=True).exists()

    def send(self, alert: Alert) -> dict[str, Any]:
        tags = alert.details.get("tags") if isinstance(alert.details, dict) else None
        queued = notifications.notify(
            f"anomaly:{alert.anomaly_id}" + (":escalated" if alert.escalated else ""),
            alert.severity,
            alert.message,
            f"Detected at {alert.detected_at}\nDetails: {redact(alert.details)}",
            tags=[t for t in tags or [] if isinstance(t, str)],
        )
        return {"queued": len(queued)}

    def notify(self, notice: Notice) -> dict[str, Any]:
        sent = notifications.notify_person(
            f"notice:{notice.subject}",
            notice.title,
            notice.message,
            recipient=notice.recipient,
            email=notice.email,
            links=notice.links,
        )
        if not sent:
            return {"skipped": "no enabled channel carries notices to this person"}
        return {"deliveries": [d.as_dict() for d in sent]}


def open_anomaly_events() -> dict[str, tuple[str, str, list[str]]]:
    """Open anomalies whose alert went out: what reminders repeat."""
    rows = Anomaly.objects.filter(resolved_at__isnull=True, alert_state=AlertState.SENT)
    return {
        f"anomaly:{a.pk}": (a.severity, Alert.of(a).message, list((a.details or {}).get("tags") or []))
        for a in rows.only("pk", "code", "subject", "severity", "details", "detected_at")[:1000]
    }


notifications.register_open_events("anomaly:", open_anomaly_events)


# The senders these names meant are channels now (made from the same settings).
_FORMER_SENDERS = {"webhook": "channels", "email": "channels"}


def route_names(route_name: str) -> list[str]:
    names = [_FORMER_SENDERS.get(n, n) for n in settings.FLEET_ALERT_ROUTES.get(route_name, [])]
    return list(dict.fromkeys(names))


def route(severity: str, *, escalated: bool = False) -> list[str]:
    return route_names("escalation" if escalated else severity)


def send(anomaly: Anomaly, *, escalated: bool = False) -> dict[str, Any]:
    """Send through every configured channel of the route; one failing channel does
    not stop the others."""
    alert = Alert.of(anomaly, escalated=escalated)
    results: dict[str, Any] = {}
    for name in route(anomaly.severity, escalated=escalated):
        channel = _CHANNELS.get(name)
        if channel is None:
            results[name] = {"ok": False, "error": "unknown channel"}
        elif not channel.configured():
            results[name] = {"ok": False, "skipped": "not configured"}
        else:
            try:
                results[name] = {"ok": True, **channel.send(alert)}
            except Exception as exc:  # reported per channel; stored on the anomaly, so masked
                results[name] = {"ok": False, "error": redact_text(f"{type(exc).__name__}: {exc}")}
    return results


def notify(notice: Notice, *, route_name: str = "gate") -> dict[str, Any]:
    """Send a person's notice through every channel of ``route_name``'s route; one
    failing channel does not stop the others."""
    results: dict[str, Any] = {}
    for name in route_names(route_name):
        channel = _CHANNELS.get(name)
        if channel is None:
            results[name] = {"ok": False, "error": "unknown channel"}
        else:
            try:
                answer = channel.notify(notice)
                results[name] = {"ok": "skipped" not in answer, **answer}
            except Exception as exc:  # reported per channel, masked like every exit
                results[name] = {"ok": False, "error": redact_text(f"{type(exc).__name__}: {exc}")}
    return results


def deliver_due(now: datetime | None = None) -> int:
    """Send the alerts of open anomalies whose time has come. Returns how many were sent."""
    now = now or timezone.now()
    sent = 0
    due = Anomaly.objects.filter(resolved_at__isnull=True, alert_state=AlertState.PENDING, alert_due_at__lte=now)
    for pk in list(due.values_list("pk", flat=True)[:100]):
        if not Anomaly.objects.filter(pk=pk, alert_state=AlertState.PENDING).update(alert_state=AlertState.SENDING):
            continue  # another process claimed it
        anomaly = Anomaly.objects.get(pk=pk)
        results = send(anomaly)
        ok = any(r.get("ok") for r in results.values())
        Anomaly.objects.filter(pk=pk).update(
            alert_state=AlertState.SENT if ok else AlertState.FAILED, alerted_at=now, alert_result=results
        )
        sent += int(ok)
    # The channels' own queue: new deliveries, retries that are due, reminders.
    notifications.remind_due(now)
    # (what this pass queued is stamped with the wall clock, and is due now too)
    notifications.deliver_due(max(now, timezone.now()))
    return sent
