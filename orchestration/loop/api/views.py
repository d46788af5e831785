from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from orchestration.core.jobs import queue
from orchestration.core.models import EscalationPolicy, Job, Lane, LedgerEntry, OrchestratorProcess
from orchestration.loop.api import filters
from orchestration.loop.api.serializers import (
    ActionDecisionSerializer,
    ActionSerializer,
    AutomationPolicySerializer,
    EnableSerializer,
    EscalationPolicySerializer,
    GuardrailSerializer,
    JobCreateSerializer,
    JobSerializer,
    LaneSerializer,
    LedgerEntrySerializer,
    ProcessSerializer,
    RuleSerializer,
    RunOnceSerializer,
    ScoreDeductionSerializer,
)
from orchestration.loop.cycle import run_cycle
from orchestration.loop.models import Action, AutomationPolicy, GuardrailCounter, LoopState, Rule, ScoreDeduction
from orchestration.loop.snapshot_cache import current_snapshot
from orchestrator_site.api.errors import Conflict, object_body
from orchestrator_site.api.idempotency import HEADER, all_or_nothing, idempotent
from orchestrator_site.api.pagination import KeysetPagination
from orchestrator_site.api.permissions import PublicEndpoint
from orchestrator_site.api.schema import DESCRIPTIONS
from orchestrator_site.api.viewsets import AuditedModelViewSet, actor_of

VERSION = "0.1.0"

IDEMPOTENCY_KEY = OpenApiParameter(
    HEADER,
    str,
    location=OpenApiParameter.HEADER,
    required=False,
    description="Retry-safe writes: the same key and body within 24 h answer the first response again "
    "(with Idempotent-Replayed: true); the same key with another body answers 422. Keys are per user.",
)


# --- job queue ----------------------------------------------------------------------
class JobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet):
    queryset = Job.objects.all()
    serializer_class = JobSerializer
    filterset_class = filters.JobFilter
    pagination_class = KeysetPagination  # job_created_idx (and each filter's index) is the order

    @extend_schema(
        request=JobCreateSerializer,
        parameters=[IDEMPOTENCY_KEY],
        responses={201: JobSerializer, 422: OpenApiResponse(description=DESCRIPTIONS["422"])},
    )
    def create(self, request, *args, **kwargs):
        # Validation, the job, its ledger entry and the key's answer commit together;
        # nodes are woken once they have.
        with idempotent(request) as claim:
            if claim.replay is not None:
                return claim.replay
            incoming = JobCreateSerializer(data=request.data, context={"request": request})
            incoming.is_valid(raise_exception=True)
            data = dict(incoming.validated_data)
            job = queue.enqueue(data.pop("kind"), data.pop("payload"), actor=actor_of(request), **data)
            return claim.save(
                Response(JobSerializer(job, context=self.get_serializer_context()).data, status=status.HTTP_201_CREATED)
            )

    @extend_schema(request=None, responses={200: JobSerializer, 409: OpenApiResponse(description="Already finished")})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        return Response(
            JobSerializer(
                queue.cancel(self.get_object(), actor=actor_of(request)), context=self.get_serializer_context()
            ).data
        )

    @extend_schema(request=None, responses={200: JobSerializer, 409: OpenApiResponse(description="Not failed")})
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        return Response(
            JobSerializer(
                queue.retry(self.get_object(), actor=actor_of(request)), context=self.get_serializer_context()
            ).data
        )


class LaneViewSet(AuditedModelViewSet):
    queryset = Lane.objects.all()
    serializer_class = LaneSerializer
    lookup_field = "name"
    ledger_prefix = "lane"


# --- ledger, rules, actions -------------------------------------------------------------
class LedgerViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = LedgerEntry.objects.all()
    serializer_class = LedgerEntrySerializer
    filterset_class = filters.LedgerFilter
    pagination_class = KeysetPagination


class ProcessViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Every web process, cluster node and loop runner that has sent a heartbeat."""

    queryset = OrchestratorProcess.objects.all()
    serializer_class = ProcessSerializer


class RuleViewSet(AuditedModelViewSet):
    queryset = Rule.objects.all()
    serializer_class = RuleSerializer
    ledger_prefix = "rule"

    def get_serializer_context(self) -> dict:
        return {**super().get_serializer_context(), "effectiveness": Action.effectiveness_by_rule()}

    def perform_update(self, serializer):
        # A change of mode is its own ledger entry (who let a risky rule run on its own).
        mode = serializer.validated_data.pop("mode", None)
        with all_or_nothing():
            super().perform_update(serializer)
            if mode is not None:
                serializer.instance.set_mode(mode, actor=actor_of(self.request))


class ScoreDeductionViewSet(AuditedModelViewSet):
    """The health score's deductions: 100 minus those that apply is the score."""

    queryset = ScoreDeduction.objects.all()
    serializer_class = ScoreDeductionSerializer
    ledger_prefix = "score_deduction"


class EscalationPolicyViewSet(AuditedModelViewSet):
    """Who hears of an open, unacknowledged anomaly, and when (tiers as data)."""

    queryset = EscalationPolicy.objects.all()
    serializer_class = EscalationPolicySerializer
    ledger_prefix = "escalation_policy"


