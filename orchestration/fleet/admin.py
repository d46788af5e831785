"""Admin for the fleet: a fleet list (last run, last score, next run, breaker state)
with trigger/enable/disable actions, and read-only runs, reports and anomalies."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin, messages
from django.db.models import CharField, OuterRef, Subquery, Value
from django.db.models.functions import Concat
from django.urls import reverse
from django.utils.html import format_html

from orchestration.core import runnables
from orchestration.core.models import Anomaly, AnomalyStateError
from orchestration.core.models.ledger import record
from orchestration.core.secret_forms import MaskedSecretsForm
from orchestration.fleet import specs
from orchestration.fleet.choices import SkipReason
from orchestration.fleet.models import ScoreReport, Worker, WorkerRun
from orchestration.fleet.runner import WorkerStateError, trigger
from orchestrator_site.admin_scale import (
    EstimatedCountPaginator,
    GuardedDeleteAdmin,
    admin_link,
    badge,
    choices_filter,
    pretty_json,
)

RUN_BADGES = {
    "queued": "pending",
    "running": "processing",
    "succeeded": "completed",
    "timed_out": "failed",
    "crashed": "critical",
    "interrupted": "retry",
    "skipped": "canceled",
    "failed": "failed",
}


def worker_link(worker: Worker | None):
    """The worker's console page (runs, score trend, anomalies)."""
    if worker is None:
        return "—"
    return format_html('<a href="/workers/{}/">{}</a>', worker.name, worker.name)


def score_badge(value: float | None):
    if value is None:
        return "—"
    key = "completed" if value >= 80 else "retry" if value >= 50 else "failed"
    return badge(key, f"{value:.0f}")


class WorkerForm(MaskedSecretsForm):
    # Every text and JSON field masked (the target's URL, headers and body included).

    class Meta:
        model = Worker
        fields = [
            "name",
            "description",
            "category",
            "execution_model",
            "interval_seconds",
            "cron",
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
            "rate_factor",
            "lock_timeout_seconds",
        ]

    def clean(self):
        data = super().clean()
        try:
            data["target"] = specs.validate_target(data.get("target"))
            specs.validate_cadence(data.get("interval_seconds"), data.get("cron") or "", data.get("execution_model"))
            if data.get("timeout_seconds"):
                specs.validate_timeouts(
                    data["timeout_seconds"], data.get("max_timeout_seconds"), settings.Q_CLUSTER["timeout"]
                )
            names = specs.validate_names(data.get("depends_on"), "depends_on") + specs.validate_names(
                data.get("optional_depends_on"), "optional_depends_on"
            )
            name = data.get("name") or ""
            others = Worker.objects.exclude(name=name).values_list("name", "depends_on", "optional_depends_on")
            edges = {n: list(d or []) + list(o or []) for n, d, o in others}
            specs.validate_graph(name, names, edges, set(edges))
            stored = self.instance.target if self.instance.pk is not None else None
            if specs.defines_code(data["target"], stored) and not runnables.may_define(getattr(self, "user", None)):
                raise specs.SpecError({"target": runnables.RUN_CODE_DENIED})
        except specs.SpecError as exc:
            for field, message in exc.errors.items():
                self.add_error(field if field in self.fields else None, message)
        return data


