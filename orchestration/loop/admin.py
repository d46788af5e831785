"""Admin for the control loop, the job queue and the ledger."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import Count, Q
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied

from orchestration.core.choices import JobStatus
from orchestration.core.escalation_rules import TierError, validate_tiers
from orchestration.core.jobs import queue
from orchestration.core.jobs.registry import kind_names
from orchestration.core.models import Campaign, EscalationPolicy, Job, JobRollup, Lane, LedgerEntry
from orchestration.core.models.ledger import record
from orchestration.core.secret_forms import MaskedSecretsForm
from orchestration.loop.api.serializers import JobCreateSerializer, RuleSerializer, ScoreDeductionSerializer
from orchestration.loop.cycle import CycleBusy, run_cycle
from orchestration.loop.executor import action_types
from orchestration.loop.models import (
    Action,
    ActionStateError,
    AutomationPolicy,
    ChannelWindow,
    GuardrailCounter,
    LoopState,
    Rule,
    ScoreDeduction,
)
from orchestrator_site.admin_scale import (
    BigTableAdmin,
    admin_link,
    as_int,
    as_text,
    badge,
    choices_filter,
    pretty_json,
    subject_link,
)
from orchestrator_site.api.filters import event_type_prefix


class JobChangeForm(MaskedSecretsForm):
    """A queued job's page: its payload (and every other text) with secrets masked."""


class JobAddForm(forms.ModelForm):
    """Adding a job in the admin means queueing it: the API's validation (known kind,
    payload an object) with errors by the field, then ``queue.enqueue``."""

    kind = forms.ChoiceField(choices=())

    class Meta:
        model = Job
        fields = [
            "kind",
            "payload",
            "priority",
            "lane",
            "max_attempts",
            "backoff",
            "not_before",
            "score",
            "channel",
            "reference",
            "campaign",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["kind"].choices = [(k, k) for k in kind_names(client=True)]
        self.fields["payload"].initial = dict

    def clean(self):
        data = super().clean()
        incoming = {k: v for k, v in data.items() if k != "campaign" and v is not None}
        checked = JobCreateSerializer(data=incoming, context={"user": getattr(self, "user", None)})
        try:
            valid = checked.is_valid()
        except PermissionDenied as exc:
            self.add_error("payload", str(exc.detail))
            return data
        if not valid:
            for field, errors in checked.errors.items():
                messages = errors if isinstance(errors, list) else [f"{k}: {v}" for k, v in errors.items()]
                self.add_error(field if field in self.fields else None, [str(e) for e in messages])
        return data


admin.site.site_header = "Orchestrator administration"
admin.site.site_title = "Orchestrator admin"
admin.site.index_title = "Loop, queue, fleet, services, pipelines and routing"
admin.site.site_url = "/"  # "View site" opens the console dashboard


def _lanes() -> list[str]:
    return sorted({"default", *Lane.objects.values_list("name", flat=True)})


def _channels() -> list[str]:
    windows = ChannelWindow.objects.values_list("channel", flat=True)
    campaigns = Campaign.objects.exclude(channel="").values_list("channel", flat=True)
    return sorted({*windows, *campaigns})


# Namespaces of the ledger's event types (the part before the first dot).
EVENT_GROUPS = ("orchestrator", "job", "worker", "health", "service", "pipeline", "routing", "rule", "lane", "auth")


def _actors() -> list[str]:
    from django.contrib.auth import get_user_model

    users = get_user_model().objects.order_by("username").values_list("username", flat=True)[:200]
    return ["system", *users]


@admin.register(Job)
class JobAdmin(BigTableAdmin):
    list_display = [
        "id",
        "kind",
        "status_badge",
        "priority_badge",
        "lane",
        "attempts_display",
        "score",
        "campaign_link",
        "created_at",
    ]
    # Choices and small tables, never a DISTINCT over the jobs.
    list_filter = [
        "status",
        "priority",
        choices_filter("lane", "lane", _lanes),
        choices_filter("kind", "kind", kind_names),
        choices_filter("channel", "channel", _channels),
    ]
    # Each an index: the primary key, job_kind_status_idx, job_reference_idx, job_lane_status_idx.
    exact_search = (("id", as_int), ("kind", as_text), ("reference", as_text), ("lane", as_text))
    sortable_by = ["id", "created_at"]
    actions = ["retry_jobs", "cancel_jobs"]
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
        "deferred_by",
        "requested_not_before",
        "failed_permanently",
    ]
    exclude = ["result"]
    form = JobChangeForm
    raw_id_fields = ["campaign"]
    list_select_related = ["campaign"]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            # The add form checks the run_code permission of whoever queues the job.
            kwargs["form"] = type("JobAddForm", (JobAddForm,), {"user": request.user})
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return JobAddForm.Meta.fields
        return super().get_fields(request, obj)

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        if change:
            if "not_before" in form.changed_data:
                # A person's not_before is the job's own from now on: no automation undoes it.
                obj.deferred_by, obj.requested_not_before = "", None
            return super().save_model(request, obj, form, change)
        data = form.cleaned_data
        job = queue.enqueue(
            data["kind"],
            data.get("payload") or {},
            priority=data["priority"],
            lane=data["lane"],
            max_attempts=data["max_attempts"],
            backoff=data["backoff"],
            not_before=data.get("not_before"),
            score=data.get("score"),
            channel=data.get("channel") or "",
            reference=data.get("reference") or "",
            campaign=data.get("campaign"),
            actor=request.user.username,
        )
        # The admin redirects to the object it saved: hand it the queued job.
        obj.__dict__.update({k: v for k, v in job.__dict__.items() if k != "_state"})
        obj._state.adding = False

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Job):
        return badge(obj.status)

    @admin.display(description="campaign", ordering="campaign__name")
    def campaign_link(self, obj: Job):
        return admin_link(obj.campaign) if obj.campaign_id else "—"

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


