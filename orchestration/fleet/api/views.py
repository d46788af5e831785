"""REST API of the fleet (API.md "Workers"): workers by name, runs, score reports,
anomalies and the fleet summary. Views are thin: behaviour lives in runner/specs."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

import django_filters
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from orchestration.core.choices import AnomalySeverity, Priority
from orchestration.core.models import Anomaly
from orchestration.core.redaction import MaskedSecretError, redact, restore
from orchestration.fleet import specs
from orchestration.fleet.choices import (
    FAILED_RUN_STATUSES,
    ExecutionModel,
    OverlapPolicy,
    ReportPeriod,
    RunStatus,
    WorkerCategory,
)
from orchestration.fleet.firing import BackfillError
from orchestration.fleet.loop import workers_section
from orchestration.fleet.models import ScoreReport, Worker, WorkerRun
from orchestration.fleet.runner import trigger
from orchestrator_site.api.errors import object_body
from orchestrator_site.api.pagination import KeysetPagination
from orchestrator_site.api.permissions import require_run_code
from orchestrator_site.api.viewsets import AuditedModelViewSet, actor_of

RESERVED_NAMES = {"status"}


# --- serializers --------------------------------------------------------------------
@extend_schema_field({"type": "object", "additionalProperties": True})
class TargetField(serializers.JSONField):
    """A worker's target is an object (python or http): null or a list is a 400, as the
    schema now says (it documented any JSON value)."""


@extend_schema_field({"type": "object", "additionalProperties": True, "nullable": True})
class SchemaField(serializers.JSONField):
    """A JSON Schema (an object) or null."""


class WorkerSerializer(serializers.ModelSerializer):
    name = serializers.SlugField(max_length=80)
    category = serializers.ChoiceField(choices=WorkerCategory.choices)
    execution_model = serializers.ChoiceField(choices=ExecutionModel.choices, default=ExecutionModel.SCHEDULED)
    overlap = serializers.ChoiceField(choices=OverlapPolicy.choices, default=OverlapPolicy.SKIP)
    timezone = serializers.CharField(max_length=64, default="UTC")
    output_schema = SchemaField(required=False, allow_null=True)
    priority = serializers.ChoiceField(choices=Priority.choices, default=Priority.NORMAL)
    depends_on = serializers.JSONField(required=False, default=list)
    optional_depends_on = serializers.JSONField(required=False, default=list)
    target = TargetField()
    cadence = serializers.SerializerMethodField()
    next_run_at = serializers.SerializerMethodField()
    breaker_state = serializers.SerializerMethodField()
    # Blank until the first run: the schema must list "" beside the run statuses.
    last_status = serializers.ChoiceField(choices=RunStatus.choices, allow_blank=True, read_only=True)

    class Meta:
        model = Worker
        fields = [
            "name",
            "description",
            "category",
            "execution_model",
            "interval_seconds",
            "cron",
            "timezone",
            "cadence",
            "timeout_seconds",
            "max_timeout_seconds",
            "expected_duration_seconds",
            "freshness_seconds",
            "depends_on",
            "optional_depends_on",
            "run_after_upstream",
            "target",
            "enabled",
            "priority",
            "overlap",
            "catch_up_seconds",
            "jitter_seconds",
            "pause_after_failures",
            "paused",
            "paused_at",
            "paused_reason",
            "consecutive_failures",
            "missed_runs",
            "output_schema",
            "builtin",
            "rate_factor",
            "lock_timeout_seconds",
            "lock_failures",
            "last_run_at",
            "last_status",
            "last_success_at",
            "last_score",
            "next_run_at",
            "breaker_state",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            "paused",
            "paused_at",
            "paused_reason",
            "consecutive_failures",
            "missed_runs",
            "builtin",
            "rate_factor",
            "lock_failures",
            "last_run_at",
            "last_status",
            "last_success_at",
            "last_score",
            "created_at",
            "updated_at",
        ]

    def get_cadence(self, obj: Worker) -> str:
        return obj.cadence_text()

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_next_run_at(self, obj: Worker) -> str | None:
        value = None if obj.paused else obj.next_due_at
        return value.isoformat() if value else None

    def get_breaker_state(self, obj: Worker) -> str:
        return obj.breaker_state

    def to_representation(self, instance: Worker) -> dict:
        data = super().to_representation(instance)
        data["target"] = redact(data["target"])
        return data

    def validate_name(self, value: str) -> str:
        if value in RESERVED_NAMES:
            raise serializers.ValidationError(f"{value!r} is reserved.")
        if self.instance is not None and value != self.instance.name:
            raise serializers.ValidationError("A worker cannot be renamed; create a new one.")
        return value

    def validate(self, attrs):
        merged = (
            {f: getattr(self.instance, f) for f in self.Meta.fields if hasattr(self.instance, f)}
            if self.instance
            else {}
        )
        merged.update(attrs)
        target = merged.get("target")
        if isinstance(target, Mapping):
            # Reads mask secret headers; writing a read back sends the mask: keep the stored value.
            try:
                merged["target"] = restore(target, self.instance.target if self.instance is not None else None)
            except MaskedSecretError as exc:
                raise serializers.ValidationError({"target": str(exc)}) from None
        try:
            checked = Worker.check_fields(merged)
        except specs.SpecError as exc:
            raise serializers.ValidationError(exc.errors) from None
        attrs["target"] = checked["target"]
        if specs.defines_code(attrs["target"], self.instance.target if self.instance is not None else None):
            require_run_code(self.context)
        for name in ("depends_on", "optional_depends_on"):
            if name in attrs:
                attrs[name] = checked[name]
        return attrs


class WorkerRunSerializer(serializers.ModelSerializer):
    worker = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = WorkerRun
        fields = [
            "id",
            "worker",
            "execution_id",
            "trigger",
            "status",
            "due_at",
            "queued_at",
            "started_at",
            "completed_at",
            "success",
            "duration_ms",
            "timeout_seconds",
            "metrics",
            "error",
            "skipped_reason",
            "skipped_detail",
            "job",
        ]
        read_only_fields = fields


class ScoreReportSerializer(serializers.ModelSerializer):
    worker = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = ScoreReport
        fields = [
            "id",
            "worker",
            "execution_id",
            "period",
            "period_start",
            "runs",
            "started_at",
            "completed_at",
            "success",
            "duration_ms",
            "reliability_score",
            "performance_score",
            "data_quality_score",
            "resource_score",
            "overall_score",
            "anomalies",
            "recommendations",
            "metrics",
            "created_at",
        ]
        read_only_fields = fields


class AnomalySerializer(serializers.ModelSerializer):
    # Null for anomalies about the system rather than one worker (a queue overflow).
    worker = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)
    open = serializers.BooleanField(source="is_open", read_only=True)

    class Meta:
        model = Anomaly
        fields = [
            "id",
            "code",
            "severity",
            "subject",
            "worker",
            "details",
            "detected_at",
            "last_seen_at",
            "occurrences",
            "resolved_at",
            "open",
            "recovery",
            "recovery_attempts",
            "escalated_at",
            "escalation_tier",
            "last_escalation_at",
            "acknowledged_by",
            "acknowledged_at",
            "acknowledge_notes",
            "resolved_by",
            "resolve_notes",
            "alert_state",
            "alerted_at",
        ]
        read_only_fields = fields


class AnomalyNotesSerializer(serializers.Serializer):
    notes = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")


# --- filters --------------------------------------------------------------------------
class WorkerFilter(django_filters.FilterSet):
    class Meta:
        model = Worker
        fields = ["category", "execution_model", "enabled", "builtin"]


class ScoreReportFilter(django_filters.FilterSet):
    worker = django_filters.CharFilter(field_name="worker__name")
    period = django_filters.ChoiceFilter(choices=ReportPeriod.choices)

    class Meta:
        model = ScoreReport
        fields = ["worker", "period", "success"]


class AnomalyFilter(django_filters.FilterSet):
    severity = django_filters.ChoiceFilter(choices=AnomalySeverity.choices)
    open = django_filters.BooleanFilter(field_name="resolved_at", lookup_expr="isnull")
    worker = django_filters.CharFilter(field_name="worker__name")

    class Meta:
        model = Anomaly
        fields = ["severity", "open", "code", "subject", "worker"]


# --- views ----------------------------------------------------------------------------
_RUN_QUEUED = inline_serializer(
    "WorkerRunQueued",
    {"run_id": serializers.IntegerField(), "execution_id": serializers.CharField(), "status": serializers.CharField()},
)


_NEXT_RUNS = inline_serializer("WorkerNextRuns", {"runs": serializers.ListField(child=serializers.DateTimeField())})
_BACKFILLED = inline_serializer("WorkerBackfilled", {"queued": serializers.IntegerField()})


class BackfillSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()


class WorkerViewSet(AuditedModelViewSet):
    queryset = Worker.objects.select_related("circuit")
    serializer_class = WorkerSerializer
    filterset_class = WorkerFilter
    lookup_field = "name"
    lookup_value_regex = "[-a-zA-Z0-9_]+"
    ledger_prefix = "worker"

    def perform_destroy(self, instance: Worker):
        instance.remove(actor=actor_of(self.request))

    @extend_schema(request=None, responses={202: _RUN_QUEUED, 409: OpenApiResponse(description="Worker disabled")})
    @action(detail=True, methods=["post"])
    def trigger(self, request, name=None):
        with transaction.atomic():
            run = trigger(self.get_object(), actor=actor_of(request))
        return Response(
            {"run_id": run.pk, "execution_id": run.execution_id, "status": run.status}, status=status.HTTP_202_ACCEPTED
        )

    def _switch(self, request, enabled: bool) -> Response:
        worker = self.get_object()
        worker.set_enabled(enabled, actor=actor_of(request))
        return Response(self.get_serializer(worker).data)

    @extend_schema(request=None, responses={200: WorkerSerializer})
    @action(detail=True, methods=["post"])
    def enable(self, request, name=None):
        return self._switch(request, True)

    @extend_schema(request=None, responses={200: WorkerSerializer})
    @action(detail=True, methods=["post"])
    def disable(self, request, name=None):
        return self._switch(request, False)

    @extend_schema(responses={200: _NEXT_RUNS})
    @action(detail=True, methods=["get"], url_path="next-runs")
    def next_runs(self, request, name=None):
        return Response({"runs": [d.isoformat() for d in self.get_object().next_runs(5)]})

    @extend_schema(request=BackfillSerializer, responses={202: _BACKFILLED})
    @action(detail=True, methods=["post"])
    def backfill(self, request, name=None):
        worker = self.get_object()
        form = BackfillSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            queued = worker.backfill(form.validated_data["start"], form.validated_data["end"], actor=actor_of(request))
        except BackfillError as exc:
            raise serializers.ValidationError({exc.field: [str(exc)]}) from None
        return Response({"queued": queued}, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={200: WorkerSerializer})
    @action(detail=True, methods=["post"])
    def resume(self, request, name=None):
        worker = self.get_object()
        worker.resume(actor=actor_of(request))
        return Response(self.get_serializer(worker).data)

    @extend_schema(responses={200: WorkerRunSerializer(many=True)})
    @action(detail=True, methods=["get"], pagination_class=KeysetPagination)
    def runs(self, request, name=None):
        runs = WorkerRun.objects.filter(worker=self.get_object()).select_related("worker").order_by("-queued_at", "-id")
        page = self.paginate_queryset(runs)
        return self.get_paginated_response(WorkerRunSerializer(page, many=True).data)


class ScoreReportViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = ScoreReport.objects.select_related("worker").all()
    serializer_class = ScoreReportSerializer
    filterset_class = ScoreReportFilter


class AnomalyViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Anomaly.objects.select_related("worker").all()
    serializer_class = AnomalySerializer
    filterset_class = AnomalyFilter
    pagination_class = KeysetPagination

    def _write(self, request, verb: str) -> Response:
        body = AnomalyNotesSerializer(data=object_body(request))
        body.is_valid(raise_exception=True)
        anomaly = self.get_object()
        write = anomaly.acknowledge if verb == "acknowledge" else anomaly.resolve_by
        write(actor=actor_of(request), notes=body.validated_data["notes"])
        return Response(AnomalySerializer(anomaly).data)

    @extend_schema(
        request=AnomalyNotesSerializer,
        responses={200: AnomalySerializer, 409: OpenApiResponse(description="Resolved or already acknowledged")},
    )
    @action(detail=True, methods=["post"])
    def acknowledge(self, request, pk=None):
        """Someone is on it: its escalation stops."""
        return self._write(request, "acknowledge")

    @extend_schema(
        request=AnomalyNotesSerializer,
        responses={200: AnomalySerializer, 409: OpenApiResponse(description="Already resolved")},
    )
    @action(detail=True, methods=["post"])
    def resolve(self, request, pk=None):
        return self._write(request, "resolve")


def fleet_status(now=None) -> dict:
    """The fleet summary: counts plus one line per worker (constant queries)."""

    now = now or timezone.now()
    hour = now - timedelta(hours=1)
    open_by_worker = dict(
        Anomaly.objects.filter(resolved_at__isnull=True, worker__isnull=False)
        .values_list("worker__name")
        .annotate(n=Count("id"))
        .values_list("worker__name", "n")
    )
    rows = (
        Worker.objects.select_related("circuit")
        .annotate(
            runs_hour=Count("runs", filter=Q(runs__completed_at__gte=hour) & ~Q(runs__status=RunStatus.SKIPPED)),
            failures_hour=Count("runs", filter=Q(runs__completed_at__gte=hour, runs__status__in=FAILED_RUN_STATUSES)),
        )
        .order_by("name")
    )
    workers = {
        w.name: {
            "category": w.category,
            "enabled": w.enabled,
            "cadence": w.cadence_text(),
            "last_run_at": w.last_run_at.isoformat() if w.last_run_at else None,
            "last_status": w.last_status or None,
            "last_success_at": w.last_success_at.isoformat() if w.last_success_at else None,
            "last_score": w.last_score,
            "fresh": w.is_fresh(now),
            "next_run_at": w.next_due_at.isoformat() if w.next_due_at and not w.paused else None,
            "paused": w.paused,
            "locked": bool(w.lock_expires_at and w.lock_expires_at > now),
            "breaker_state": w.breaker_state,
            "runs_last_hour": w.runs_hour,
            "failures_last_hour": w.failures_hour,
            "open_anomalies": open_by_worker.get(w.name, 0),
        }
        for w in rows
    }
    return {"timestamp": now.isoformat(), "summary": workers_section(now), "workers": workers}


class FleetStatusView(APIView):
    @extend_schema(responses={200: inline_serializer("FleetStatus", {"summary": serializers.DictField()})})
    def get(self, request):
        return Response(fleet_status())
