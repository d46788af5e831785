"""Filter fields and the filter backend every API shares; each app's filtersets are in
its own ``api`` package."""

from __future__ import annotations

from datetime import UTC, datetime

import django_filters
from django import forms
from django.db import connections
from django_filters.fields import IsoDateTimeField
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema_field


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


@extend_schema_field({"type": "integer", "minimum": 1, "maximum": 2**63 - 1})
class IdFilter(django_filters.NumberFilter):
    """An object's id: an integer (a NumberFilter takes 1.5, and past 2**63 the database
    refuses the value)."""

    field_class = forms.IntegerField


class StrictBooleanField(forms.Field):
    """A boolean filter's value: true/false (1/0), else a 400 naming the parameter.

    django-filter's own field reads anything else as "no filter": ``?enabled=yes`` answered
    every row, as if the client had not asked."""

    TRUE, FALSE = ("true", "1"), ("false", "0")

    def to_python(self, value):
        if value is None:
            return None
        text = str(value).strip().lower()
        if text in self.TRUE:
            return True
        if text in self.FALSE:
            return False
        raise forms.ValidationError("Use true or false.", code="invalid")


class StrictFilterBackend(DjangoFilterBackend):
    """Filters of a list: booleans strict (above); operations other than the list itself
    (a worker's runs, a service's checks) take none of the list's filters — they ignored
    them, while the schema listed them."""

    def get_filterset_class(self, view, queryset=None):
        if getattr(view, "action", "list") not in ("list", None):
            return None
        return super().get_filterset_class(view, queryset)

    def get_filterset(self, request, queryset, view):
        filterset = super().get_filterset(request, queryset, view)
        if filterset is not None:
            # An empty value is not one of a choice filter's values (the schema's enum):
            # django-filter would ignore it and answer every row.
            for name, item in filterset.filters.items():
                if isinstance(item, django_filters.ChoiceFilter) and "" in request.query_params.getlist(name):
                    from rest_framework.exceptions import ValidationError

                    choices = ", ".join(str(value) for value, _ in item.extra.get("choices", []) if value != "")
                    raise ValidationError({name: [f"Must be one of: {choices}."]})
            for item in filterset.filters.values():
                if isinstance(item, django_filters.BooleanFilter):
                    item.field_class = StrictBooleanField
                    # The REST boolean widget reads "maybe" as no value before the field sees it.
                    item.extra["widget"] = forms.TextInput
                    item.__dict__.pop("_field", None)  # a field built before from the lax class
        return filterset
