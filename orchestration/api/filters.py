from __future__ import annotations

from datetime import UTC, datetime

import django_filters
from django import forms
from django.db import connections
from django_filters.fields import IsoDateTimeField

from orchestration.choices import JobStatus, Severity
from orchestration.models import Action, Job, LedgerEntry


class UtcIsoDateTimeField(IsoDateTimeField):
    """An ISO 8601 date-time, compared in UTC.

    Any offset Python parses (up to ±23:59) is accepted in the query string, but
    PostgreSQL refuses offsets past ±15:59 ("time zone displacement out of range"),
    which made ``?since=…+23:36`` a server error on the scale profile. In UTC the
    offset is gone; a date that UTC cannot hold (year 1 minus an offset) is a 400.
    """

    def to_python(self, value):
        parsed = super().to_python(value)
        if not isinstance(parsed, datetime) or parsed.tzinfo is None:
            return parsed
        try:
            return parsed.astimezone(UTC)
        except OverflowError:
            raise forms.ValidationError("Date-time out of range.", code="invalid") from None


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcIsoDateTimeField


class JobFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=JobStatus.choices)

    class Meta:
        model = Job
        fields = ["status", "kind", "lane", "priority", "reference"]


def prefix_upper_bound(prefix: str) -> str | None:
    """The smallest string after every string that starts with ``prefix`` (in code
    point order), or None when there is none (a prefix of U+10FFFF only)."""
    while prefix and ord(prefix[-1]) == 0x10FFFF:
        prefix = prefix[:-1]
    return prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else None


def startswith_by_index(queryset, field: str, prefix: str):
    """``field`` starts with ``prefix``, answered from an index led by ``field``.

    SQLite never answers ``LIKE 'x%' ESCAPE '\\'`` (Django's startswith) from an index,
    but a range in its BINARY collation is exactly the prefix. PostgreSQL answers the
    LIKE from an index with varchar_pattern_ops (a range under a language collation
    would not be the prefix).
    """
    if not prefix:
        return queryset
    if queryset.db and connections[queryset.db].vendor == "postgresql":
        return queryset.filter(**{f"{field}__startswith": prefix})
    upper = prefix_upper_bound(prefix)
    bounds = {f"{field}__gte": prefix, **({f"{field}__lt": upper} if upper else {})}
    return queryset.filter(**bounds)


def event_type_prefix(queryset, prefix: str):
    """Ledger entries whose event type starts with ``prefix``, newest first from an
    index: a prefix holding a whole namespace (``orchestrator.``,
    ``orchestrator.cycle_``) is an equality on ``event_group`` (ordered by
    ledger_group_idx), the rest of it a range; a shorter prefix is a range alone."""
    group, dot, rest = prefix.partition(".")
    if not dot:
        return startswith_by_index(queryset, "event_type", prefix)
    queryset = queryset.filter(event_group=f"{group}.")
    return startswith_by_index(queryset, "event_type", prefix) if rest else queryset


class LedgerFilter(django_filters.FilterSet):
    event_type = django_filters.CharFilter(
        method="filter_event_type", help_text="Prefix match: 'orchestrator.' matches every loop event."
    )
    severity = django_filters.ChoiceFilter(choices=Severity.choices)
    since = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    subject = django_filters.CharFilter()
    actor = django_filters.CharFilter()

    class Meta:
        model = LedgerEntry
        fields = ["event_type", "severity", "since", "subject", "actor"]

    def filter_event_type(self, queryset, name: str, value: str):
        return event_type_prefix(queryset, value)


class ActionFilter(django_filters.FilterSet):
    class Meta:
        model = Action
        fields = ["action_type", "status", "cycle", "rule"]
