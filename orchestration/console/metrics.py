"""GET /metrics: the orchestrator's state in Prometheus text format.

Every value is read from the database when scraped (nothing is kept in process
memory), so any web process answers the same numbers and a restart loses nothing.
The families are built with prometheus_client's collector types in a registry made
per request; the query count is fixed (aggregates and capped per-object lists), see
tests/console/test_metrics.py.

Like the rest of the API it needs credentials: a Prometheus scraper sends
``Authorization: Bearer <token>`` (``create_api_token prometheus``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

from django.db.models import Avg, Count, F, FloatField, Max, Min, OuterRef, Q, Subquery
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from health.choices import BreakerState, ServiceHealth
from health.models import HealthCheck, Service
from health.report import display_health
from orchestration.console.data import CYCLE_EVENTS
from orchestration.core.choices import AnomalySeverity, JobStatus
from orchestration.core.jobs.counts import counts_by_status_and_lane
from orchestration.core.models import Anomaly, Job, LedgerEntry, OrchestratorProcess
from orchestration.fleet.choices import RunStatus
from orchestration.fleet.models import Worker, WorkerRun
from orchestration.loop.health_score import status_for
from orchestration.loop.models import Action, LoopState
from orchestration.routing.models import RouteStat, Suggestion, SuggestionStatus
from pipeline import transitions as t
from pipeline.models import PipelineJob

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Per-object families (services, workers) are capped so one scrape stays bounded.
MAX_OBJECTS = 500
HEALTH_STATUSES = ("healthy", "degraded", "critical")


class OrchestratorCollector(Collector):
    """Reads everything at collect() time."""

    def __init__(self, now=None):
        self.now = now or timezone.now()

    def collect(self) -> Iterator:
        yield from self._loop()
        yield from self._processes()
        yield from self._jobs()
        yield from self._actions()
        yield from self._services()
        yield from self._workers()
        yield from self._anomalies()
        yield from self._pipeline()
        yield from self._routing()

    # --- control loop ---------------------------------------------------------------
    def _loop(self) -> Iterator:
        state = LoopState.get()
        last = state.last_cycle or {}
        score = GaugeMetricFamily("orchestrator_health_score", "Health score of the last cycle (0-100).")
        if state.last_health_score is not None:
            score.add_metric([], state.last_health_score)
        yield score
        status = GaugeMetricFamily(
            "orchestrator_health_status", "1 for the status of the last cycle's health score.", labels=["status"]
        )
        current = last.get("health_status") or (
            status_for(state.last_health_score) if state.last_health_score is not None else None
        )
        for name in HEALTH_STATUSES:
            status.add_metric([name], 1 if name == current else 0)
        yield status
        yield _gauge("orchestrator_loop_enabled", "1 when the control loop is enabled.", 1 if state.enabled else 0)
        yield _gauge("orchestrator_loop_running", "1 when cycles are happening.", 1 if state.running else 0)
        yield _gauge("orchestrator_loop_interval_seconds", "Seconds between cycles.", state.interval_seconds)
        cycles = CounterMetricFamily("orchestrator_cycles", "Cycles run since the loop state was created.")
        cycles.add_metric([], state.cycle_count)
        yield cycles
        duration = GaugeMetricFamily("orchestrator_cycle_duration_seconds", "Duration of the last cycle.")
        if isinstance(last.get("duration_ms"), int | float):
            duration.add_metric([], last["duration_ms"] / 1000.0)
        yield duration
        # The last hour of cycles, from their ledger entries (one aggregate query).
        duration_ms = Cast(KeyTextTransform("duration_ms", "data"), FloatField())
        hour = (
            LedgerEntry.objects.filter(event_type__in=CYCLE_EVENTS, created_at__gte=self.now - timedelta(hours=1))
            .order_by()
            .aggregate(avg=Avg(duration_ms), max=Max(duration_ms), n=Count("id"))
        )
        yield _gauge("orchestrator_cycles_last_hour", "Cycles completed in the last hour.", hour["n"])
        avg = GaugeMetricFamily("orchestrator_cycle_duration_avg_seconds", "Mean cycle duration over the last hour.")
        slowest = GaugeMetricFamily("orchestrator_cycle_duration_max_seconds", "Slowest cycle in the last hour.")
        if hour["n"]:
            avg.add_metric([], (hour["avg"] or 0) / 1000.0)
            slowest.add_metric([], (hour["max"] or 0) / 1000.0)
        yield avg
        yield slowest
        if state.last_cycle_finished_at:
            yield _gauge(
                "orchestrator_last_cycle_timestamp_seconds",
                "When the last cycle finished (Unix time).",
                state.last_cycle_finished_at.timestamp(),
            )

    # --- processes -----------------------------------------------------------------------
    def _processes(self) -> Iterator:
        """From the process registry (one query): restarts by serve of each role's
        children, and how many of each role are alive."""
        counts = OrchestratorProcess.by_role(self.now)
        restarts = CounterMetricFamily(
            "orchestrator_process_restarts",
            "Restarts of supervised processes (serve's children), summed over the registered ones, by role.",
            labels=["role"],
        )
        alive = GaugeMetricFamily(
            "orchestrator_processes_alive", "Registered processes whose heartbeat is recent, by role.", labels=["role"]
        )
        for role, row in counts.items():
            restarts.add_metric([role], row["restarts"])
            alive.add_metric([role], row["alive"])
        yield restarts
        yield alive

    # --- job queue ---------------------------------------------------------------------
    def _jobs(self) -> Iterator:
        family = GaugeMetricFamily(
            "orchestrator_jobs",
            "Jobs by status and lane: live ones whatever their age, finished ones of the last "
            "JOB_FINISHED_WINDOW_HOURS.",
            labels=["status", "lane"],
        )
        seen_status: set[str] = set()
        for status, lane, n in counts_by_status_and_lane(self.now):
            family.add_metric([status, lane or "default"], n)
            seen_status.add(status)
        for status in JobStatus.values:  # every status present, so absent means zero not unknown
            if status not in seen_status:
                family.add_metric([status, "default"], 0)
        yield family
        oldest = Job.objects.filter(status=JobStatus.PENDING).aggregate(oldest=Min("created_at"))["oldest"]
        yield _gauge(
            "orchestrator_oldest_pending_job_age_seconds",
            "Age of the oldest pending job (0 when none).",
            (self.now - oldest).total_seconds() if oldest else 0,
        )

    def _actions(self) -> Iterator:
        family = CounterMetricFamily(
            "orchestrator_actions", "Actions decided by the loop, by type and outcome.", labels=["type", "outcome"]
        )
        rows = Action.objects.order_by().values_list("action_type", "status").annotate(n=Count("id"))
        for action_type, status, n in rows:
            family.add_metric([action_type, status], n)
        yield family

    # --- service health -------------------------------------------------------------------
    def _services(self) -> Iterator:
        hour = self.now - timedelta(hours=1)
        # Grouped by service_id + 0: grouped by the bare column, SQLite walked the whole
        # (service, time) index to skip a sort, reading every check ever kept instead of
        # the last hour's through the time index.
        latency = {
            row["sid"]: row
            for row in HealthCheck.objects.filter(checked_at__gte=hour, response_time_ms__isnull=False)
            .order_by()
            .values(sid=F("service_id") + 0)
            .annotate(avg=Avg("response_time_ms"), max=Max("response_time_ms"), n=Count("id"))
        }
        up = GaugeMetricFamily(
            "orchestrator_service_up", "1 when the service's last check was healthy.", labels=["service"]
        )
        health = GaugeMetricFamily(
            "orchestrator_service_health", "1 for the service's current health.", labels=["service", "health"]
        )
        breaker = GaugeMetricFamily(
            "orchestrator_service_circuit_state",
            "1 for the state of the service's breaker.",
            labels=["service", "state"],
        )
        uptime = GaugeMetricFamily(
            "orchestrator_service_uptime_ratio", "Successful checks / all checks.", labels=["service"]
        )
        checks = CounterMetricFamily("orchestrator_service_checks", "Health checks run.", labels=["service", "result"])
        failures = GaugeMetricFamily(
            "orchestrator_service_consecutive_failures", "Failed checks in a row.", labels=["service"]
        )
        last_rt = GaugeMetricFamily(
            "orchestrator_service_response_time_seconds", "Response time of the last check.", labels=["service"]
        )
        avg_rt = GaugeMetricFamily(
            "orchestrator_service_check_latency_avg_seconds",
            "Mean check latency over the last hour.",
            labels=["service"],
        )
        max_rt = GaugeMetricFamily(
            "orchestrator_service_check_latency_max_seconds", "Slowest check over the last hour.", labels=["service"]
        )
        for service in Service.objects.filter(enabled=True).select_related("circuit").order_by("name")[:MAX_OBJECTS]:
            name = service.name
            current = display_health(service)
            up.add_metric([name], 1 if current == ServiceHealth.HEALTHY else 0)
            for value in ServiceHealth.values:
                health.add_metric([name, value], 1 if value == current else 0)
            for value in BreakerState.values:
                breaker.add_metric([name, value], 1 if value == service.breaker_state else 0)
            if service.uptime_percentage is not None:
                uptime.add_metric([name], service.uptime_percentage / 100.0)
            checks.add_metric([name, "success"], service.successful_checks)
            checks.add_metric([name, "failure"], max(0, service.total_checks - service.successful_checks))
            failures.add_metric([name], service.consecutive_failures)
            if service.last_response_time_ms is not None:
                last_rt.add_metric([name], service.last_response_time_ms / 1000.0)
            if service.pk in latency:
                avg_rt.add_metric([name], latency[service.pk]["avg"] / 1000.0)
                max_rt.add_metric([name], latency[service.pk]["max"] / 1000.0)
        yield from (up, health, breaker, uptime, checks, failures, last_rt, avg_rt, max_rt)

    # --- worker fleet ----------------------------------------------------------------------
    def _workers(self) -> Iterator:
        hour = self.now - timedelta(hours=1)
        finished = ~Q(status__in=(RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.SKIPPED))
        last_duration = (
            WorkerRun.objects.filter(finished, worker=OuterRef("pk"), duration_ms__isnull=False)
            .order_by("-completed_at", "-id")
            .values("duration_ms")[:1]
        )
        recent = {
            row["worker_id"]: row
            for row in WorkerRun.objects.filter(finished, completed_at__gte=hour, duration_ms__isnull=False)
            .order_by()
            .values("worker_id")
            .annotate(avg=Avg("duration_ms"), max=Max("duration_ms"))
        }
        by_status = WorkerRun.objects.order_by().values_list("worker__name", "status").annotate(n=Count("id"))
        runs = CounterMetricFamily("orchestrator_worker_runs", "Worker runs by outcome.", labels=["worker", "status"])
        for name, status, n in by_status:
            runs.add_metric([name, status], n)
        enabled = GaugeMetricFamily("orchestrator_worker_enabled", "1 when the worker is enabled.", labels=["worker"])
        score = GaugeMetricFamily("orchestrator_worker_last_score", "Overall score of the last run.", labels=["worker"])
        last = GaugeMetricFamily(
            "orchestrator_worker_last_run_duration_seconds", "Duration of the last finished run.", labels=["worker"]
        )
        avg = GaugeMetricFamily(
            "orchestrator_worker_run_duration_avg_seconds", "Mean run duration over the last hour.", labels=["worker"]
        )
        slowest = GaugeMetricFamily(
            "orchestrator_worker_run_duration_max_seconds", "Slowest run over the last hour.", labels=["worker"]
        )
        last_success = GaugeMetricFamily(
            "orchestrator_worker_last_success_timestamp_seconds", "When the worker last succeeded.", labels=["worker"]
        )
        workers = Worker.objects.annotate(last_duration=Subquery(last_duration)).order_by("name")[:MAX_OBJECTS]
        for worker in workers:
            enabled.add_metric([worker.name], 1 if worker.enabled else 0)
            if worker.last_score is not None:
                score.add_metric([worker.name], worker.last_score)
            if worker.last_duration is not None:
                last.add_metric([worker.name], worker.last_duration / 1000.0)
            if worker.pk in recent:
                avg.add_metric([worker.name], recent[worker.pk]["avg"] / 1000.0)
                slowest.add_metric([worker.name], recent[worker.pk]["max"] / 1000.0)
            if worker.last_success_at:
                last_success.add_metric([worker.name], worker.last_success_at.timestamp())
        yield from (runs, enabled, score, last, avg, slowest, last_success)

    def _anomalies(self) -> Iterator:
        family = GaugeMetricFamily(
            "orchestrator_open_anomalies", "Open anomalies by severity and code.", labels=["severity", "code"]
        )
        seen: set[str] = set()
        rows = (
            Anomaly.objects.filter(resolved_at__isnull=True)
            .order_by()
            .values_list("severity", "code")
            .annotate(n=Count("id"))
        )
        for severity, code, n in rows:
            family.add_metric([severity, code], n)
            seen.add(severity)
        for severity in AnomalySeverity.values:
            if severity not in seen:
                family.add_metric([severity, ""], 0)
        yield family

    # --- pipelines ----------------------------------------------------------------------------
    def _pipeline(self) -> Iterator:
        jobs = GaugeMetricFamily("orchestrator_pipeline_jobs", "Pipeline jobs by status.", labels=["status"])
        counts = dict(PipelineJob.objects.order_by().values_list("status").annotate(n=Count("id")))
        for status in t.STATUSES:
            jobs.add_metric([status], counts.get(status, 0))
        yield jobs
        waiting = GaugeMetricFamily(
            "orchestrator_pipeline_gate_waiting", "Jobs waiting for approval, by gate.", labels=["stage"]
        )
        wait = GaugeMetricFamily(
            "orchestrator_pipeline_gate_wait_seconds_max", "Longest current wait at each gate.", labels=["stage"]
        )
        rows = (
            PipelineJob.objects.filter(status=t.NEEDS_APPROVAL)
            .order_by()
            .values_list("stage")
            .annotate(n=Count("id"), since=Min("waiting_since"))
        )
        for stage, n, since in rows:
            waiting.add_metric([stage], n)
            wait.add_metric([stage], max(0.0, (self.now - since).total_seconds()) if since else 0)
        yield waiting
        yield wait

    # --- routing ----------------------------------------------------------------------------
    def _routing(self) -> Iterator:
        tasks = CounterMetricFamily(
            "orchestrator_routed_tasks",
            "Routed task attempts by type, service and result.",
            labels=["task_type", "service", "result"],
        )
        latency = GaugeMetricFamily(
            "orchestrator_routed_task_avg_seconds",
            "Mean execution time learned per route.",
            labels=["task_type", "service"],
        )
        for stat in RouteStat.objects.order_by("task_type", "service_name")[:MAX_OBJECTS]:
            labels = [stat.task_type, stat.service_name]
            tasks.add_metric([*labels, "success"], stat.successes)
            tasks.add_metric([*labels, "failure"], max(0, stat.count - stat.successes))
            if stat.avg_ms is not None:
                latency.add_metric(labels, stat.avg_ms / 1000.0)
        yield tasks
        yield latency
        pending = Suggestion.objects.filter(status=SuggestionStatus.PENDING).count()
        yield _gauge("orchestrator_suggestions_pending", "Routing suggestions waiting for a person.", pending)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation)
    family.add_metric([], value)
    return family


def render_metrics() -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(OrchestratorCollector())
    return generate_latest(registry)


class PrometheusRenderer(BaseRenderer):
    media_type = "text/plain"
    format = "prometheus"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if isinstance(data, bytes):
            return data
        # Errors (401/403) arrive as dicts: still readable text for a person with curl.
        return json.dumps(data).encode()


class FirstRenderer(BaseContentNegotiation):
    """Scrapers send all sorts of Accept headers; the answer is always the text format."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class MetricsView(APIView):
    """Prometheus text format; authentication like the rest of the API (Bearer token)."""

    renderer_classes = [PrometheusRenderer]
    content_negotiation_class = FirstRenderer
    throttle_classes: list = []

    @extend_schema(responses={(200, "text/plain"): OpenApiTypes.STR}, summary="Prometheus metrics")
    def get(self, request):
        response = Response(render_metrics(), content_type=CONTENT_TYPE)
        response["Cache-Control"] = "no-store"
        return response
