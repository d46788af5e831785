from __future__ import annotations

from typing import Any

from django.db import connections, models
from django.db.models import Value
from django.db.models.functions import StrIndex, Substr
from django.utils import timezone

from orchestration.core.choices import Severity
from orchestration.core.redaction import redact, redact_text
from orchestration.core.storedjson import JSONField


class LedgerEntryQuerySet(models.QuerySet):
    def errors(self):
        return self.filter(severity__in=(Severity.ERROR, Severity.CRITICAL))


class LedgerEntry(models.Model):
    """Append-only audit trail: every decision, action and write, with who did it."""

    event_type = models.CharField(max_length=100)
    severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.INFO)
    subject = models.CharField(max_length=200, blank=True)
    message = models.TextField(blank=True)
    data = JSONField(default=dict, blank=True)
    actor = models.CharField(max_length=150, blank=True, default="system")
    created_at = models.DateTimeField(default=timezone.now)
    # The event type's namespace with its dot ("orchestrator." of
    # "orchestrator.cycle_idle"; "" without a dot), computed by the database: the
    # prefix filter of a whole namespace is an equality, so its newest rows are one
    # ordered range of ledger_group_idx, never a range of every match then a sort.
    event_group = models.GeneratedField(
        expression=Substr("event_type", 1, StrIndex("event_type", Value("."))),
        output_field=models.CharField(max_length=100),
        db_persist=True,
    )

    objects = LedgerEntryQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "ledger entries"
        indexes = [
            models.Index(fields=["-created_at"], name="ledger_created_idx"),
            # monitor: errors in the last hour.
            models.Index(fields=["severity", "created_at"], name="ledger_severity_idx"),
            models.Index(fields=["event_group", "created_at", "id"], name="ledger_group_idx"),
            # The event_type prefix filter: a range of this index on SQLite, and on
            # PostgreSQL a LIKE 'x%' that varchar_pattern_ops answers whatever the collation.
            models.Index(
                fields=["event_type", "created_at"],
                opclasses=["varchar_pattern_ops", ""],
                name="ledger_event_prefix_idx",
            ),
            # The API's and the admin's subject and actor filters.
            models.Index(fields=["subject", "created_at"], name="ledger_subject_idx"),
            models.Index(fields=["actor", "created_at"], name="ledger_actor_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.event_type}"


def ledger_entry(
    event_type: str,
    message: str = "",
    *,
    severity: str = Severity.INFO,
    subject: str = "",
    data: dict[str, Any] | None = None,
    actor: str = "system",
) -> LedgerEntry:
    """An unsaved entry, for callers that write several at once with bulk_create."""
    return LedgerEntry(
        event_type=event_type,
        severity=severity,
        # No secret reaches the ledger: not a worker target's Authorization header, nor a
        # webhook's token inside an error text quoted in the message.
        subject=redact_text(subject)[:200],
        message=redact_text(message),
        data=redact(data or {}),
        actor=(actor or "system")[:150],
        created_at=timezone.now(),
    )


def record(event_type: str, message: str = "", **kwargs: Any) -> LedgerEntry:
    """Write one ledger entry now."""
    return _insert(ledger_entry(event_type, message, **kwargs))


_INSERT_TEXT: dict[str, tuple[str, list[models.Field], list[models.Field]]] = {}


def _insert(entry: LedgerEntry) -> LedgerEntry:
    """INSERT ``entry`` as save(force_insert=True) would, reading back its id and the
    columns the database computes. The text is made once per database: every worker
    run writes an entry, and compiling the ORM's INSERT cost more than running it."""
    connection = connections[LedgerEntry.objects.db]
    cached = _INSERT_TEXT.get(connection.vendor)
    if cached is None:
        quote = connection.ops.quote_name
        fields = [f for f in LedgerEntry._meta.concrete_fields if not f.primary_key and not f.generated]
        returning = LedgerEntry._meta.db_returning_fields
        text = (
            f"INSERT INTO {quote(LedgerEntry._meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
            f"VALUES ({', '.join(['%s'] * len(fields))}) RETURNING {', '.join(quote(f.column) for f in returning)}"
        )
        cached = _INSERT_TEXT[connection.vendor] = (text, fields, returning)
    text, fields, returning = cached
    params = [field.get_db_prep_save(field.pre_save(entry, True), connection) for field in fields]
    with connection.cursor() as cursor:
        cursor.execute(text, params)
        row = cursor.fetchone()
    for value, field in zip(row, returning, strict=True):
        setattr(entry, field.attname, value)
    entry._state.adding, entry._state.db = False, connection.alias
    return entry