@admin.register(Worker)
class WorkerAdmin(GuardedDeleteAdmin):
    form = WorkerForm
    list_display = [
        "name",
        "category",
        "enabled_badge",
        "cadence",
        "last_run",
        "score",
        "next_run",
        "breaker_badge",
        "links",
    ]
    list_filter = ["category", "execution_model", "enabled", "builtin", "last_status"]
    search_fields = ["name", "description"]
    actions = ["trigger_workers", "enable_workers", "disable_workers"]
    readonly_fields = [
        "builtin",
        "lock_owner",
        "lock_expires_at",
        "lock_failures",
        "last_run_at",
        "last_status",
        "last_success_at",
        "last_score",
        "created_at",
        "updated_at",
    ]
    exclude = ["lock_token"]
    guard_errors = (WorkerStateError,)

    def delete_blockers(self, obj: Worker) -> list[str]:
        return obj.downstream()

    def get_form(self, request, obj=None, **kwargs):
        # The form checks the run_code permission of whoever saves a python target.
        form = super().get_form(request, obj, **kwargs)
        return type(form.__name__, (form,), {"user": request.user})

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        return [*fields, "schedule_link", "related_links"] if obj is not None else fields

    def view_on_site(self, obj: Worker) -> str:
        return f"/workers/{obj.name}/"

    @admin.display(description="django-q2 schedule")
    def schedule_link(self, obj: Worker):
        from django_q.models import Schedule

        schedule = Schedule.objects.filter(name=obj.schedule_name).first()
        if schedule is None:
            return "none (on demand, or disabled)"
        url = reverse("admin:django_q_schedule_change", args=[schedule.pk])
        when = schedule.next_run.strftime("%Y-%m-%d %H:%M:%S UTC") if schedule.next_run else "—"
        return format_html('<a href="{}">{}</a> · next run {}', url, schedule.name, when)

    @admin.display(description="related")
    def related_links(self, obj: Worker):
        return self.links(obj)

    @admin.display(description="")
    def links(self, obj: Worker):
        runs = reverse("admin:orchestration_workerrun_changelist") + f"?worker__id__exact={obj.pk}"
        reports = reverse("admin:orchestration_scorereport_changelist") + f"?worker__id__exact={obj.pk}"
        anomalies = reverse("admin:orchestration_anomaly_changelist") + f"?worker={obj.pk}"
        return format_html(
            '<a href="/workers/{}/">console</a> · <a href="{}">runs</a> · <a href="{}">scores</a> · '
            '<a href="{}">anomalies</a>',
            obj.name,
            runs,
            reports,
            anomalies,
        )

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        verb = "updated" if change else "created"
        record(
            f"worker.{verb}",
            f"Worker {obj.name} {verb} in the admin",
            subject=obj.breaker_name,
            data={"changed": form.changed_data},
            actor=request.user.username,
        )

    def get_queryset(self, request):
        from django_q.models import Schedule

        key = Concat(Value("worker:"), "name", output_field=CharField())
        next_run = Schedule.objects.filter(name=OuterRef("schedule_key")).values("next_run")[:1]
        queryset = super().get_queryset(request).select_related("circuit")
        return queryset.annotate(schedule_key=key).annotate(next_run_at=Subquery(next_run))

    @admin.display(description="enabled", ordering="enabled")
    def enabled_badge(self, obj: Worker):
        return badge("enabled" if obj.enabled else "disabled")

    @admin.display(description="cadence")
    def cadence(self, obj: Worker) -> str:
        return obj.cadence_text()

    @admin.display(description="last run", ordering="last_run_at")
    def last_run(self, obj: Worker):
        if not obj.last_run_at:
            return "never"
        return format_html(
            "{} {}",
            badge(RUN_BADGES.get(obj.last_status, "unknown"), obj.last_status),
            obj.last_run_at.strftime("%Y-%m-%d %H:%M:%S"),
        )

    @admin.display(description="last score", ordering="last_score")
    def score(self, obj: Worker):
        return score_badge(obj.last_score)

    @admin.display(description="next run (UTC)", ordering="next_run_at")
    def next_run(self, obj: Worker) -> str:
        value = getattr(obj, "next_run_at", None)
        return value.strftime("%Y-%m-%d %H:%M:%S") if value else "—"

    @admin.display(description="breaker")
    def breaker_badge(self, obj: Worker):
        return badge(obj.breaker_state)

    @admin.action(description="Trigger selected workers now")
    def trigger_workers(self, request, queryset):
        done = []
        for worker in queryset:
            try:
                done.append(trigger(worker, actor=request.user.username).execution_id[:8])
            except WorkerStateError as exc:
                self.message_user(request, str(exc), messages.WARNING)
        if done:
            self.message_user(request, f"{len(done)} run(s) queued: {', '.join(done)}")

    def _switch(self, request, queryset, enabled: bool) -> None:
        changed = sum(worker.set_enabled(enabled, actor=request.user.username) for worker in queryset)
        self.message_user(request, f"{changed} worker(s) {'enabled' if enabled else 'disabled'}.")

    @admin.action(description="Enable selected workers")
    def enable_workers(self, request, queryset):
        self._switch(request, queryset, True)

    @admin.action(description="Disable selected workers")
    def disable_workers(self, request, queryset):
        self._switch(request, queryset, False)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(WorkerRun)
