from __future__ import annotations

import re

from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.renderers import BrowsableAPIRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from orchestrator_site.api.renderers import RedactingJSONRenderer
from orchestrator_site.api.viewsets import AuditedModelViewSet, actor_of
from pipeline import engine, people
from pipeline import transitions as t
from pipeline.api import serializers as s
from pipeline.api.pagination import EventPagination
from pipeline.api.sse import EventStreamRenderer, stream
from pipeline.models import PipelineDefinition, PipelineJob

# An event id: ASCII digits, few enough to fit a 64-bit key.
EVENT_ID = re.compile(r"[0-9]{1,18}")

# One server-sent event of GET …/events/ as a client parses it.
SSE_EVENT = inline_serializer(
    "PipelineEventStreamItem",
    {
        "event": serializers.CharField(help_text="The event type, or end / timeout / error"),
        "data": serializers.CharField(help_text="JSON text"),
        "id": serializers.CharField(required=False, help_text="Event id, for Last-Event-ID"),
        "retry": serializers.IntegerField(required=False),
    },
)


class PipelineDefinitionViewSet(AuditedModelViewSet):
    queryset = PipelineDefinition.objects.all()
    serializer_class = s.PipelineDefinitionSerializer
    lookup_field = "name"
    ledger_prefix = "pipeline.definition"
    http_method_names = ["get", "post", "put", "patch", "head", "options"]


class PipelineJobViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """Pipeline jobs. Approve/reject need staff or ``pipeline.approve_gate``; other writes
    need staff or the matching model permission."""

    serializer_class = s.PipelineJobSerializer

    @property
    def write_permissions(self) -> list[str]:
        if self.action in ("approve", "reject"):
            return ["pipeline.approve_gate"]
        if self.action == "create":
            return ["pipeline.add_pipelinejob"]
        return ["pipeline.change_pipelinejob"]

    def get_queryset(self):
        qs = PipelineJob.objects.select_related("definition").prefetch_related("decisions")
        wanted = self.request.query_params.get("status")
        if wanted:
            unknown = set(wanted.split(",")) - set(t.STATUSES)
            if unknown:
                raise serializers.ValidationError(
                    {"status": f"unknown status {', '.join(sorted(unknown))}; use one of {', '.join(t.STATUSES)}"}
                )
            qs = qs.filter(status__in=wanted.split(","))
        active = self.request.query_params.get("active")
        if active is not None:
            if active.lower() not in ("true", "false", "1", "0"):
                raise serializers.ValidationError({"active": "use true or false"})
            flag = active.lower() in ("true", "1")
            qs = qs.filter(status__in=t.ACTIVE) if flag else qs.exclude(status__in=t.ACTIVE)
        return qs

    @extend_schema(request=s.PipelineJobCreateSerializer, responses={201: s.PipelineJobSerializer})
    def create(self, request, *args, **kwargs):
        incoming = s.PipelineJobCreateSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        data = incoming.validated_data
        job = engine.create_job(
            data["slug"], data.get("intent", ""), definition=data.get("definition"), actor=actor_of(request)
        )
        return Response(self.get_serializer(job).data, status=status.HTTP_201_CREATED)

    def _decide(self, request, verb: str):
        job = self.get_object()
        incoming = s.GateDecisionInputSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        data = incoming.validated_data
        if data["stage"] not in job.config.get("stages", []):
            raise serializers.ValidationError(
                {"stage": f"unknown stage {data['stage']!r}; stages are {', '.join(job.config.get('stages', []))}"}
            )
        try:
            job = engine.decide(
                job,
                data["stage"],
                verb,
                person=people.person_of(request.user),
                notes=data["notes"],
                values=data["input"] if verb == "approve" else None,
                via="api",
            )
        except engine.GateForbidden as exc:
            raise PermissionDenied(str(exc)) from None
        except engine.GateInputError as exc:
            raise serializers.ValidationError({"input": exc.errors}) from None
        job = self.get_queryset().get(pk=job.pk)
        return Response(self.get_serializer(job).data)

    @extend_schema(
        request=s.GateDecisionInputSerializer,
        responses={
            200: s.PipelineJobSerializer,
            400: OpenApiResponse(description="Input does not match the gate's input_schema (names the field)"),
            403: OpenApiResponse(description="Not an assignee, or the job's starter without allow_self_approval"),
            409: OpenApiResponse(description="Not waiting at that gate, or already decided by this person"),
        },
    )
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        return self._decide(request, "approve")

    @extend_schema(
        request=s.GateDecisionInputSerializer,
        responses={200: s.PipelineJobSerializer, 409: OpenApiResponse(description="Not waiting at that gate")},
    )
    @action(detail=True, methods=["post"])
    def reject(self, request, pk=None):
        return self._decide(request, "reject")

    @extend_schema(
        request=None, responses={200: s.PipelineJobSerializer, 409: OpenApiResponse(description="Not paused")}
    )
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        return Response(self.get_serializer(engine.resume(self.get_object(), actor=actor_of(request))).data)

    @extend_schema(request=None, responses={200: s.PipelineJobSerializer, 409: OpenApiResponse(description="Final")})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        return Response(self.get_serializer(engine.cancel(self.get_object(), actor=actor_of(request))).data)

    @extend_schema(
        description="A job's events, oldest first. Without `cursor`, `limit` or `offset`: a JSON list of at "
        f"most {EventPagination.max_limit} events, and a `Link` header to the cursor page after them when the "
        "job has more. With any of them: a cursor page like the other big lists (follow `next`).",
        parameters=[
            OpenApiParameter(
                "Link",
                str,
                OpenApiParameter.HEADER,
                response=[200],
                description='`<url>; rel="next"`: the plain list stopped short, the rest follows from url.',
            )
        ],
        responses={
            (200, "application/json"): s.PipelineEventSerializer(many=True),
            (200, "text/event-stream"): OpenApiResponse(
                response=SSE_EVENT,
                description="Live stream of the same events (Accept: text/event-stream or ?format=sse); "
                "each event's data is one event as JSON, then an `end` (job final) or `timeout` event.",
            ),
        },
    )
    # The events are a list or a cursor page, oldest first (EventPagination), or a live stream.
    @action(
        detail=True,
        methods=["get"],
        renderer_classes=[RedactingJSONRenderer, BrowsableAPIRenderer, EventStreamRenderer],
        pagination_class=EventPagination,
    )
    def events(self, request, pk=None):
        job = self.get_object()
        # Content negotiation picked the stream: Accept: text/event-stream or ?format=sse
        # (before, ?format=sse rendered the JSON list as one "error" event).
        if request.accepted_renderer.format == EventStreamRenderer.format:
            # The stream pages by event id (Last-Event-ID or ?after=), never by cursor.
            paging = sorted({"cursor", "limit", "offset"} & set(request.query_params))
            if paging:
                raise serializers.ValidationError(
                    {name: "The event stream takes ?after= or Last-Event-ID, not page parameters." for name in paging}
                )
            after = request.META.get("HTTP_LAST_EVENT_ID") or request.query_params.get("after") or "0"
            # ASCII digits only: str.isdigit() accepts "²", which int() then refuses (a 500).
            if not EVENT_ID.fullmatch(after):
                raise serializers.ValidationError({"after": "Last-Event-ID must be an event id"})
            response = StreamingHttpResponse(stream(job.pk, int(after)), content_type="text/event-stream")
            response["Cache-Control"] = "no-cache"
            response["X-Accel-Buffering"] = "no"
            return response
        page = self.paginate_queryset(job.events.all())
        return self.get_paginated_response(s.PipelineEventSerializer(page, many=True).data)

    @extend_schema(responses={200: s.ArtifactSerializer(many=True)})
    @action(detail=True, methods=["get"], pagination_class=None)
    def artifacts(self, request, pk=None):
        job = self.get_object()
        return Response(s.ArtifactSerializer(job.artifacts.order_by("created_at", "id"), many=True).data)


class InboxView(APIView):
    """Jobs waiting at a gate for the caller: they may decide it and have not yet."""

    @extend_schema(
        responses={
            200: inline_serializer(
                "PipelineInbox",
                {"count": serializers.IntegerField(), "results": s.PipelineJobSerializer(many=True)},
            )
        }
    )
    def get(self, request):
        jobs = people.inbox(request.user)
        return Response({"count": len(jobs), "results": s.PipelineJobSerializer(jobs, many=True).data})
