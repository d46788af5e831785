"""Admin for the control loop, the job queue and the ledger."""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.utils.html import format_html
from rest_framework import serializers

from orchestration.api.serializers import RuleSerializer
from orchestration.choices import BADGE_COLORS, JobStatus
from orchestration.jobs import queue
from orchestration.loop.cycle import CycleBusy, run_cycle
from orchestration.models import Action, Campaign, ChannelWindow, Job, Lane, LedgerEntry, LoopState, Rule
from orchestration.models.ledger import record


def badge(value: str, label: str | None = None):
    """A coloured pill for a state; colours come from choices.BADGE_COLORS."""
    color = BADGE_COLORS.get(str(value), "#6c757d")
    text_color = "#212529" if color in ("#ffc107", "#0dcaf0", "#adb5bd") else "#fff"
    return format_html(
        '<span style="background:{};color:{};padding:2px 8px;border-radius:10px;font-size:11px;'
        'font-weight:600;white-space:nowrap">{}</span>',
        color,
        text_color,
        label or value,
    )


def pretty_json(value) -> str:
    return format_html("<pre style='white-space:pre-wrap;margin:0'>{}</pre>", json.dumps(value, indent=2, default=str))


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "status_badge", "priority_badge", "lane", "attempts_display", "score", "created_at"]
    list_filter = ["status", "priority", "lane", "kind", "channel"]
    search_fields = ["id", "kind", "reference", "error", "lane"]
    date_hierarchy = "created_at"
    actions = ["retry_jobs", "cancel_jobs"]
    list_per_page = 50
    readonly_fields = [
        "status",
        "attempts",
        "lease_token",
        "lease_owner",
        "lease_expires_at",
        "cancel_requested",
        "created_at",
        "updated_at",
        "dispatched_at",
        "started_at",
        "finished_at",
        "result_pretty",
        "error",
        "auto_retries",
        "promoted",
        "downgraded",
        "forced",
    ]
    exclude = ["result"]
    raw_id_fields = ["campaign"]

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Job):
        return badge(obj.status)

    @admin.display(description="priority", ordering="-priority_rank")
    def priority_badge(self, obj: Job):
        return badge(obj.priority)

    @admin.display(description="attempts")
    def attempts_display(self, obj: Job) -> str:
        return f"{obj.attempts}/{obj.max_attempts}"

    @admin.display(description="result")
    def result_pretty(self, obj: Job):
        return pretty_json(obj.result)

    @admin.action(description="Retry selected failed/canceled jobs")
    def retry_jobs(self, request, queryset):
        done, skipped = 0, 0
        for job in queryset.filter(status__in=(JobStatus.FAILED, JobStatus.CANCELED)):
            queue.retry(job, actor=request.user.username)
            done += 1
        skipped = queryset.count() - done
        self.message_user(request, f"{done} job(s) queued again; {skipped} skipped (not failed or canceled).")

    @admin.action(description="Cancel selected jobs")
    def cancel_jobs(self, request, queryset):
        done = 0
        for job in queryset.filter(status__in=(JobStatus.PENDING, JobStatus.RETRY, JobStatus.PROCESSING)):
            queue.cancel(job, actor=request.user.username)
            done += 1
        self.message_user(request, f"{done} job(s) canceled or told to stop.")


@admin.register(Lane)
class LaneAdmin(admin.ModelAdmin):
    list_display = ["name", "concurrency_limit", "description"]
    search_fields = ["name"]


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = ["name", "channel", "budget", "active", "starts_at", "ends_at"]
    list_filter = ["active", "channel"]
    search_fields = ["name"]


@admin.register(ChannelWindow)
class ChannelWindowAdmin(admin.ModelAdmin):
    list_display = ["channel", "start_hour", "end_hour", "enabled"]
    list_editable = ["start_hour", "end_hour", "enabled"]


@admin.register(LedgerEntry)
class LedgerEntryAdmin(admin.ModelAdmin):
    """Read-only: the ledger is an audit trail."""

    list_display = ["created_at", "event_type", "severity_badge", "subject", "short_message", "actor"]
    list_filter = ["severity", "event_type", "actor"]
    search_fields = ["event_type", "subject", "message", "actor"]
    date_hierarchy = "created_at"
    readonly_fields = ["created_at", "event_type", "severity", "subject", "message", "data_pretty", "actor"]
    exclude = ["data"]
    list_per_page = 100
    show_full_result_count = False  # a COUNT(*) over a million rows on every page load is wasted work

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="severity", ordering="severity")
    def severity_badge(self, obj: LedgerEntry):
        return badge(obj.severity)

    @admin.display(description="message")
    def short_message(self, obj: LedgerEntry) -> str:
        return obj.message if len(obj.message) <= 120 else obj.message[:117] + "…"

    @admin.display(description="data")
    def data_pretty(self, obj: LedgerEntry):
        return pretty_json(obj.data)


class RuleAdminForm(forms.ModelForm):
    """The API's validation, so a bad condition shows next to the field, never reaches the loop."""

    class Meta:
        model = Rule
        fields = [
            "name",
            "description",
            "conditions",
            "action_type",
            "action_params",
            "priority",
            "enabled",
            "cooldown_seconds",
        ]

    def clean_conditions(self):
        value = self.cleaned_data["conditions"]
        try:
            return RuleSerializer().validate_conditions(value)
        except serializers.ValidationError as exc:
            raise forms.ValidationError(list(exc.detail)) from None

    def clean_action_type(self):
        value = self.cleaned_data["action_type"]
        try:
            return RuleSerializer().validate_action_type(value)
        except serializers.ValidationError as exc:
            raise forms.ValidationError(list(exc.detail)) from None


