from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.urls import path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from orchestration.routing import improvement
from orchestration.routing.learning import confidence
from orchestration.routing.models import (
    RouteStat,
    Suggestion,
    SuggestionStateError,
    SuggestionStatus,
    TaskContext,
    TaskOutcome,
    TypeMultiplier,
)
from orchestration.routing.strategies import strategy_names
from orchestrator_site.admin_scale import EstimatedCountPaginator, admin_link, badge, choices_filter, pretty_json

_SUGGESTION_COLORS = {
    "pending": "warning",
    "approved": "succeeded",
    "rejected": "failed",
    "applied": "completed",
    "reverted": "canceled",
}


def service_link(name: str):
    """A routed-to service's console page (check history, breaker)."""
    return format_html('<a href="/services/{}/">{}</a>', name, name) if name else "—"


def rate_badge(rate: float | None):
    if rate is None:
        return "—"
    state = "succeeded" if rate >= 0.9 else "warning" if rate >= 0.6 else "failed"
    return badge(state, f"{rate * 100:.1f}%")


@admin.register(RouteStat)
class RouteStatAdmin(admin.ModelAdmin):
    """What routing has learned: one row per (task type, service)."""

    list_display = ["task_type", "service", "count", "rate", "avg", "confidence_display", "last_outcome_at", "history"]
    list_filter = ["task_type", "service_name"]
    search_fields = ["task_type", "service_name"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="service", ordering="service_name")
    def service(self, obj: RouteStat):
        return service_link(obj.service_name)

    @admin.display(description="success rate")
    def rate(self, obj: RouteStat):
        return rate_badge(obj.success_rate)

    @admin.display(description="outcomes")
    def history(self, obj: RouteStat):
        url = reverse("admin:routing_taskoutcome_changelist")
        return format_html(
            '<a href="{}?task_type={}&service_name={}">history →</a>', url, obj.task_type, obj.service_name
        )

    @admin.display(description="avg ms")
    def avg(self, obj: RouteStat):
        return obj.avg_ms if obj.avg_ms is not None else "—"

    @admin.display(description="confidence")
    def confidence_display(self, obj: RouteStat) -> str:
        return f"{confidence(obj.successes, obj.count):.2f}"


def _route_values(field: str) -> list[str]:
    return sorted(set(RouteStat.objects.values_list(field, flat=True)))


@admin.register(TaskOutcome)
class TaskOutcomeAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "task_type",
        "service",
        "ok",
        "execution_ms",
        "status_code",
        "attempt",
        "strategy",
        "job_link",
    ]
    list_select_related = ["job"]
    # From the learned stats (one row per task type and service) and the strategy
    # registry, never a DISTINCT over every outcome.
    list_filter = [
        "success",
        choices_filter("task type", "task_type", lambda: _route_values("task_type")),
        choices_filter("service", "service_name", lambda: _route_values("service_name")),
        choices_filter("strategy", "strategy", strategy_names),
    ]
    search_fields = ["task_type", "service_name", "error", "context"]
    raw_id_fields = ["job"]
    paginator = EstimatedCountPaginator
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="result", ordering="success")
    def ok(self, obj: TaskOutcome):
        return badge("succeeded" if obj.success else "failed")

    @admin.display(description="service", ordering="service_name")
    def service(self, obj: TaskOutcome):
        return service_link(obj.service_name)

    @admin.display(description="job", ordering="job")
    def job_link(self, obj: TaskOutcome):
        return admin_link(obj.job, f"job {obj.job_id}") if obj.job_id else "—"


class AnalyzeForm(forms.Form):
    time_window_hours = forms.FloatField(min_value=0.01, max_value=24 * 90, initial=24)