@admin.register(JobRollup)
class JobRollupAdmin(admin.ModelAdmin):
    """Read-only: what job retention kept of the jobs it deleted."""

    list_display = ["day", "status", "lane", "kind", "count"]
    list_filter = ["status"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Lane)
class LaneAdmin(admin.ModelAdmin):
    list_display = ["name", "concurrency_limit", "jobs_link", "description"]
    search_fields = ["name"]

    def get_queryset(self, request):
        from django.db.models import Count, OuterRef, Subquery

        live = (
            Job.objects.filter(
                lane=OuterRef("name"), status__in=(JobStatus.PENDING, JobStatus.RETRY, JobStatus.PROCESSING)
            )
            .order_by()
            .values("lane")
            .annotate(n=Count("id"))
            .values("n")
        )
        return super().get_queryset(request).annotate(live_jobs=Subquery(live))

    @admin.display(description="live jobs", ordering="live_jobs")
    def jobs_link(self, obj: Lane):
        url = reverse("admin:orchestration_job_changelist") + f"?lane={obj.name}"
        return format_html('<a href="{}">{} pending/processing</a>', url, obj.live_jobs or 0)


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = ["name", "channel", "budget", "active", "starts_at", "ends_at", "jobs_link"]
    list_filter = ["active", "channel"]
    search_fields = ["name"]

    @admin.display(description="jobs")
    def jobs_link(self, obj: Campaign):
        url = reverse("admin:orchestration_job_changelist") + f"?campaign={obj.pk}"
        return format_html('<a href="{}">jobs →</a>', url)


@admin.register(ChannelWindow)
class ChannelWindowAdmin(admin.ModelAdmin):
    list_display = ["channel", "start_hour", "end_hour", "enabled"]
    list_editable = ["start_hour", "end_hour", "enabled"]


