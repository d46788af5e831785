"""One object of every kind the API addresses by id or name, for the security tests
and the fuzzing run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.utils import timezone

from health.models import HealthCheck, MaintenanceWindow, Service, ServiceAlert
from orchestration.core.jobs.queue import enqueue
from orchestration.core.models import Anomaly, EscalationPolicy, Job, Lane, LedgerEntry, NotificationChannel
from orchestration.fleet.models import ScoreReport, Worker, WorkerRun
from orchestration.loop.models import Action, AutomationPolicy, GuardrailCounter, LoopState, Rule, ScoreDeduction
from orchestration.routing.models import Suggestion, TaskContext, TypeMultiplier
from pipeline.models import PipelineDefinition, PipelineJob


@dataclass
class World:
    """One object of every kind the API addresses by id or name."""

    job: Job
    failed_job: Job
    lane: Lane
    rule: Rule
    action: Action
    entry: LedgerEntry
    worker: Worker
    report: ScoreReport
    anomaly: Anomaly
    service: Service
    alert: ServiceAlert
    definition: PipelineDefinition
    pipeline_job: PipelineJob
    suggestion: Suggestion
    approved_suggestion: Suggestion
    context: TaskContext
    multiplier: TypeMultiplier
    deduction: ScoreDeduction
    channel: NotificationChannel
    counter: GuardrailCounter
    automation_policy: AutomationPolicy
    policy: EscalationPolicy
    maintenance: MaintenanceWindow


def build_world() -> World:
    """Committed rows (end-to-end tests share them with a server process). The pipeline
    job runs inline to its first gate, so it waits there for a decision."""
    from pipeline import engine

    # Nothing listens on port 9 ("discard"): checks of this service fail at once.
    service = Service.objects.create(name="billing", base_url="http://127.0.0.1:9", capabilities=["render"])
    HealthCheck.objects.create(service=service, success=False, health="unhealthy", error_message="refused")
    worker = Worker.objects.create(
        name="collector",
        category="collection",
        interval_seconds=300,
        timeout_seconds=30,
        target={"type": "python", "path": "tests.workers.targets.ok"},
    )
    run = WorkerRun.objects.create(worker=worker, status="succeeded", success=True, duration_ms=5)
    scores = dict.fromkeys(
        ("reliability_score", "performance_score", "data_quality_score", "resource_score", "overall_score"), 90.0
    )
    report = ScoreReport.objects.create(
        worker=worker, run=run, execution_id=run.execution_id, success=True, duration_ms=5, **scores
    )
    job = enqueue("noop", {}, not_before=timezone.now() + timedelta(hours=1))
    failed_job = enqueue("noop", {}, not_before=timezone.now() + timedelta(hours=1))
    Job.objects.filter(pk=failed_job.pk).update(status="failed", finished_at=timezone.now())
    failed_job.refresh_from_db()
    pipeline_job = engine.create_job("explainer", "Explain the orchestrator", actor="tests")
    pipeline_job.refresh_from_db()
    rule = Rule.objects.create(
        name="too-many",
        conditions=[{"field": "jobs.pending", "op": ">", "value": 1000}],
        action_type="retry_failed",
    )
    now = timezone.now()
    return World(
        channel=NotificationChannel.objects.create(name="ops", url="json://127.0.0.1:9/hook"),
        maintenance=MaintenanceWindow.objects.create(
            name="nightly", starts_at=now, recurrence={"cron": "0 2 * * *", "duration_minutes": 30}, all_services=True
        ),
        job=job,
        failed_job=failed_job,
        lane=Lane.objects.create(name="render", concurrency_limit=2),
        rule=rule,
        # Waiting for a person: what approve and reject act on.
        action=Action.objects.create(
            cycle=1,
            rule=rule,
            rule_name=rule.name,
            action_type="retry_failed",
            status="awaiting_approval",
            expires_at=timezone.now() + timedelta(hours=1),
        ),
        policy=EscalationPolicy.objects.create(
            name="pagers", severities=["critical"], tiers=[{"after_minutes": 5, "channels": ["ops"]}]
        ),
        counter=GuardrailCounter.objects.create(
            automation=f"rule:{rule.name}", target="queue", attempts=9, runs=3, paused_at=timezone.now()
        ),
        automation_policy=AutomationPolicy.of(
            "recovery:open_circuit_reduce_rate", risky=True, max_per_hour=4, loop_limit=8
        ),
        entry=LedgerEntry.objects.create(event_type="tests.entry", message="a ledger entry"),
        worker=worker,
        report=report,
        anomaly=Anomaly.objects.create(code="HIGH_FAILURE_RATE", severity="high", subject="worker:collector"),
        service=service,
        alert=ServiceAlert.objects.create(service=service, error_message="refused"),
        definition=pipeline_job.definition,
        pipeline_job=pipeline_job,
        suggestion=Suggestion.objects.create(kind="routing", subject="render", title="Prefer billing"),
        # Applicable: it names a service of this world and a change the orchestrator can make.
        approved_suggestion=Suggestion.objects.create(
            kind="slow_service",
            subject="billing:render",
            title="Drop slow",
            status="approved",
            action="lower_weight",
            evidence={"service": "billing", "task_type": "render"},
            impact={"before": {}},
        ),
        context=TaskContext.objects.create(name="campaign-a", data={"region": "eu"}),
        multiplier=TypeMultiplier.objects.create(task_type="render", multiplier=2),
        deduction=ScoreDeduction.objects.create(
            name="audit-backlog",
            conditions=[{"field": "jobs.pending", "op": ">", "value": 5000}],
            points=5,
            reason="A long backlog",
        ),
    )


def state() -> tuple:
    """What a write would change, in one comparable value."""
    loop = LoopState.get()
    return (
        Job.objects.count(),
        Rule.objects.count(),
        LedgerEntry.objects.count(),
        list(Worker.objects.values_list("name", "enabled").order_by("name")),
        list(Service.objects.values_list("name", "enabled", "base_url").order_by("name")),
        list(PipelineJob.objects.values_list("pk", "status", "stage").order_by("pk")),
        (loop.enabled, loop.interval_seconds, loop.cycle_count),
    )