@admin.register(Rule)
class RuleAdmin(admin.ModelAdmin):
    form = RuleAdminForm
    list_display = [
        "name",
        "enabled_badge",
        "priority",
        "action_type",
        "conditions_text",
        "cooldown_seconds",
        "last_fired_at",
    ]
    list_filter = ["enabled", "action_type", "builtin"]
    search_fields = ["name", "description", "action_type"]
    actions = ["enable_rules", "disable_rules"]
    readonly_fields = ["last_fired_at", "builtin", "created_at", "updated_at"]

    @admin.display(description="enabled", ordering="enabled")
    def enabled_badge(self, obj: Rule):
        return badge("enabled" if obj.enabled else "disabled")

    @admin.display(description="conditions")
    def conditions_text(self, obj: Rule) -> str:
        return " AND ".join(f"{c.get('field')} {c.get('op')} {c.get('value')}" for c in obj.conditions or [])

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        record(
            f"rule.{'updated' if change else 'created'}",
            f"Rule {obj.name} {'updated' if change else 'created'} in the admin",
            subject=f"rule:{obj.name}",
            actor=request.user.username,
        )

    @admin.action(description="Enable selected rules")
    def enable_rules(self, request, queryset):
        self.message_user(request, f"{queryset.update(enabled=True)} rule(s) enabled.")

    @admin.action(description="Disable selected rules")
    def disable_rules(self, request, queryset):
        self.message_user(request, f"{queryset.update(enabled=False)} rule(s) disabled.")


@admin.register(Action)
class ActionAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "cycle",
        "action_type",
        "status_badge",
        "priority",
        "reason",
        "rule_name",
        "duration_ms",
    ]
    list_filter = ["status", "action_type", "rule_name"]
    search_fields = ["action_type", "reason", "rule_name", "target"]
    date_hierarchy = "created_at"
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Action):
        return badge(obj.status)


@admin.register(LoopState)
class LoopStateAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "enabled_badge",
        "interval_seconds",
        "dry_run",
        "cycle_count",
        "health",
        "last_cycle_started_at",
        "runner_owner",
    ]
    fields = [
        "enabled",
        "interval_seconds",
        "dry_run",
        "cycle_count",
        "last_cycle_started_at",
        "last_cycle_pretty",
        "runner_owner",
        "runner_seen_at",
        "lease_owner",
        "lease_expires_at",
    ]
    readonly_fields = [
        "cycle_count",
        "last_cycle_started_at",
        "last_cycle_pretty",
        "runner_owner",
        "runner_seen_at",
        "lease_owner",
        "lease_expires_at",
    ]
    actions = ["enable_loop", "disable_loop", "run_one_cycle", "dry_run_cycle"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def changelist_view(self, request, extra_context=None):
        LoopState.get()  # the singleton always shows up
        return super().changelist_view(request, extra_context)

    @admin.display(description="state", ordering="enabled")
    def enabled_badge(self, obj: LoopState):
        return badge("enabled" if obj.enabled else "disabled")

    @admin.display(description="health")
    def health(self, obj: LoopState):
        if obj.last_health_score is None:
            return "—"
        status = (obj.last_cycle or {}).get("health_status", "unknown")
        return badge(status, f"{obj.last_health_score} {status}")

    @admin.display(description="last cycle")
    def last_cycle_pretty(self, obj: LoopState):
        return pretty_json(obj.last_cycle)

    def save_model(self, request, obj, form, change):
        obj.next_cycle_due_at = None  # a new interval applies from the next tick
        super().save_model(request, obj, form, change)
        record(
            "orchestrator.settings_changed",
            f"Loop settings changed: {', '.join(form.changed_data) or 'nothing'}",
            data={k: form.cleaned_data.get(k) for k in form.changed_data},
            actor=request.user.username,
        )

    @admin.action(description="Enable the loop")
    def enable_loop(self, request, queryset):
        queryset.update(enabled=True, next_cycle_due_at=None)
        record("orchestrator.enabled", "Control loop enabled from the admin", actor=request.user.username)
        self.message_user(request, "Loop enabled.")

    @admin.action(description="Disable the loop")
    def disable_loop(self, request, queryset):
        queryset.update(enabled=False)
        record("orchestrator.disabled", "Control loop disabled from the admin", actor=request.user.username)
        self.message_user(request, "Loop disabled.")

    @admin.action(description="Run one cycle now")
    def run_one_cycle(self, request, queryset):
        self._run(request, dry_run=False)

    @admin.action(description="Dry-run one cycle (decide, execute nothing)")
    def dry_run_cycle(self, request, queryset):
        self._run(request, dry_run=True)

    def _run(self, request, *, dry_run: bool) -> None:
        try:
            result = run_cycle(dry_run=dry_run, manual=True, actor=request.user.username)
        except CycleBusy as exc:
            self.message_user(request, str(exc), messages.WARNING)
            return
        system = result["snapshot"]["system"]
        execution = result["execution"]
        self.message_user(
            request,
            f"Cycle {result['cycle']}{' (dry run)' if dry_run else ''}: health {system['health_score']} "
            f"({system['status']}); {result['decision']['summary']}; "
            f"{execution['succeeded']} succeeded, {execution['failed']} failed.",
        )
from orchestration.workers import admin as _workers_admin  # noqa: E402,F401