@admin.register(LedgerEntry)
class LedgerEntryAdmin(BigTableAdmin):
    """Read-only: the ledger is an audit trail."""

    list_display = ["created_at", "event_type", "severity_badge", "subject_display", "short_message", "actor"]
    list_filter = [
        "severity",
        choices_filter("event type", "event_type", lambda: [f"{g}." for g in EVENT_GROUPS], prefix=event_type_prefix),
        choices_filter("actor", "actor", _actors),
    ]
    # Each an index: ledger_event_prefix_idx, ledger_subject_idx, ledger_actor_idx.
    exact_search = (("event_type", as_text), ("subject", as_text), ("actor", as_text))
    sortable_by = ["created_at"]
    readonly_fields = ["created_at", "event_type", "severity", "subject", "message", "data_pretty", "actor"]
    exclude = ["data"]
    list_per_page = 100

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="severity", ordering="severity")
    def severity_badge(self, obj: LedgerEntry):
        return badge(obj.severity)

    @admin.display(description="subject", ordering="subject")
    def subject_display(self, obj: LedgerEntry):
        return subject_link(obj.subject)

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
            "mode",
            "max_per_hour",
            "loop_limit",
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
        "mode_display",
        "max_per_hour",
        "effectiveness",
        "last_fired_at",
        "actions_link",
    ]
    list_filter = ["enabled", "mode", "action_type", "builtin"]
    search_fields = ["name", "description", "action_type"]
    actions = ["enable_rules", "disable_rules"]
    readonly_fields = ["last_fired_at", "builtin", "created_at", "updated_at"]

    @admin.display(description="enabled", ordering="enabled")
    def enabled_badge(self, obj: Rule):
        return badge("enabled" if obj.enabled else "disabled")

    @admin.display(description="actions")
    def actions_link(self, obj: Rule):
        url = reverse("admin:orchestration_action_changelist") + f"?rule_name={obj.name}"
        return format_html('<a href="{}">history →</a>', url)

    @admin.display(description="conditions")
    def conditions_text(self, obj: Rule) -> str:
        return " AND ".join(f"{c.get('field')} {c.get('op')} {c.get('value')}" for c in obj.conditions or [])

    def get_queryset(self, request):
        verified = Q(actions__effective__isnull=False)
        return (
            super()
            .get_queryset(request)
            .annotate(
                verified_count=Count("actions", filter=verified),
                effective_count=Count("actions", filter=Q(actions__effective=True)),
            )
        )

    @admin.display(description="mode", ordering="mode")
    def mode_display(self, obj: Rule) -> str:
        return obj.effective_mode + (" (risky)" if obj.risky else "")

    @admin.display(description="effective")
    def effectiveness(self, obj: Rule) -> str:
        """Of its verified actions, how many cleared the condition that fired them."""
        verified = getattr(obj, "verified_count", 0)
        if not verified:
            return "— (none verified)"
        effective = getattr(obj, "effective_count", 0)
        return f"{effective}/{verified} ({effective / verified:.0%})"

    def save_model(self, request, obj, form, change):
        # A change of mode goes through the rule's own write (its ledger entry names who
        # let a risky rule run on its own).
        mode = obj.mode
        if change and "mode" in form.changed_data:
            obj.mode = form.initial.get("mode") or mode
        super().save_model(request, obj, form, change)
        if change and mode != obj.mode:
            obj.set_mode(mode, actor=request.user.username)
        record(
            f"rule.{'updated' if change else 'created'}",
            f"Rule {obj.name} {'updated' if change else 'created'} in the admin",
            subject=f"rule:{obj.name}",
            actor=request.user.username,
        )

    def delete_model(self, request, obj):
        record(
            "rule.deleted",
            f"Rule {obj.name} deleted in the admin",
            subject=f"rule:{obj.name}",
            actor=request.user.username,
        )
        super().delete_model(request, obj)

    @admin.action(description="Enable selected rules")
    def enable_rules(self, request, queryset):
        self._switch(request, queryset, True)

    @admin.action(description="Disable selected rules")
    def disable_rules(self, request, queryset):
        self._switch(request, queryset, False)

    def _switch(self, request, queryset, enabled: bool) -> None:
        changed = sum(rule.set_enabled(enabled, actor=request.user.username) for rule in queryset)
        self.message_user(request, f"{changed} rule(s) {'enabled' if enabled else 'disabled'}.")


class ScoreDeductionAdminForm(forms.ModelForm):
    """The API's validation, so a bad condition shows next to the field."""

    class Meta:
        model = ScoreDeduction
        fields = ["name", "conditions", "points", "per_field", "max_points", "reason", "scope", "enabled"]

    def clean_conditions(self):
        try:
            return ScoreDeductionSerializer().validate_condition(self.cleaned_data["conditions"])
        except serializers.ValidationError as exc:
            raise forms.ValidationError(list(exc.detail)) from None

    def clean_per_field(self):
        try:
            return ScoreDeductionSerializer().validate_per_field(self.cleaned_data["per_field"])
        except serializers.ValidationError as exc:
            raise forms.ValidationError(list(exc.detail)) from None


