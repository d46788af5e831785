"""Notification channels as data: each an Apprise URL (Slack, Teams, ntfy, e-mail, JSON
webhooks and the rest), routed by severity and tags; every message to a channel is a
Delivery, and every try of it a DeliveryAttempt."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone

from orchestration.core.choices import DeliveryStatus, NotifySeverity
from orchestration.core.storedjson import JSONField


class NotificationChannel(models.Model):
    name = models.CharField(max_length=100, unique=True)
    # Holds the receiver's credentials: shown only through ``masked_url``.
    url = models.TextField(help_text="An Apprise URL, e.g. ntfy://topic, slack://…, json://host/path, mailto://…")
    severities = JSONField(default=list, blank=True, help_text="Severities sent here; empty: all.")
    tags = JSONField(default=list, blank=True, help_text="Only notifications with one of these tags; empty: all.")
    remind_every_minutes = models.PositiveIntegerField(
        null=True, blank=True, help_text="Repeat while the problem stays open; empty: no reminders."
    )
    notices = models.BooleanField(
        default=False,
        help_text="Also carries people's own notices (a gate waiting for them, with their decision links); "
        "an e-mail channel sends each to the person's own address.",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        app_label = "orchestration"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def masked_url(self) -> str:
        from orchestration.core.notifications import mask_url

        return mask_url(self.url)

    def clean(self) -> None:
        from orchestration.core.notifications import url_problem

        super().clean()
        problem = url_problem(self.url or "")
        if problem:
            raise ValidationError({"url": problem})
        values = set(NotifySeverity.values)
        if not isinstance(self.severities, list) or not set(self.severities) <= values:
            raise ValidationError({"severities": f"A list of: {', '.join(NotifySeverity.values)}."})
        if not isinstance(self.tags, list) or not all(isinstance(t, str) and t.strip() for t in self.tags):
            raise ValidationError({"tags": "A list of labels (non-empty strings)."})

    def send_test(self, *, actor: str) -> Delivery:
        """Send a test message now (not queued), recorded like every delivery."""
        from orchestration.core.notifications import send_test

        return send_test(self, actor=actor)


class Delivery(models.Model):
    channel = models.ForeignKey(NotificationChannel, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=200, help_text="What it is about, e.g. anomaly:12 or test.")
    severity = models.CharField(max_length=10, choices=NotifySeverity.choices)
    tags = JSONField(default=list, blank=True)
    title = models.CharField(max_length=250)
    body = models.TextField(blank=True)
    reminder = models.BooleanField(default=False)
    # A person's notice: their address (e-mail channels send there) and their own signed
    # links, credentials of that person, added to the message only when it is sent.
    recipient = models.CharField(max_length=254, blank=True)
    links = JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    # When it may next be tried; while sending, when the claim lapses (a dead sender).
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        app_label = "orchestration"
        ordering = ["-created_at", "-id"]
        indexes = [
            # deliver_due: unfinished deliveries by due time.
            models.Index(
                fields=["next_attempt_at"],
                name="delivery_due_idx",
                condition=Q(status__in=["pending", "sending"]),
            ),
            # reminders and a channel's history.
            models.Index(fields=["channel", "event", "-created_at"], name="delivery_channel_event_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.channel} · {self.title} ({self.status})"

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.pk, "channel": self.channel.name, "status": self.status, "attempts": self.attempts}


class DeliveryAttempt(models.Model):
    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_log")
    attempted_at = models.DateTimeField(default=timezone.now)
    ok = models.BooleanField()
    duration_ms = models.FloatField(default=0)
    error = models.TextField(blank=True)

    class Meta:
        app_label = "orchestration"
        ordering = ["-attempted_at", "-id"]

    def __str__(self) -> str:
        return f"{self.delivery_id} {'ok' if self.ok else 'failed'} @ {self.attempted_at:%H:%M:%S}"
