from __future__ import annotations

import functools
import time
from functools import wraps

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from health import status_copy
from health.models import Service
from health.report import HEALTH_FILTERS, ReportFilterError, encoded_status, status_report
from health.sweep import check_services
from orchestration.core.demo import DEMO_PREFIX
from orchestration.core.models.ledger import record
from orchestration.core.redaction import Masked
from orchestrator_site.api.permissions import PublicEndpoint
from orchestrator_site.api.renderers import Encoded, RedactingJSONRenderer
from orchestrator_site.api.viewsets import actor_of


class LivenessView(APIView):
    """Public liveness probe: the web process answers."""

    authentication_classes: list = []
    permission_classes = [PublicEndpoint]
    throttle_classes: list = []

    @extend_schema(responses={200: inline_serializer("Liveness", {"status": serializers.CharField()})}, auth=[])
    def get(self, request):
        return Response({"status": "ok", "service": "orchestrator"})


_STATUS_SCHEMA = inline_serializer(
    "HealthStatus",
    {
        "timestamp": serializers.DateTimeField(),
        "services": serializers.DictField(child=serializers.DictField()),
        "overall_health": serializers.ChoiceField(choices=["healthy", "degraded", "unhealthy"]),
    },
)


def _shared_status(renderer: RedactingJSONRenderer) -> bytes:
    """The unfiltered body (status_copy.py), as ``renderer.render(status_report())`` writes it."""
    encode, _, colon = renderer.encoding()
    entries, overall = encoded_status(encode, colon)
    report = Masked({"timestamp": timezone.now().isoformat(), "services": Encoded(entries), "overall_health": overall})
    return renderer.render_in_pieces(report, "services")


class HealthStatusView(APIView):
    """Every enabled service's health, counters and breaker state, and the overall health
    (of all enabled services, whatever the filters)."""

    @extend_schema(
        parameters=[
            OpenApiParameter("health", str, enum=list(HEALTH_FILTERS), description="Only services of this health."),
            OpenApiParameter("name", str, description="Only services whose name contains this (any case)."),
        ],
        responses={200: _STATUS_SCHEMA, 400: OpenApiResponse(description="A filter's value is refused")},
    )
    def get(self, request):
        health, name = request.query_params.get("health") or None, request.query_params.get("name") or None
        renderer = request.accepted_renderer
        if not (health or name) and isinstance(renderer, RedactingJSONRenderer):
            body, _ = status_copy.body(functools.partial(_shared_status, renderer))
            return HttpResponse(body, content_type=renderer.media_type)
        try:
            report = status_report(health=health, name=name)
        except ReportFilterError as exc:
            raise ValidationError({exc.field: str(exc)}) from None
        return Response(report)


class HealthTriggerView(APIView):
    """Check every enabled service now (concurrently), then answer like /health/status."""

    @extend_schema(request=None, responses={200: _STATUS_SCHEMA, 403: OpenApiResponse(description="Not staff")})
    def post(self, request):
        actor = actor_of(request)
        sweep = check_services(actor=actor)
        record(
            "health.sweep_triggered",
            f"Health check of {len(sweep.checked)} service(s) triggered by {actor}: {len(sweep.failed)} failed",
            actor=actor,
            data=sweep.as_dict(),
        )
        return Response({**status_report(), "sweep": sweep.as_dict()})


# --- heartbeat pings: public, the secret is the URL itself ----------------------------
@csrf_exempt
@require_http_methods(["GET", "POST", "HEAD"])
def ping(request: HttpRequest, key, signal: str = "success") -> HttpResponse:
    """``/ping/<uuid>`` (success), ``…/start`` and ``…/fail``, by GET or POST, so
    ``curl -fsS`` or a worker's last line can report. No session, no body read."""

    if not Service.record_ping(key, signal):
        return HttpResponse("not found\n", status=404, content_type="text/plain")
    return HttpResponse("OK\n", content_type="text/plain")


# --- demo endpoints: services the demo registers against this very server ------------
FLAKY_PERIOD_SECONDS = 300
FLAKY_DOWN_SECONDS = 90


def demo_endpoint(view):
    """Answer only while the demo has a service checking this endpoint: they stay
    anonymous (the checker sends no credentials) but are not open on every install."""

    @wraps(view)
    def wrapper(request: HttpRequest) -> JsonResponse:

        if not Service.objects.filter(name__startswith=f"{DEMO_PREFIX}-", health_path=request.path_info).exists():
            return JsonResponse({"detail": "Not found."}, status=404)
        return view(request)

    return wrapper


@demo_endpoint
def demo_healthy(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@demo_endpoint
def demo_flaky(request: HttpRequest) -> JsonResponse:
    """Down for the first 90 s of every 5 minutes (by the clock, so every flaky demo
    service fails at the same time, as dependents of one cause do)."""
    if int(time.time()) % FLAKY_PERIOD_SECONDS < FLAKY_DOWN_SECONDS:
        return JsonResponse({"status": "down", "error": "demo outage window"}, status=503)
    return JsonResponse({"status": "ok"})


@demo_endpoint
def demo_slow(request: HttpRequest) -> JsonResponse:
    """Answers after 2 s: past the demo's 1 s timeout."""
    time.sleep(2.0)
    return JsonResponse({"status": "ok"})


# --- public status pages: no sign-in, only groups marked public, nothing private --------
def _status_format(request: HttpRequest) -> str:
    return "json" if request.GET.get("format") == "json" else "html"


@require_http_methods(["GET", "HEAD"])
def status_index(request: HttpRequest) -> HttpResponse:
    from health.models import StatusPage

    pages = [
        {"slug": p.slug, "title": p.title, "description": p.description} for p in StatusPage.objects.filter(public=True)
    ]
    if _status_format(request) == "json":
        return JsonResponse({"pages": [{**p, "url": f"/status/{p['slug']}/"} for p in pages]})
    return render(request, "health/status_index.html", {"pages": pages})


@require_http_methods(["GET", "HEAD"])
def status_page(request: HttpRequest, slug: str) -> HttpResponse:
    from health.models import StatusPage
    from health.public_status import page_body

    page = StatusPage.objects.filter(slug=slug, public=True).first()
    if page is None:  # a page not marked public does not exist for the public
        if _status_format(request) == "json":
            return JsonResponse({"detail": "Not found."}, status=404)
        return render(request, "health/status_missing.html", {"slug": slug}, status=404)
    body = page_body(page)
    if _status_format(request) == "json":
        return JsonResponse(body)
    return render(request, "health/status_page.html", {"page": body})
