"""Notifications through Apprise: one mechanism for every channel kind it knows.

``notify()`` writes one pending Delivery per enabled channel whose route matches
(severity and tags); ``deliver_due()`` claims due deliveries with a conditional
UPDATE, sends each through Apprise, records the attempt, and retries failures with
exponential backoff until ``MAX_ATTEMPTS``. ``remind_due()`` repeats open problems on
channels that ask for reminders; callers say what is still open through
``register_open_events`` (anomalies register themselves below).

Channel URLs hold credentials: they leave only through ``mask_url`` (Apprise's privacy
mode, then the project's redaction), and error texts are redacted too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import apprise
from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from orchestration.core import outbound
from orchestration.core.choices import DeliveryStatus
from orchestration.core.models.ledger import record
from orchestration.core.models.notifications import Delivery, DeliveryAttempt, NotificationChannel
from orchestration.core.redaction import MASK, redact_text

log = logging.getLogger("orchestration.notifications")

MAX_ATTEMPTS = 5
CLAIM_SECONDS = 120  # a sender that died mid-send gives its claim back after this
BATCH = 100


# --- pure -----------------------------------------------------------------------------
def routes_to(severities: Sequence[str], tags: Sequence[str], severity: str, event_tags: Iterable[str]) -> bool:
    """Whether a channel with these filters takes this notification (empty filter: all)."""
    if severities and severity not in severities:
        return False
    return not tags or bool(set(tags) & set(event_tags))


EMAIL_SCHEMES = ("mailto", "mailtos")


def is_email_url(url: str) -> bool:
    return url.strip().split("://", 1)[0].lower() in EMAIL_SCHEMES


def addressed_to(url: str, address: str) -> str:
    """An e-mail channel's URL sending to ``address`` only (a person's own notice)."""
    parts = urlsplit(url.strip())
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() not in ("to", "cc", "bcc")]
    return urlunsplit(parts._replace(query=urlencode([*query, ("to", address)])))


def message_with_links(body: str, links: dict[str, str]) -> str:
    """The body as sent: a person's links one a line (``approve: https://…``), last."""
    if not links:
        return body
    return body + "\n" + "".join(f"\n{name}: {url}" for name, url in links.items())


def settings_channel_urls(
    webhook_url: str, emails: list[str], *, sender: str, host: str, port: int, user: str, password: str, tls: bool
) -> dict[str, str]:
    """The Apprise URLs of the channels the old settings described (``FLEET_ALERT_WEBHOOK_URL``,
    ``FLEET_ALERT_EMAILS`` through Django's SMTP settings), by channel name."""
    urls: dict[str, str] = {}
    if webhook_url:
        parts = urlsplit(webhook_url)
        scheme = {"http": "json", "https": "jsons"}.get(parts.scheme.lower())
        if scheme:
            urls[SETTINGS_WEBHOOK] = urlunsplit(parts._replace(scheme=scheme))
    if emails:
        credentials = f"{quote(user, safe='')}:{quote(password, safe='')}@" if user else ""
        query = urlencode({"from": sender, "to": ",".join(emails), "smtp": host})
        urls[SETTINGS_EMAIL] = f"{'mailtos' if tls else 'mailto'}://{credentials}{host}:{port}?{query}"
    return urls


SETTINGS_WEBHOOK = "webhook (FLEET_ALERT_WEBHOOK_URL)"
SETTINGS_EMAIL = "e-mail (FLEET_ALERT_EMAILS)"
# The severities the old fixed routes sent to each (webhook: critical and high; e-mail: critical).
SETTINGS_SEVERITIES = {SETTINGS_WEBHOOK: ["critical", "high"], SETTINGS_EMAIL: ["critical"]}


def backoff_seconds(attempts: int, *, base: float = 30.0, cap: float = 3600.0) -> float:
    """Wait before the next try after ``attempts`` failed ones: 30 s, 60 s, 2 min… ≤ 1 h."""
    return min(cap, base * 2 ** max(0, attempts - 1))


# --- URLs -----------------------------------------------------------------------------
def _plugin(url: str) -> Any:
    return apprise.Apprise.instantiate(url.strip()) if url.strip() else None


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a channel's URL (checked when written), or None."""
    plugin = _plugin(url)
    if plugin is None:
        return "Not a notification URL Apprise knows (e.g. ntfy://topic, slack://…, json://host/path, mailto://…)."
    host = getattr(plugin, "host", None)
    if isinstance(host, str) and host:
        refused = outbound.host_problem(host, getattr(plugin, "port", None))
        if refused:
            return f"Outbound call refused: {refused}."
    return None


def mask_url(url: str) -> str:
    plugin = _plugin(url)
    if plugin is None:
        return MASK
    return redact_text(plugin.url(privacy=True))


# --- sending ----------------------------------------------------------------------------
def _notify_type(severity: str) -> str:
    if severity in ("critical", "high"):
        return apprise.NotifyType.FAILURE
    if severity == "medium":
        return apprise.NotifyType.WARNING
    return apprise.NotifyType.INFO


