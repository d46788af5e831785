"""Routing endpoints (API.md "Routing")."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Count, Max, Q
from django.utils import timezone
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from health.models import Service
from orchestration.core.choices import Priority
from orchestration.loop.api.views import IDEMPOTENCY_KEY
from orchestration.routing import executor, improvement
from orchestration.routing.learning import confidence, percentile
from orchestration.routing.models import (
    OutlierState,
    RouteStat,
    Suggestion,
    TaskContext,
    TaskOutcome,
    TypeMultiplier,
)
from orchestration.routing.priority import PRIORITY_LEVELS, prioritize
from orchestration.routing.router import route
from orchestration.routing.strategies import strategy_names
from orchestrator_site.api.errors import object_body
from orchestrator_site.api.idempotency import idempotent
from orchestrator_site.api.schema import DESCRIPTIONS
from orchestrator_site.api.viewsets import AuditedModelViewSet, actor_of

PRIORITIES = list(PRIORITY_LEVELS)
SHORT_TERM = 100


class RouteRequest(serializers.Serializer):
    type = serializers.CharField(max_length=100)
    # The queue's own priorities (the same values as PRIORITY_LEVELS), so the schema has
    # one Priority enum.
    priority = serializers.ChoiceField(choices=Priority.choices, default=Priority.NORMAL)
    strategy = serializers.ChoiceField(choices=strategy_names(), required=False)
    requirements = serializers.DictField(required=False, default=dict)

    def validate_requirements(self, value):
        caps = value.get("capabilities", [])
        if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
            raise serializers.ValidationError("capabilities must be a list of task types.")
        return value


class TaskRequest(RouteRequest):
    data = serializers.DictField(required=False, default=dict)
    wait = serializers.BooleanField(required=False, default=False)
    wait_seconds = serializers.FloatField(required=False, default=30, min_value=0.1, max_value=300)
    context = serializers.SlugField(required=False, allow_blank=True, default="")


class PrioritizeRequest(serializers.Serializer):
    tasks = serializers.ListField(child=serializers.DictField(), max_length=10000)

    def validate_tasks(self, tasks):
        for index, task in enumerate(tasks):
            if task.get("priority", "normal") not in PRIORITY_LEVELS:
                raise serializers.ValidationError(f"task {index}: priority must be one of {', '.join(PRIORITIES)}.")
            if not isinstance(task.get("type", ""), str):
                raise serializers.ValidationError(f"task {index}: type must be a string.")
        return tasks


_ANY = inline_serializer("RoutingAnswer", {"status": serializers.CharField(required=False)})


class RouteView(APIView):
    @extend_schema(request=RouteRequest, responses={200: _ANY})
    def post(self, request):
        body = RouteRequest(data=request.data)
        body.is_valid(raise_exception=True)
        d = body.validated_data
        decision = route(d["type"], d["priority"], strategy=d.get("strategy"), requirements=d["requirements"])
        return Response(decision.as_dict())


class TaskView(APIView):
    @extend_schema(
        request=TaskRequest,
        parameters=[IDEMPOTENCY_KEY],
        responses={202: _ANY, 200: _ANY, 422: OpenApiResponse(description=DESCRIPTIONS["422"])},
    )
    def post(self, request):
        body = TaskRequest(data=request.data)
        body.is_valid(raise_exception=True)
        d = body.validated_data
        with idempotent(request) as claim:
            if claim.replay is not None:
                return claim.replay
            job, decision = executor.submit(
                d["type"],
                d["priority"],
                d["data"],
                strategy=d.get("strategy"),
                context=d["context"],
                actor=actor_of(request),
            )
            # Kept with the job: a retry while this request still waits gets the job's id.
            first = claim.save(self._answer(job, decision))
        if not d["wait"]:
            return first
        job = executor.wait_for_job(job, timeout=d["wait_seconds"])
        return claim.save(self._answer(job, decision))

    @staticmethod
    def _answer(job, decision) -> Response:
        job.refresh_from_db()
        result = job.result or {}
        return Response(
            {
                "job_id": job.pk,
                "status": job.status,
                "service": result.get("service") or job.reference.removeprefix("route:"),
                "attempts": job.attempts,
                "result": job.result,
                "error": job.error or None,
                "decision": decision.as_dict(),
            },
            status=status.HTTP_200_OK if job.is_final else status.HTTP_202_ACCEPTED,
        )


class PrioritizeView(APIView):
    @extend_schema(request=PrioritizeRequest, responses={200: _ANY})
    def post(self, request):
        body = PrioritizeRequest(data=request.data)
        body.is_valid(raise_exception=True)
        return Response({"tasks": prioritize(body.validated_data["tasks"], TypeMultiplier.table())})


def stats_body(task_type: str | None = None) -> dict:
    rows = RouteStat.objects.all()
    if task_type:
        rows = rows.filter(task_type=task_type)
    by_type: dict[str, dict] = {}
    distribution: dict[str, int] = {}
    for stat in rows:
        times = list(
            TaskOutcome.objects.filter(
                task_type=stat.task_type, service_name=stat.service_name, execution_ms__isnull=False
            )
            .order_by("-created_at")
            .values_list("execution_ms", flat=True)[:200]
        )
        entry = by_type.setdefault(stat.task_type, {"count": 0, "successes": 0, "services": {}})
        entry["count"] += stat.count
        entry["successes"] += stat.successes
        entry["services"][stat.service_name] = {
            "count": stat.count,
            "success_rate": stat.success_rate,
            "avg_ms": stat.avg_ms,
            "p95_ms": percentile(times, 95),
            "confidence": confidence(stat.successes, stat.count),
        }
        distribution[stat.service_name] = distribution.get(stat.service_name, 0) + stat.count
    for entry in by_type.values():
        entry["success_rate"] = round(entry["successes"] / entry["count"], 4) if entry["count"] else None
        entry["confidence"] = confidence(entry["successes"], entry["count"])
    return {
        "total_routes": sum(distribution.values()),
        "service_distribution": distribution,
        "task_types_learned": len(by_type),
        "by_type": by_type,
    }


_TYPE_PARAM = OpenApiParameter("type", str, description="Only this task type")


class StatsView(APIView):
    @extend_schema(parameters=[_TYPE_PARAM], responses={200: _ANY})
    def get(self, request):
        return Response(stats_body(request.query_params.get("type") or None))


class OutcomeSerializer(serializers.ModelSerializer):
    class Meta:
        model = TaskOutcome
        fields = [
            "id",
            "task_type",
            "service_name",
            "job",
            "priority",
            "strategy",
            "attempt",
            "success",
            "execution_ms",
            "status_code",
            "error",
            "error_class",
            "context",
            "created_at",
        ]


def error_patterns(task_type: str | None = None, limit: int = 50) -> list[dict]:
    """Failures per (task type, service), grouped by status code and error class."""
    rows = TaskOutcome.objects.filter(success=False, **({"task_type": task_type} if task_type else {}))
    return list(
        rows.values("task_type", "service_name", "status_code", "error_class")
        .annotate(count=Count("id"), last_seen=Max("created_at"))
        .order_by("-count", "task_type", "service_name")[:limit]
    )


def context_links(task_type: str | None = None, limit: int = 50) -> list[dict]:
    """Each context with the routed tasks (jobs) that used it."""
    rows = TaskOutcome.objects.exclude(context="").filter(**({"task_type": task_type} if task_type else {}))
    by_name: dict[str, dict] = {}
    for name, job_id, ttype in rows.values_list("context", "job_id", "task_type").distinct()[:5000]:
        entry = by_name.setdefault(name, {"name": name, "jobs": set(), "task_types": set()})
        if job_id is not None:
            entry["jobs"].add(job_id)
        entry["task_types"].add(ttype)
    known = dict(TaskContext.objects.filter(name__in=by_name).values_list("name", "data"))
    return [
        {
            "name": name,
            "data": known.get(name),
            "task_types": sorted(entry["task_types"]),
            "jobs": sorted(entry["jobs"])[-100:],
            "task_count": len(entry["jobs"]),
        }
        for name, entry in sorted(by_name.items())[:limit]
    ]


class MemoryView(APIView):
    @extend_schema(parameters=[_TYPE_PARAM], responses={200: _ANY})
    def get(self, request):
        task_type = request.query_params.get("type") or None
        recent = TaskOutcome.objects.all()
        if task_type:
            recent = recent.filter(task_type=task_type)
        patterns = (
            TaskOutcome.objects.filter(success=True, **({"task_type": task_type} if task_type else {}))
            .values("task_type", "service_name")
            .annotate(successes=Count("id"))
            .order_by("-successes")[:20]
        )
        summary = TaskOutcome.objects.aggregate(n=Count("id"), ok=Count("id", filter=Q(success=True)))
        return Response(
            {
                "short_term": OutcomeSerializer(recent[:SHORT_TERM], many=True).data,
                "long_term": stats_body(task_type)["by_type"],
                "success_patterns": list(patterns),
                "error_patterns": error_patterns(task_type),
                "contexts": context_links(task_type),
                "summary": {
                    "short_term_count": min(SHORT_TERM, summary["n"]),
                    "outcomes": summary["n"],
                    "successes": summary["ok"],
                    "long_term_types": RouteStat.objects.values("task_type").distinct().count(),
                    "contexts": TaskContext.objects.count(),
                },
            }
        )


RECENT_EJECTIONS = timedelta(hours=1)


class EjectionSerializer(serializers.ModelSerializer):
    service = serializers.CharField(source="service_name")
    reason = serializers.SerializerMethodField()
    until = serializers.SerializerMethodField()
    active = serializers.SerializerMethodField()
    awaiting_probe = serializers.SerializerMethodField()

    class Meta:
        model = OutlierState
        fields = [
            "service",
            "task_type",
            "reason",
            "ejected_at",
            "until",
            "ejections",
            "active",
            "awaiting_probe",
            "probation",
            "ended_at",
            "consecutive_failures",
        ]

    def get_reason(self, row: OutlierState) -> str:
        return row.reason or row.last_reason

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_until(self, row: OutlierState):
        # An ejection ended early by a success keeps its end as its ``until``.
        value = row.until or row.ended_at
        return serializers.DateTimeField().to_representation(value) if value else None

    def get_active(self, row: OutlierState) -> bool:
        return row.is_ejected(self.context["now"])

    def get_awaiting_probe(self, row: OutlierState) -> bool:
        """Its time is up, but it takes traffic again only once one probe try succeeds."""
        return row.awaiting_probe(self.context["now"])


class EjectionsView(APIView):
    """Current ejections and cooldowns, then those of the last hour."""

    @extend_schema(
        parameters=[_TYPE_PARAM],
        responses={
            200: inline_serializer(
                "Ejections",
                {"ejections": EjectionSerializer(many=True), "as_of": serializers.DateTimeField()},
            )
        },
    )
    def get(self, request):
        now = timezone.now()
        rows = OutlierState.objects.filter(ejected_at__isnull=False).filter(
            Q(until__gt=now) | Q(ejected_at__gte=now - RECENT_EJECTIONS)
        )
        if task_type := request.query_params.get("type"):
            rows = rows.filter(task_type=task_type)
        ordered = sorted(rows, key=lambda r: (not r.is_ejected(now), -r.ejected_at.timestamp()))
        return Response({"ejections": EjectionSerializer(ordered, many=True, context={"now": now}).data, "as_of": now})


class ContextSerializer(serializers.ModelSerializer):
    class Meta:
        model = TaskContext
        fields = ["name", "data", "created_at", "updated_at"]


class ContextViewSet(AuditedModelViewSet):
    queryset = TaskContext.objects.all()
    serializer_class = ContextSerializer
    lookup_field = "name"
    ledger_prefix = "routing.context"


class MultiplierSerializer(serializers.ModelSerializer):
    class Meta:
        model = TypeMultiplier
        fields = ["task_type", "multiplier"]


class MultiplierViewSet(AuditedModelViewSet):
    queryset = TypeMultiplier.objects.all()
    serializer_class = MultiplierSerializer
    lookup_field = "task_type"
    ledger_prefix = "routing.multiplier"


class SuggestionSerializer(serializers.ModelSerializer):
    class Meta:
        model = Suggestion
        fields = [
            "id",
            "kind",
            "subject",
            "title",
            "description",
            "action",
            "evidence",
            "priority",
            "status",
            "auto_apply",
            "decided_by",
            "decided_at",
            "notes",
            "impact",
            "change",
            "applied_by",
            "applied_at",
            "reverted_by",
            "reverted_at",
            "created_at",
        ]
        read_only_fields = fields


class DecisionRequest(serializers.Serializer):
    notes = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")


class AnalyzeRequest(serializers.Serializer):
    time_window_hours = serializers.FloatField(min_value=0.01, max_value=24 * 90, default=24)


class SuggestionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    queryset = Suggestion.objects.all()
    serializer_class = SuggestionSerializer
    filterset_fields = ["status", "priority", "kind"]

    @extend_schema(request=AnalyzeRequest, responses={200: _ANY})
    @action(detail=False, methods=["post"])
    def analyze(self, request):
        body = AnalyzeRequest(data=object_body(request))
        body.is_valid(raise_exception=True)
        result = improvement.analyze(body.validated_data["time_window_hours"], actor=actor_of(request))
        result["suggestions"] = SuggestionSerializer(
            Suggestion.objects.filter(pk__in=result["created"]), many=True
        ).data
        return Response(result)

    def _decide(self, request, approve: bool):
        body = DecisionRequest(data=object_body(request))
        body.is_valid(raise_exception=True)
        suggestion = self.get_object()
        before = improvement.current_metrics(suggestion) if approve else None
        suggestion.decide(approve, actor=actor_of(request), notes=body.validated_data["notes"], before=before)
        return Response(SuggestionSerializer(suggestion).data)

    @extend_schema(request=DecisionRequest, responses={200: SuggestionSerializer})
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        return self._decide(request, True)

    @extend_schema(request=DecisionRequest, responses={200: SuggestionSerializer})
    @action(detail=True, methods=["post"])
    def reject(self, request, pk=None):
        return self._decide(request, False)

    @extend_schema(
        request=None,
        responses={200: SuggestionSerializer, 409: OpenApiResponse(description="Not approved, or not applicable")},
    )
    @action(detail=True, methods=["post"])
    def apply(self, request, pk=None):
        """A person applies an approved suggestion (the change and the metrics before it are kept)."""
        suggestion = self.get_object()
        suggestion.apply(actor=actor_of(request), metrics=improvement.current_metrics(suggestion))
        return Response(SuggestionSerializer(suggestion).data)

    @extend_schema(
        request=None,
        responses={200: SuggestionSerializer, 409: OpenApiResponse(description="Not applied, or changed since")},
    )
    @action(detail=True, methods=["post"])
    def revert(self, request, pk=None):
        """Put back what applying changed (the metrics at that moment are kept as "after")."""
        suggestion = self.get_object()
        suggestion.revert(actor=actor_of(request), metrics=improvement.current_metrics(suggestion))
        return Response(SuggestionSerializer(suggestion).data)

    @extend_schema(request=None, responses={200: SuggestionSerializer})
    @action(detail=True, methods=["post"])
    def track(self, request, pk=None):
        """Record the impact of an approved suggestion: the numbers now against the
        numbers when it was approved."""
        suggestion = self.get_object()
        suggestion.track_impact(improvement.current_metrics(suggestion), actor=actor_of(request))
        return Response(SuggestionSerializer(suggestion).data)


class ModulesView(APIView):
    """The module manager's view of services: health summary and modules by category."""

    @extend_schema(responses={200: _ANY})
    def get(self, request):
        services = list(Service.objects.order_by("name"))
        by_category: dict[str, list] = {}
        for s in services:
            by_category.setdefault(s.category or "uncategorised", []).append(
                {"name": s.name, "enabled": s.enabled, "health": s.health, "capabilities": s.capabilities}
            )
        return Response(
            {
                "health_summary": {
                    "total": len(services),
                    "enabled": sum(1 for s in services if s.enabled),
                    "healthy": sum(1 for s in services if s.enabled and s.health == "healthy"),
                },
                "by_category": by_category,
            }
        )