@admin.register(ScoreDeduction)
class ScoreDeductionAdmin(admin.ModelAdmin):
    """The health score is 100 minus the enabled deductions that apply: each row here is
    one line of that sum, with the condition that makes it apply."""

    form = ScoreDeductionAdminForm
    list_display = ["name", "enabled_badge", "points_text", "conditions_text", "reason", "scope"]
    list_filter = ["enabled", "scope", "builtin"]
    search_fields = ["name", "reason"]
    actions = ["enable_deductions", "disable_deductions"]
    readonly_fields = ["builtin", "created_at", "updated_at"]

    @admin.display(description="enabled", ordering="enabled")
    def enabled_badge(self, obj: ScoreDeduction):
        return badge("enabled" if obj.enabled else "disabled")

    @admin.display(description="points", ordering="points")
    def points_text(self, obj: ScoreDeduction) -> str:
        if not obj.per_field:
            return f"−{obj.points}"
        cap = f", at most {obj.max_points}" if obj.max_points is not None else ""
        return f"−{obj.points} per {obj.per_field}{cap}"

    @admin.display(description="applies when")
    def conditions_text(self, obj: ScoreDeduction) -> str:
        return " AND ".join(f"{c.get('field')} {c.get('op')} {c.get('value')}" for c in obj.conditions or [])

    def save_model(self, request, obj, form, change):
        verb = "updated" if change else "created"
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            record(
                f"score_deduction.{verb}",
                f"Health-score deduction {obj.name} {verb} in the admin",
                subject=f"score_deduction:{obj.name}",
                data={"changed": list(form.changed_data)},
                actor=request.user.username,
            )

    def delete_model(self, request, obj):
        with transaction.atomic():
            record(
                "score_deduction.deleted",
                f"Health-score deduction {obj.name} deleted in the admin",
                subject=f"score_deduction:{obj.name}",
                actor=request.user.username,
            )
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            self.delete_model(request, obj)

    @admin.action(description="Enable selected deductions")
    def enable_deductions(self, request, queryset):
        self._switch(request, queryset, True)

    @admin.action(description="Disable selected deductions")
    def disable_deductions(self, request, queryset):
        self._switch(request, queryset, False)

    def _switch(self, request, queryset, enabled: bool) -> None:
        changed = sum(d.set_enabled(enabled, actor=request.user.username) for d in queryset)
        self.message_user(request, f"{changed} deduction(s) {'enabled' if enabled else 'disabled'}.")


def _action_types() -> list[str]:

    return sorted(action_types())


@admin.register(Action)
class ActionAdmin(BigTableAdmin):
    list_display = [
        "created_at",
        "cycle",
        "action_type",
        "status_badge",
        "priority",
        "reason",
        "rule_link",
        "target_display",
        "effective_display",
        "decided_by",
        "duration_ms",
    ]
    list_filter = [
        "status",
        "effective",
        choices_filter("action type", "action_type", _action_types),
        choices_filter("rule", "rule_name", lambda: Rule.objects.order_by("name").values_list("name", flat=True)),
    ]
    list_select_related = ["rule"]
    search_fields = ["action_type", "reason", "rule_name", "target"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Action):
        return badge(obj.status)

    @admin.display(description="rule", ordering="rule_name")
    def rule_link(self, obj: Action):
        return admin_link(obj.rule) if obj.rule_id else (obj.rule_name or "—")

    @admin.display(description="target", ordering="target")
    def target_display(self, obj: Action):
        return subject_link(obj.target)

    @admin.display(description="effective", ordering="effective")
    def effective_display(self, obj: Action) -> str:
        if obj.effective is None:
            return "not verified yet" if obj.verify_after else "—"
        return f"{'yes' if obj.effective else 'no'}: {obj.verification}"

    actions = ["approve_actions", "reject_actions"]

    @admin.action(description="Approve selected actions (awaiting approval)")
    def approve_actions(self, request, queryset):
        self._decide(request, queryset, True)

    @admin.action(description="Reject selected actions (awaiting approval)")
    def reject_actions(self, request, queryset):
        self._decide(request, queryset, False)

    def _decide(self, request, queryset, approve: bool) -> None:
        done, refused = 0, []
        for action in queryset:
            try:
                action.decide(approve, actor=request.user.username)
                done += 1
            except ActionStateError as exc:
                refused.append(str(exc))
        self.message_user(request, f"{done} action(s) {'approved' if approve else 'rejected'}.")
        if refused:
            self.message_user(request, "; ".join(refused[:5]), level=messages.WARNING)