class ActionViewSet(viewsets.ReadOnlyModelViewSet):
    """What cycles decided and the outcome; a risky action awaits a person's approval."""

    queryset = Action.objects.all()
    serializer_class = ActionSerializer
    filterset_class = filters.ActionFilter

    def _decide(self, request, approve: bool) -> Response:
        body = ActionDecisionSerializer(data=object_body(request))
        body.is_valid(raise_exception=True)
        action = self.get_object()
        action.decide(approve, actor=actor_of(request), notes=body.validated_data["notes"])
        return Response(ActionSerializer(action).data)

    @extend_schema(
        request=ActionDecisionSerializer,
        responses={200: ActionSerializer, 409: OpenApiResponse(description="Not awaiting approval")},
    )
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        """Approve a pending action: the next pass of its automation runs it."""
        return self._decide(request, True)

    @extend_schema(
        request=ActionDecisionSerializer,
        responses={200: ActionSerializer, 409: OpenApiResponse(description="Not awaiting approval")},
    )
    @action(detail=True, methods=["post"])
    def reject(self, request, pk=None):
        return self._decide(request, False)


class GuardrailViewSet(viewsets.ReadOnlyModelViewSet):
    """Each automation's counts per target this hour; ``?paused=true`` lists what loop
    protection paused, which a person resumes."""

    queryset = GuardrailCounter.objects.all()
    serializer_class = GuardrailSerializer
    filterset_class = filters.GuardrailFilter

    @extend_schema(request=None, responses={200: GuardrailSerializer, 409: OpenApiResponse(description="Not paused")})
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        """Lift a loop protection pause: the automation acts on this target again."""
        counter = self.get_object()
        if not counter.resume(actor=actor_of(request)):
            raise Conflict(f"{counter.automation} on {counter.target} is not paused")
        return Response(GuardrailSerializer(counter).data)


class AutomationPolicyViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.UpdateModelMixin, viewsets.GenericViewSet
):
    """Mode and limits of each recovery strategy and of the routing ejection. Each row is
    made by its automation the first time it acts; a person changes it (ledgered)."""

    queryset = AutomationPolicy.objects.all()
    serializer_class = AutomationPolicySerializer

    def perform_update(self, serializer):
        changed = {
            name: value
            for name, value in serializer.validated_data.items()
            if getattr(serializer.instance, name) != value
        }
        if changed:
            serializer.instance.configure(actor=actor_of(self.request), **changed)


# --- control loop -------------------------------------------------------------------
_OK = inline_serializer("Ok", {"status": serializers.CharField()})


def loop_status_body(state: LoopState) -> dict:
    return {
        "status": "ok",
        "running": state.running,
        "enabled": state.enabled,
        "interval_seconds": state.interval_seconds,
        "dry_run": state.dry_run,
        "cycle_count": state.cycle_count,
        "last_cycle": state.last_cycle,
        "last_health_score": state.last_health_score,
        "dedicated_runner": state.runner_owner if state.dedicated_runner_alive() else None,
    }


class SnapshotView(APIView):
    @extend_schema(responses={200: _OK})
    def get(self, request):
        return Response({"status": "ok", "snapshot": current_snapshot()})


class RunOnceView(APIView):
    @extend_schema(request=RunOnceSerializer, responses={200: _OK, 409: OpenApiResponse(description="Cycle busy")})
    def post(self, request):
        body = RunOnceSerializer(data=object_body(request))
        body.is_valid(raise_exception=True)
        result = run_cycle(dry_run=body.validated_data["dry_run"], manual=True, actor=actor_of(request))
        return Response({"status": "ok", "result": result})


class EnableView(APIView):
    @extend_schema(request=EnableSerializer, responses={200: _OK})
    def post(self, request):
        body = EnableSerializer(data=object_body(request))
        body.is_valid(raise_exception=True)
        state = LoopState.enable(body.validated_data.get("interval_seconds"), actor=actor_of(request))
        return Response(
            {
                "status": "ok",
                "orchestrator": {"status": "started", "interval_seconds": state.interval_seconds, "enabled": True},
            }
        )


class DisableView(APIView):
    @extend_schema(request=None, responses={200: _OK})
    def post(self, request):
        LoopState.disable(actor=actor_of(request))
        return Response({"status": "ok", "orchestrator": {"status": "stopped", "enabled": False}})


class StatusView(APIView):
    @extend_schema(responses={200: _OK})
    def get(self, request):
        return Response(loop_status_body(LoopState.get()))


# --- service information ---------------------------------------------------------------
class ApiRootView(APIView):
    @extend_schema(responses={200: _OK})
    def get(self, request):
        return Response(
            {
                "service": "Orchestrator",
                "version": VERSION,
                "status": "running",
                "time": timezone.now().isoformat(),
                "endpoints": {
                    "jobs": "/api/v1/jobs/",
                    "lanes": "/api/v1/lanes/",
                    "ledger": "/api/v1/ledger/",
                    "rules": "/api/v1/rules/",
                    "score_deductions": "/api/v1/score-deductions/",
                    "escalation_policies": "/api/v1/escalation-policies/",
                    "actions": "/api/v1/actions/",
                    "guardrails": "/api/v1/guardrails/",
                    "automation_policies": "/api/v1/automation-policies/",
                    "processes": "/api/v1/processes/",
                    "snapshot": "/orchestrator/snapshot",
                    "run_once": "/orchestrator/run-once",
                    "status": "/orchestrator/status",
                    "schema": "/api/schema/",
                    "docs": "/api/docs/",
                    "healthz": "/api/v1/healthz",
                },
            }
        )


class HealthzView(APIView):
    authentication_classes: list = []
    permission_classes = [PublicEndpoint]
    throttle_classes: list = []

    @extend_schema(responses={200: _OK}, auth=[])
    def get(self, request):
        return Response({"status": "ok", "service": "orchestrator", "version": VERSION})