def send_now(url: str, title: str, body: str, severity: str) -> str | None:
    """One try through Apprise; None on success, else the (redacted) reason."""
    problem = url_problem(url)
    if problem:
        return redact_text(problem)
    sender = apprise.Apprise()
    sender.add(url)
    with apprise.LogCapture(level=logging.WARNING) as logs:
        # Plain text in: lines (a person's links, one a line) survive into HTML e-mail too.
        ok = sender.notify(
            title=title, body=body or title, notify_type=_notify_type(severity), body_format=apprise.NotifyFormat.TEXT
        )
        text = logs.getvalue().strip()
    if ok:
        return None
    return redact_text(text.splitlines()[-1] if text else "the service refused the notification")[:500]


def _attempt(delivery: Delivery, now: datetime) -> bool:
    started = time.perf_counter()
    url = delivery.channel.url
    if delivery.recipient and is_email_url(url):
        url = addressed_to(url, delivery.recipient)
    try:
        error = send_now(url, delivery.title, message_with_links(delivery.body, delivery.links), delivery.severity)
    except Exception as exc:  # a plugin's bug is this delivery's failure, not the sweep's
        error = redact_text(f"{type(exc).__name__}: {exc}")[:500]
    DeliveryAttempt.objects.create(
        delivery=delivery,
        attempted_at=now,
        ok=error is None,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
        error=error or "",
    )
    attempts = delivery.attempts + 1
    if error is None:
        fields: dict[str, Any] = {"status": DeliveryStatus.SENT, "sent_at": now, "last_error": ""}
    elif attempts >= MAX_ATTEMPTS:
        fields = {"status": DeliveryStatus.FAILED, "last_error": error}
    else:
        fields = {
            "status": DeliveryStatus.PENDING,
            "last_error": error,
            "next_attempt_at": now + timedelta(seconds=backoff_seconds(attempts)),
        }
    Delivery.objects.filter(pk=delivery.pk).update(attempts=attempts, **fields)
    for key, value in {"attempts": attempts, **fields}.items():
        setattr(delivery, key, value)
    return error is None


# --- queueing and delivery ---------------------------------------------------------------
def notify(
    event: str, severity: str, title: str, body: str = "", *, tags: Iterable[str] = (), reminder: bool = False
) -> list[Delivery]:
    """Queue the notification for every enabled channel whose route takes it."""
    tags = sorted(set(tags))
    title, body = redact_text(title)[:250], redact_text(body)
    now = timezone.now()
    rows = [
        Delivery(
            channel=channel,
            event=event[:200],
            severity=severity,
            tags=tags,
            title=title,
            body=body,
            reminder=reminder,
            next_attempt_at=now,
            created_at=now,
        )
        for channel in NotificationChannel.objects.filter(enabled=True)
        if routes_to(channel.severities, channel.tags, severity, tags)
    ]
    return Delivery.objects.bulk_create(rows)


def notify_channels(
    channels: Iterable[NotificationChannel],
    event: str,
    severity: str,
    title: str,
    body: str = "",
    *,
    reminder: bool = False,
) -> list[Delivery]:
    """Queue the notification for these channels whatever their own routes (an
    escalation tier names its channels)."""
    title, body = redact_text(title)[:250], redact_text(body)
    now = timezone.now()
    rows = [
        Delivery(
            channel=channel,
            event=event[:200],
            severity=severity,
            title=title,
            body=body,
            reminder=reminder,
            next_attempt_at=now,
            created_at=now,
        )
        for channel in channels
    ]
    return Delivery.objects.bulk_create(rows)


def notify_person(
    event: str, title: str, body: str, *, recipient: str, email: str = "", links: dict[str, str] | None = None
) -> list[Delivery]:
    """Queue a person's notice on every enabled channel that carries notices (an e-mail
    channel only when the person has an address, and then to it alone), then try each
    at once; a failed try is retried by ``deliver_due`` like every delivery."""
    now = timezone.now()
    rows = [
        Delivery(
            channel=channel,
            event=event[:200],
            severity="info",
            tags=[],
            title=redact_text(title)[:250],
            body=redact_text(body),
            recipient=email if is_email_url(channel.url) else recipient[:254],
            links=dict(links or {}),
            next_attempt_at=now,
            created_at=now,
        )
        for channel in NotificationChannel.objects.filter(enabled=True, notices=True)
        if email or not is_email_url(channel.url)
    ]
    created = Delivery.objects.bulk_create(rows)
    for delivery in Delivery.objects.filter(pk__in=[d.pk for d in created]).select_related("channel"):
        if claim(delivery, now):
            _attempt(delivery, now)
    return list(Delivery.objects.filter(pk__in=[d.pk for d in created]).select_related("channel"))