@admin.register(Suggestion)
class SuggestionAdmin(admin.ModelAdmin):
    list_display = ["created_at", "title", "priority_badge", "status_badge", "kind", "decided_by"]
    list_filter = ["status", "priority", "kind"]
    search_fields = ["title", "subject", "description"]
    readonly_fields = [
        "kind",
        "subject",
        "title",
        "description",
        "action",
        "evidence_pretty",
        "priority",
        "status",
        "auto_apply",
        "decided_by",
        "decided_at",
        "impact_pretty",
        "change",
        "applied_by",
        "applied_at",
        "reverted_by",
        "reverted_at",
        "created_at",
    ]
    fields = [*readonly_fields, "notes"]
    actions = ["approve", "reject", "apply", "revert", "track"]
    change_list_template = "admin/routing/suggestion/change_list.html"

    def get_urls(self):
        analyze = self.admin_site.admin_view(require_POST(self.analyze_view))
        return [path("analyze/", analyze, name="routing_suggestion_analyze"), *super().get_urls()]

    def changelist_view(self, request, extra_context=None):
        extra = {"analyze_form": AnalyzeForm(), **(extra_context or {})}
        return super().changelist_view(request, extra)

    def analyze_view(self, request):
        """POST /api/v1/suggestions/analyze, from the admin: staff with change permission."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        form = AnalyzeForm(request.POST)
        if not form.is_valid():
            errors = "; ".join(f"{field}: {', '.join(e)}" for field, e in form.errors.items())
            self.message_user(request, f"Nothing analysed — {errors}", messages.ERROR)
        else:
            hours = form.cleaned_data["time_window_hours"]
            result = improvement.analyze(hours, actor=request.user.username)
            self.message_user(
                request,
                f"Analysed {result['outcomes']} outcome(s) over {hours:g} h: "
                f"{len(result['created'])} new suggestion(s) waiting for approval.",
            )
        return redirect("admin:routing_suggestion_changelist")

    def has_add_permission(self, request) -> bool:
        return False

    @admin.display(description="priority", ordering="priority")
    def priority_badge(self, obj: Suggestion):
        return badge({"high": "high", "medium": "warning", "low": "low"}[obj.priority], obj.priority)

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Suggestion):
        return badge(_SUGGESTION_COLORS.get(obj.status, "unknown"), obj.status)

    @admin.display(description="evidence")
    def evidence_pretty(self, obj: Suggestion):
        return pretty_json(obj.evidence)

    @admin.display(description="impact")
    def impact_pretty(self, obj: Suggestion):
        return pretty_json(obj.impact)

    def _decide(self, request, queryset, approve: bool) -> None:
        done = 0
        for suggestion in queryset.filter(status=SuggestionStatus.PENDING):
            before = improvement.current_metrics(suggestion) if approve else None
            try:
                suggestion.decide(approve, actor=request.user.username, before=before)
                done += 1
            except SuggestionStateError as exc:
                self.message_user(request, str(exc), messages.WARNING)
        self.message_user(request, f"{done} suggestion(s) {'approved' if approve else 'rejected'}.")

    @admin.action(description="Approve selected suggestions")
    def approve(self, request, queryset):
        self._decide(request, queryset, True)

    @admin.action(description="Reject selected suggestions")
    def reject(self, request, queryset):
        self._decide(request, queryset, False)

    @admin.action(description="Apply selected approved suggestions")
    def apply(self, request, queryset):
        self._apply(request, queryset, "apply")

    @admin.action(description="Revert selected applied suggestions")
    def revert(self, request, queryset):
        self._apply(request, queryset, "revert")

    def _apply(self, request, queryset, verb: str) -> None:
        # The API's model methods: the service or worker changes through its own write, in the ledger.
        done = 0
        for suggestion in queryset:
            write = suggestion.apply if verb == "apply" else suggestion.revert
            try:
                write(actor=request.user.username, metrics=improvement.current_metrics(suggestion))
                done += 1
            except (SuggestionStateError, improvement.NotApplicable) as exc:
                self.message_user(request, str(exc), messages.WARNING)
        self.message_user(request, f"{done} suggestion(s) {verb.removesuffix('e')}ed.")

    @admin.action(description="Record impact of selected approved suggestions")
    def track(self, request, queryset):
        done = 0
        for suggestion in queryset.filter(status__in=(SuggestionStatus.APPROVED, SuggestionStatus.APPLIED)):
            suggestion.track_impact(improvement.current_metrics(suggestion), actor=request.user.username)
            done += 1
        self.message_user(request, f"Impact recorded for {done} suggestion(s).")


@admin.register(TaskContext)
class TaskContextAdmin(admin.ModelAdmin):
    list_display = ["name", "updated_at"]
    search_fields = ["name"]


@admin.register(TypeMultiplier)
class TypeMultiplierAdmin(admin.ModelAdmin):
    list_display = ["task_type", "multiplier"]
    list_editable = ["multiplier"]
