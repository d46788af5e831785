"""Filtersets of the queue's, the ledger's and the loop's endpoints."""

from __future__ import annotations

import django_filters

from orchestration.core.choices import JobStatus, Severity
from orchestration.core.models import Job, LedgerEntry
from orchestration.loop.models import Action, GuardrailCounter
from orchestrator_site.api.filters import IdFilter, UtcIsoDateTimeFilter, event_type_prefix


class JobFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=JobStatus.choices)

    class Meta:
        model = Job
        fields = ["status", "kind", "lane", "priority", "reference"]


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
    # By id, as the schema says (an integer): an unknown rule finds nothing, like any
    # other filter value, instead of a 400 "not one of the available choices".
    rule = IdFilter(field_name="rule_id", min_value=1, max_value=2**63 - 1)

    class Meta:
        model = Action
        fields = ["action_type", "status", "cycle", "rule"]


class GuardrailFilter(django_filters.FilterSet):
    paused = django_filters.BooleanFilter(
        field_name="paused_at", lookup_expr="isnull", exclude=True, help_text="true: only what loop protection paused."
    )

    class Meta:
        model = GuardrailCounter
        fields = ["automation", "target", "paused"]