def sync_settings_channels(**_: Any) -> list[str]:
    """Make the channels the old settings describe (after migrate): created once, their
    URL kept current while the setting is set; a person may disable or re-route them."""
    urls = settings_channel_urls(
        settings.FLEET_ALERT_WEBHOOK_URL,
        list(settings.FLEET_ALERT_EMAILS),
        sender=settings.FLEET_ALERT_EMAIL_FROM,
        host=settings.EMAIL_HOST,
        port=settings.EMAIL_PORT,
        user=settings.EMAIL_HOST_USER,
        password=settings.EMAIL_HOST_PASSWORD,
        tls=bool(settings.EMAIL_USE_TLS or settings.EMAIL_USE_SSL),
    )
    changed = []
    for name, url in urls.items():
        channel, created = NotificationChannel.objects.get_or_create(
            name=name, defaults={"url": url, "severities": SETTINGS_SEVERITIES[name], "notices": True}
        )
        if created or channel.url != url:
            NotificationChannel.objects.filter(pk=channel.pk).update(url=url)
            changed.append(name)
            record(
                "channel.created" if created else "channel.updated",
                # (no URL here: a webhook's path often is its token, which masking cannot tell)
                f"Notification channel {name} {'made' if created else 'updated'} from the settings",
                subject=f"channel:{name}",
                actor="settings",
            )
    return changed


def claim(delivery: Delivery, now: datetime) -> bool:
    """Compare-and-swap on (status, next_attempt_at): one sender per try."""
    return bool(
        Delivery.objects.filter(
            pk=delivery.pk,
            status__in=[DeliveryStatus.PENDING, DeliveryStatus.SENDING],
            next_attempt_at=delivery.next_attempt_at,
        ).update(status=DeliveryStatus.SENDING, next_attempt_at=now + timedelta(seconds=CLAIM_SECONDS))
    )


def deliver_due(now: datetime | None = None) -> dict[str, int]:
    """Try every due delivery once (pending ones due, and sends whose claim lapsed)."""
    now = now or timezone.now()
    done = {"sent": 0, "failed": 0}
    due = (
        Delivery.objects.filter(status__in=[DeliveryStatus.PENDING, DeliveryStatus.SENDING], next_attempt_at__lte=now)
        .select_related("channel")
        .order_by("next_attempt_at")[:BATCH]
    )
    for delivery in list(due):
        if not claim(delivery, now):
            continue  # another sender has it
        done["sent" if _attempt(delivery, now) else "failed"] += 1
    return done


def send_test(channel: NotificationChannel, *, actor: str) -> Delivery:
    now = timezone.now()
    with transaction.atomic():
        delivery = Delivery.objects.create(
            channel=channel,
            event="test",
            severity="info",
            title="Test notification from the orchestrator",
            body=f"Sent by {actor} to check the channel {channel.name}.",
            status=DeliveryStatus.SENDING,
            next_attempt_at=now + timedelta(seconds=CLAIM_SECONDS),
            created_at=now,
        )
    ok = _attempt(delivery, now)
    record(
        "notification.test_sent",
        f"Test notification to {channel.name} by {actor}: {'sent' if ok else 'failed: ' + delivery.last_error}",
        subject=f"channel:{channel.name}",
        actor=actor,
        data={"delivery": delivery.pk, "ok": ok},
    )
    return delivery


# --- reminders ---------------------------------------------------------------------------
# event key prefix → callable giving the still-open events: {event: (severity, title, tags)}
_OPEN_EVENTS: dict[str, Callable[[], dict[str, tuple[str, str, list[str]]]]] = {}


def register_open_events(prefix: str, source: Callable[[], dict[str, tuple[str, str, list[str]]]]) -> None:
    _OPEN_EVENTS[prefix] = source


def remind_due(now: datetime | None = None) -> int:
    """Queue a reminder on each reminding channel for every open event it was last told
    about longer ago than its interval. Returns how many were queued."""
    now = now or timezone.now()
    channels = list(NotificationChannel.objects.filter(enabled=True, remind_every_minutes__isnull=False))
    if not channels:
        return 0
    open_events: dict[str, tuple[str, str, list[str]]] = {}
    for source in _OPEN_EVENTS.values():
        open_events.update(source())
    queued = 0
    for channel in channels:
        last = dict(
            Delivery.objects.filter(channel=channel, event__in=list(open_events))
            .values("event")
            .annotate(at=Max("created_at"))
            .values_list("event", "at")
        )
        for event, at in last.items():
            if at > now - timedelta(minutes=channel.remind_every_minutes):
                continue
            severity, title, tags = open_events[event]
            Delivery.objects.create(
                channel=channel,
                event=event,
                severity=severity,
                tags=tags,
                title=f"Reminder: {title}"[:250],
                body=f"Still open; last notified at {at:%Y-%m-%d %H:%M} UTC.",
                reminder=True,
                next_attempt_at=now,
                created_at=now,
            )
            queued += 1
    return queued