class WorkerRunAdmin(ReadOnlyAdmin):
    list_display = [
        "execution_short",
        "worker_console",
        "status_badge",
        "trigger",
        "queued_at",
        "duration_ms",
        "skipped_reason",
        "job_link",
    ]
    # Choices and the workers table, never a DISTINCT over the runs.
    list_filter = [
        "status",
        "trigger",
        choices_filter("skipped reason", "skipped_reason", lambda: SkipReason.values),
        "worker",
    ]
    search_fields = ["execution_id", "worker__name", "error"]
    list_select_related = ["worker", "job"]
    paginator = EstimatedCountPaginator
    show_full_result_count = False

    @admin.display(description="execution")
    def execution_short(self, obj: WorkerRun) -> str:
        return obj.execution_id[:12]

    @admin.display(description="worker", ordering="worker__name")
    def worker_console(self, obj: WorkerRun):
        return worker_link(obj.worker)

    @admin.display(description="queue job")
    def job_link(self, obj: WorkerRun):
        return admin_link(obj.job, f"job {obj.job_id}") if obj.job_id else "—"

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: WorkerRun):
        return badge(RUN_BADGES.get(obj.status, "unknown"), obj.status)


@admin.register(ScoreReport)
class ScoreReportAdmin(ReadOnlyAdmin):
    list_display = [
        "worker_console",
        "period",
        "created_at",
        "overall",
        "reliability_score",
        "performance_score",
        "data_quality_score",
        "resource_score",
        "runs",
    ]
    list_filter = ["period", "success", "worker"]
    list_select_related = ["worker"]

    @admin.display(description="overall", ordering="overall_score")
    def overall(self, obj: ScoreReport):
        return score_badge(obj.overall_score)

    @admin.display(description="worker", ordering="worker__name")
    def worker_console(self, obj: ScoreReport):
        return worker_link(obj.worker)


@admin.register(Anomaly)
class AnomalyAdmin(ReadOnlyAdmin):
    list_display = [
        "code",
        "severity_badge",
        "subject_link",
        "detected_at",
        "resolved_at",
        "occurrences",
        "recovery_attempts",
        "alert_state",
        "escalation_tier",
        "acknowledged_by",
        "resolved_by",
    ]
    list_filter = [
        "severity",
        "code",
        "alert_state",
        ("resolved_at", admin.EmptyFieldListFilter),
        ("acknowledged_at", admin.EmptyFieldListFilter),
    ]
    actions = ["acknowledge", "resolve"]
    search_fields = ["code", "subject"]
    readonly_fields = ["recovery_pretty"]
    list_select_related = ["worker"]

    @admin.display(description="subject", ordering="subject")
    def subject_link(self, obj: Anomaly):
        return worker_link(obj.worker) if obj.worker_id else obj.subject

    @admin.display(description="severity", ordering="severity")
    def severity_badge(self, obj: Anomaly):
        return badge(obj.severity)

    @admin.display(description="recovery")
    def recovery_pretty(self, obj: Anomaly):
        return pretty_json(obj.recovery)

    @admin.action(description="Acknowledge selected anomalies (stops their escalation)")
    def acknowledge(self, request, queryset):
        self._write(request, queryset, "acknowledge")

    @admin.action(description="Resolve selected anomalies")
    def resolve(self, request, queryset):
        self._write(request, queryset, "resolve")

    def _write(self, request, queryset, verb: str) -> None:
        done, refused = 0, []
        for anomaly in queryset:
            try:
                write = anomaly.acknowledge if verb == "acknowledge" else anomaly.resolve_by
                write(actor=request.user.username)
                done += 1
            except AnomalyStateError as exc:
                refused.append(str(exc))
        self.message_user(request, f"{done} anomal{'y' if done == 1 else 'ies'} {verb}d.")
        if refused:
            self.message_user(request, "; ".join(refused[:5]), level=messages.WARNING)
