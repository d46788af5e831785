"""Escalating open, unacknowledged anomalies by their policy's tiers (every severity a
policy covers, whether or not a recovery strategy exists; a recovery that did not clear
its anomaly escalates through a policy too). Each step is claimed with a conditional
UPDATE on the tier and time last sent, so two sweeps never send it twice; the first one
sets ``escalated_at``."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from django.db.models import Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from orchestration.core import alerts, notifications
from orchestration.core import escalation_rules as rules
from orchestration.core.choices import Severity
from orchestration.core.models import Anomaly, EscalationPolicy, NotificationChannel
from orchestration.core.models.ledger import record

BATCH = 200


def policy_for(policies: list[EscalationPolicy], anomaly: Anomaly) -> EscalationPolicy | None:
    """The first enabled policy by name that covers the anomaly."""
    return next(
        (
            p
            for p in policies
            if rules.covers(
                p.severities or [],
                anomaly.severity,
                after_recovery=p.after_recovery,
                recovery_attempts=anomaly.recovery_attempts,
            )
        ),
        None,
    )


def escalate_due(now: datetime | None = None) -> list[int]:
    """Send every escalation step that is due; returns the anomalies notified."""
    now = now or timezone.now()
    policies = list(EscalationPolicy.objects.filter(enabled=True).order_by("name"))
    if not policies:
        return []
    open_rows = Anomaly.objects.filter(resolved_at__isnull=True, acknowledged_at__isnull=True).order_by("detected_at")
    done = []
    for anomaly in open_rows[:BATCH]:
        policy = policy_for(policies, anomaly)
        if policy is None:
            continue
        try:
            tiers = rules.validate_tiers(policy.tiers)
        except rules.TierError:
            continue  # written before validation existed; the admin shows the problem
        step = rules.next_step(
            tiers,
            detected_at=anomaly.detected_at,
            current_tier=anomaly.escalation_tier,
            last_sent_at=anomaly.last_escalation_at,
            acknowledged=False,
            now=now,
        )
        if step is None:
            continue
        claimed = Anomaly.objects.filter(
            pk=anomaly.pk,
            escalation_tier=anomaly.escalation_tier,
            last_escalation_at=anomaly.last_escalation_at,
            acknowledged_at__isnull=True,
            resolved_at__isnull=True,
        ).update(escalation_tier=step.tier, last_escalation_at=now, escalated_at=Coalesce("escalated_at", Value(now)))
        if not claimed:
            continue  # another sweep sent it, or a person acknowledged it meanwhile
        anomaly.refresh_from_db()
        sent = _send(anomaly, step, policy)
        verb = "repeated" if step.repeat else "escalated"
        record(
            f"anomaly.escalation_{verb}" if step.repeat else "anomaly.escalated",
            f"{anomaly.code} on {anomaly.subject} {verb} to tier {step.tier} of {policy.name}: "
            f"unacknowledged for {int((now - anomaly.detected_at).total_seconds() // 60)} min",
            severity=Severity.CRITICAL if anomaly.severity == "critical" else Severity.ERROR,
            subject=anomaly.subject,
            data={"anomaly_id": anomaly.pk, "policy": policy.name, "tier": step.tier, "sent": sent},
        )
        done.append(anomaly.pk)
    return done


def _send(anomaly: Anomaly, step: rules.Step, policy: EscalationPolicy) -> dict[str, Any]:
    if not step.channels:
        return alerts.send(anomaly, escalated=True)
    alert = alerts.Alert.of(anomaly, escalated=True)
    title = f"{'Reminder: ' if step.repeat else ''}{alert.message} (tier {step.tier}, {policy.name})"
    body = f"Detected at {alert.detected_at}; nobody has acknowledged it yet."
    queued = notifications.notify_channels(
        list(NotificationChannel.objects.filter(enabled=True, name__in=step.channels)),
        f"anomaly:{anomaly.pk}:tier{step.tier}",
        anomaly.severity,
        title,
        body,
        reminder=step.repeat,
    )
    return {
        "queued": [d.channel.name for d in queued],
        "missing": sorted(set(step.channels) - {d.channel.name for d in queued}),
    }


class EscalationTick:
    """Runner tick hook: escalate, then send what is queued, every ``every`` seconds."""

    def __init__(self, every: float = 15.0) -> None:
        self.every = every
        self.last = 0.0
        self.__name__ = "anomaly_escalation"

    def __call__(self) -> object:
        if time.monotonic() - self.last < self.every:
            return None
        self.last = time.monotonic()
        now = timezone.now()
        escalated = escalate_due(now)
        if escalated:
            notifications.deliver_due(now)
        return {"escalated": escalated}


escalation_tick = EscalationTick()