@admin.register(GuardrailCounter)
class GuardrailCounterAdmin(admin.ModelAdmin):
    """How often each automation acted on each target this hour, and what loop
    protection paused (a person resumes it here)."""

    list_display = ["automation", "target", "runs", "attempts", "window_started_at", "paused_at", "last_reason"]
    list_filter = ["automation", "last_outcome"]
    search_fields = ["automation", "target"]
    actions = ["resume"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(description="Resume the selected paused automations")
    def resume(self, request, queryset):
        done = sum(row.resume(actor=request.user.username) for row in queryset)
        self.message_user(request, f"{done} automation(s) resumed.")


class AutomationPolicyForm(forms.ModelForm):
    class Meta:
        model = AutomationPolicy
        fields = ["mode", "max_per_hour", "loop_limit"]


@admin.register(AutomationPolicy)
class AutomationPolicyAdmin(admin.ModelAdmin):
    """The guardrails of recovery strategies and the routing ejection."""

    form = AutomationPolicyForm
    list_display = ["name", "mode", "risky", "max_per_hour", "loop_limit", "updated_by", "updated_at"]
    readonly_fields = ["name", "risky", "updated_by", "updated_at"]

    def has_add_permission(self, request) -> bool:
        return False  # each row is made by its automation the first time it acts

    def save_model(self, request, obj, form, change):
        fields = {name: form.cleaned_data[name] for name in form.changed_data}
        if fields:
            AutomationPolicy.objects.get(pk=obj.pk).configure(actor=request.user.username, **fields)


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
        "dashboard",
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

    @admin.display(description="console")
    def dashboard(self, obj: LoopState):
        return mark_safe('<a href="/">dashboard →</a>')

    @admin.display(description="last cycle")
    def last_cycle_pretty(self, obj: LoopState):
        return pretty_json(obj.last_cycle)

    def save_model(self, request, obj, form, change):
        # Only the fields the person changed, through the same writes as the API's.
        LoopState.configure(
            actor=request.user.username, **{name: form.cleaned_data[name] for name in form.changed_data}
        )
        obj.refresh_from_db()

    @admin.action(description="Enable the loop")
    def enable_loop(self, request, queryset):
        LoopState.enable(actor=request.user.username)
        self.message_user(request, "Loop enabled.")

    @admin.action(description="Disable the loop")
    def disable_loop(self, request, queryset):
        LoopState.disable(actor=request.user.username)
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


class EscalationPolicyForm(forms.ModelForm):
    class Meta:
        model = EscalationPolicy
        fields = ["name", "severities", "after_recovery", "tiers", "enabled"]

    def clean_tiers(self):
        try:
            return validate_tiers(self.cleaned_data["tiers"])
        except TierError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_severities(self):
        value = self.cleaned_data["severities"] or []
        known = {"critical", "high", "medium", "low"}
        if not isinstance(value, list) or not set(value) <= known:
            raise forms.ValidationError(f"a list of severities among {', '.join(sorted(known))}")
        return value


@admin.register(EscalationPolicy)
class EscalationPolicyAdmin(admin.ModelAdmin):
    form = EscalationPolicyForm
    list_display = ["name", "enabled", "severities", "after_recovery", "tiers_text", "updated_at"]

    @admin.display(description="tiers")
    def tiers_text(self, obj: EscalationPolicy) -> str:
        return "; ".join(
            f"after {t.get('after_minutes')} min → {', '.join(t.get('channels') or []) or 'escalation route'}"
            + (f", every {t['repeat_minutes']} min" if t.get("repeat_minutes") else "")
            for t in obj.tiers or []
            if isinstance(t, dict)
        )

    def save_model(self, request, obj, form, change):
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            verb = "updated" if change else "created"
            record(
                f"escalation_policy.{verb}",
                f"Escalation policy {obj.name} {verb} in the admin",
                subject=f"escalation_policy:{obj.name}",
                actor=request.user.username,
            )

    def delete_model(self, request, obj):
        with transaction.atomic():
            record(
                "escalation_policy.deleted",
                f"Escalation policy {obj.name} deleted in the admin",
                subject=f"escalation_policy:{obj.name}",
                actor=request.user.username,
            )
            super().delete_model(request, obj)
