from __future__ import annotations

import django_filters

from orchestration.choices import JobStatus, Severity
from orchestration.models import Action, Job, LedgerEntry


class JobFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=JobStatus.choices)

    class Meta:
        model = Job
        fields = ["status", "kind", "lane", "priority", "reference"]


class LedgerFilter(django_filters.FilterSet):
    event_type = django_filters.CharFilter(
        lookup_expr="startswith", help_text="Prefix match: 'orchestrator.' matches every loop event."
    )
    severity = django_filters.ChoiceFilter(choices=Severity.choices)
    since = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    subject = django_filters.CharFilter()
    actor = django_filters.CharFilter()

    class Meta:
        model = LedgerEntry
        fields = ["event_type", "severity", "since", "subject", "actor"]


class ActionFilter(django_filters.FilterSet):
    class Meta:
        model = Action
        fields = ["action_type", "status", "cycle", "rule"]
