"""Admin for the fleet: a fleet list (last run, last score, next run, breaker state)
with trigger/enable/disable actions, and read-only runs, reports and anomalies."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from orchestration.core import runnables
from orchestration.core.models import Anomaly, AnomalyStateError
from orchestration.core.models.ledger import record
from orchestration.core.secret_forms import MaskedSecretsForm
from orchestration.fleet import specs
from orchestration.fleet.choices import SkipReason
from orchestration.fleet.firing import BackfillError
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
    "canceled": "canceled",
    "buffered": "pending",
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


class BackfillForm(forms.Form):
    start = forms.DateTimeField(help_text="UTC, e.g. 2026-03-10 00:00")
    end = forms.DateTimeField(help_text="UTC; not in the future")


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
            "timezone",
            "overlap",
            "catch_up_seconds",
            "jitter_seconds",
            "pause_after_failures",
            "output_schema",
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

    # Schedule options a form may leave out: the model's defaults apply.
    OPTIONAL = ("timezone", "overlap", "catch_up_seconds", "jitter_seconds", "pause_after_failures")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in self.OPTIONAL:
            if name in self.fields:
                self.fields[name].required = False

    def clean(self):
        data = super().clean()
        for name in self.OPTIONAL:
            if data.get(name) in (None, "") and name not in self.errors:
                data[name] = Worker._meta.get_field(name).get_default()
        try:
            data["target"] = Worker.check_fields(data)["target"]
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
    actions = ["trigger_workers", "enable_workers", "disable_workers", "resume_workers"]
    readonly_fields = [
        "paused",
        "paused_at",
        "paused_reason",
        "consecutive_failures",
        "missed_runs",
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
        return [*fields, "next_five_runs", "related_links"] if obj is not None else fields

    def view_on_site(self, obj: Worker) -> str:
        return f"/workers/{obj.name}/"

    @admin.display(description="next five runs")
    def next_five_runs(self, obj: Worker):
        runs = obj.next_runs(5)
        backfill = reverse("admin:orchestration_worker_backfill", args=[obj.pk])
        if not runs:
            why = "paused: resume it" if obj.paused else "none (on demand, or disabled)"
            return format_html('{} · <a href="{}">backfill…</a>', why, backfill)
        zone = ZoneInfo(obj.timezone or "UTC")
        lines = format_html_join(
            "",
            "<li>{} UTC · {} {}</li>",
            (
                (d.strftime("%Y-%m-%d %H:%M:%S"), d.astimezone(zone).strftime("%Y-%m-%d %H:%M"), obj.timezone)
                for d in runs
            ),
        )
        return format_html('<ul class="next-runs">{}</ul><a href="{}">backfill a time range…</a>', lines, backfill)

    def get_urls(self):
        return [
            path(
                "<int:object_id>/backfill/",
                self.admin_site.admin_view(self.backfill_view),
                name="orchestration_worker_backfill",
            ),
            *super().get_urls(),
        ]

    def backfill_view(self, request, object_id: int):
        """Queue a run per due time in a range, under the worker's overlap policy."""
        worker = get_object_or_404(Worker, pk=object_id)
        if not self.has_change_permission(request, worker):
            raise PermissionDenied
        form = BackfillForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                queued = worker.backfill(
                    form.cleaned_data["start"], form.cleaned_data["end"], actor=request.user.username
                )
            except BackfillError as exc:
                form.add_error(exc.field if exc.field in form.fields else None, str(exc))
            else:
                self.message_user(request, f"Backfill of {worker.name}: {queued} run(s) queued.")
                return HttpResponseRedirect(reverse("admin:orchestration_worker_change", args=[worker.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Backfill {worker.name}",
            "worker": worker,
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/orchestration/worker/backfill.html", context)

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
        return super().get_queryset(request).select_related("circuit")

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

    @admin.display(description="next run (UTC)", ordering="next_due_at")
    def next_run(self, obj: Worker) -> str:
        if obj.paused:
            return "paused"
        return obj.next_due_at.strftime("%Y-%m-%d %H:%M:%S") if obj.next_due_at else "—"

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

    @admin.action(description="Resume selected workers paused after failures")
    def resume_workers(self, request, queryset):
        resumed = sum(worker.resume(actor=request.user.username) for worker in queryset)
        self.message_user(request, f"{resumed} worker(s) resumed.")


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
