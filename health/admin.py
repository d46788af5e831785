"""Admin for services, breakers, check history and alerts, with coloured badges."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db import models
from django.urls import reverse
from django.utils.html import format_html

from health import maintenance as windows
from health.models import (
    CircuitBreaker,
    DependencyError,
    HealthCheck,
    MaintenanceWindow,
    Service,
    ServiceAlert,
    StatusPage,
)
from health.report import display_health
from health.sweep import check_services
from orchestration.core.models.ledger import record
from orchestration.core.secret_forms import MaskedSecretsForm
from orchestrator_site.admin_scale import (
    BigTableAdmin,
    GuardedDeleteAdmin,
    as_int,
    as_text,
    badge,
)


def console_link(service: Service):
    return format_html(
        '<a href="/services/{}/" title="Console page: checks, chart, transitions">{}</a>', service.name, service.name
    )


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class ServiceForm(MaskedSecretsForm):
    """Shows the URL with its user-info and secret query values masked; saving the page
    back keeps the stored ones."""


@admin.register(Service)
class ServiceAdmin(GuardedDeleteAdmin):
    form = ServiceForm
    list_display = [
        "name",
        "health_badge",
        "breaker_badge",
        "uptime",
        "last_check_at",
        "response_time",
        "short_error",
        "enabled_badge",
        "links",
    ]
    list_filter = ["enabled", "health", "circuit__state", "category"]
    search_fields = ["name", "base_url", "description"]
    filter_horizontal = ["depends_on"]
    formfield_overrides = {models.URLField: {"assume_scheme": "http"}}
    actions = ["check_now", "reset_circuit", "enable", "disable"]
    readonly_fields = [
        "health",
        "total_checks",
        "successful_checks",
        "consecutive_failures",
        "last_check_at",
        "last_response_time_ms",
        "last_status_code",
        "last_error",
        "next_check_at",
        "circuit",
    ]
    fieldsets = [
        (None, {"fields": ["name", "description", "base_url", "health_path", "enabled", "depends_on"]}),
        (
            "Checks and breaker",
            {
                "fields": [
                    "timeout_seconds",
                    "check_interval_seconds",
                    "failure_threshold",
                    "success_threshold",
                    "open_timeout_seconds",
                ]
            },
        ),
        ("Routing", {"fields": ["capabilities", "weight"]}),
        ("Last results", {"fields": readonly_fields}),
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("circuit")

    def view_on_site(self, obj: Service) -> str:
        return f"/services/{obj.name}/"

    @admin.display(description="")
    def links(self, obj: Service):
        checks = reverse("admin:health_healthcheck_changelist") + f"?service__id__exact={obj.pk}"
        breaker = reverse("admin:health_circuitbreaker_change", args=[obj.circuit_id]) if obj.circuit_id else None
        return format_html(
            '<a href="/services/{}/">console</a> · <a href="{}">checks</a>{}',
            obj.name,
            checks,
            format_html(' · <a href="{}">breaker</a>', breaker) if breaker else "",
        )

    def save_model(self, request, obj, form, change):
        if change and "enabled" in form.changed_data and not obj.enabled:
            blockers = obj.enabled_dependents()
            if blockers:
                # Same guard as the API's 409: keep it enabled and say why.
                obj.enabled = True
                self.message_user(
                    request, f"{obj.name} stays enabled: required by {', '.join(blockers)}", messages.ERROR
                )
        super().save_model(request, obj, form, change)
        verb = "updated" if change else "created"
        record(
            f"service.{verb}",
            f"Service {obj.name} {verb} in the admin",
            subject=f"service:{obj.name}",
            data={"changed": form.changed_data},
            actor=request.user.username,
        )

    guard_errors = (DependencyError,)

    def delete_blockers(self, obj: Service) -> list[str]:
        return obj.enabled_dependents()

    @admin.display(description="health", ordering="health")
    def health_badge(self, obj: Service):
        return badge(display_health(obj))

    @admin.display(description="breaker", ordering="circuit__state")
    def breaker_badge(self, obj: Service):
        return badge(obj.breaker_state)

    @admin.display(description="uptime")
    def uptime(self, obj: Service) -> str:
        value = obj.uptime_percentage
        return "–" if value is None else f"{value:.2f}% of {obj.total_checks}"

    @admin.display(description="response", ordering="last_response_time_ms")
    def response_time(self, obj: Service) -> str:
        return "–" if obj.last_response_time_ms is None else f"{obj.last_response_time_ms:.0f} ms"

    @admin.display(description="last error")
    def short_error(self, obj: Service) -> str:
        return (obj.last_error[:80] + "…") if len(obj.last_error) > 80 else obj.last_error

    @admin.display(description="enabled", ordering="enabled")
    def enabled_badge(self, obj: Service):
        return badge("enabled" if obj.enabled else "disabled")

    @admin.action(description="Check now")
    def check_now(self, request, queryset):
        actor = request.user.username
        sweep = check_services(list(queryset.filter(enabled=True).select_related("circuit")), actor=actor)
        # Who asked, as POST /health/trigger records it.
        record(
            "health.sweep_triggered",
            f"Health check of {len(sweep.checked)} service(s) triggered by {actor} in the admin: "
            f"{len(sweep.failed)} failed",
            actor=actor,
            data=sweep.as_dict(),
        )
        self.message_user(
            request,
            f"Checked {len(sweep.checked)}: {len(sweep.failed)} failed, "
            f"{len(sweep.skipped_circuit_open)} skipped (circuit open).",
        )

    @admin.action(description="Reset circuit breaker")
    def reset_circuit(self, request, queryset):
        for service in queryset:
            service.reset_circuit(actor=request.user.username)
        self.message_user(request, f"Reset {queryset.count()} breaker(s).")

    @admin.action(description="Enable")
    def enable(self, request, queryset):
        changed = sum(s.set_enabled(True, actor=request.user.username) for s in queryset)
        self.message_user(request, f"Enabled {changed} service(s).")

    @admin.action(description="Disable")
    def disable(self, request, queryset):
        changed = 0
        # Repeated passes, so a whole chain selected together is disabled dependents first.
        pending = list(queryset)
        for _ in range(len(pending)):
            progressed = False
            for service in list(pending):
                try:
                    changed += service.set_enabled(False, actor=request.user.username)
                    pending.remove(service)
                    progressed = True
                except DependencyError:
                    continue
            if not progressed:
                break
        for service in pending:
            self.message_user(
                request, f"{service.name}: Required by {', '.join(service.enabled_dependents())}", messages.ERROR
            )
        self.message_user(request, f"Disabled {changed} service(s).")


@admin.register(CircuitBreaker)
class CircuitBreakerAdmin(ReadOnlyAdmin):
    list_display = [
        "name",
        "state_badge",
        "guards",
        "consecutive_failures",
        "consecutive_successes",
        "opened_at",
        "updated_at",
    ]
    list_filter = ["state"]
    search_fields = ["name"]
    actions = ["reset"]

    @admin.display(description="guards")
    def guards(self, obj: CircuitBreaker):
        kind, _, name = obj.name.partition(":")
        if kind == "service":
            return format_html('<a href="/services/{}/">service {}</a>', name, name)
        if kind == "worker":
            return format_html('<a href="/workers/{}/">worker {}</a>', name, name)
        return "—"

    @admin.display(description="state", ordering="state")
    def state_badge(self, obj: CircuitBreaker):
        return badge(obj.state)

    @admin.action(description="Reset to closed")
    def reset(self, request, queryset):
        services = {s.circuit_id: s for s in Service.objects.filter(circuit__in=queryset)}
        for circuit in queryset:
            # A service's breaker through the service, which also marks it due for a check.
            owner = services.get(circuit.pk)
            if owner is not None:
                owner.reset_circuit(actor=request.user.username)
            else:
                circuit.reset(actor=request.user.username)
        self.message_user(request, f"Reset {queryset.count()} breaker(s).")

    def has_change_permission(self, request, obj=None) -> bool:
        # The reset action needs change permission; the form itself stays read-only.
        return request.user.is_staff

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in CircuitBreaker._meta.fields]


@admin.register(HealthCheck)
class HealthCheckAdmin(BigTableAdmin, ReadOnlyAdmin):
    """The check history: a million rows and more. Filters come from choices (no DISTINCT
    over the table); the search box takes a service's exact name (healthcheck_service_idx)
    or a check's id."""

    list_display = ["checked_at", "service_link", "health_badge", "status_code", "response_time_ms", "error_message"]
    list_filter = ["success", "health"]
    list_select_related = ["service"]
    exact_search = (("service__name", as_text), ("pk", as_int))

    @admin.display(description="health", ordering="health")
    def health_badge(self, obj: HealthCheck):
        return badge(obj.health)

    @admin.display(description="service", ordering="service__name")
    def service_link(self, obj: HealthCheck):
        return console_link(obj.service)


@admin.register(ServiceAlert)
class ServiceAlertAdmin(ReadOnlyAdmin):
    list_display = ["service_link", "state_badge", "opened_at", "resolved_at", "affected_list", "error_message"]
    list_filter = [("resolved_at", admin.EmptyFieldListFilter)]
    list_select_related = ["service"]

    @admin.display(description="service", ordering="service__name")
    def service_link(self, obj: ServiceAlert):
        return console_link(obj.service)

    @admin.display(description="state")
    def state_badge(self, obj: ServiceAlert):
        return badge("unhealthy" if obj.is_open else "closed", "open" if obj.is_open else "resolved")

    @admin.display(description="dependents affected")
    def affected_list(self, obj: ServiceAlert) -> str:
        return ", ".join(obj.affected) or "–"


WEEKLY_FIELDS = {
    "weekly_days": "days",
    "weekly_start": "start",
    "weekly_duration_minutes": "duration_minutes",
    "weekly_timezone": "timezone",
}


class MaintenanceWindowForm(MaskedSecretsForm):
    """A weekly window picked from days, a start time, a duration and a time zone, so a
    person need not write cron: the form writes ``recurrence`` from them. Any other
    recurrence is still written in ``recurrence`` itself."""

    weekly_days = forms.MultipleChoiceField(
        label="Days",
        choices=[(d, d.capitalize()) for d in windows.WEEKDAYS],
        widget=forms.CheckboxSelectMultiple,
        required=False,
    )
    weekly_start = forms.TimeField(
        label="Start time", required=False, widget=forms.TimeInput(format="%H:%M"), help_text="In the time zone below."
    )
    weekly_duration_minutes = forms.IntegerField(label="Duration (minutes)", required=False)
    weekly_timezone = forms.CharField(
        label="Time zone", required=False, max_length=64, help_text="IANA name, e.g. Europe/Paris (empty: UTC)."
    )

    class Meta:
        model = MaintenanceWindow
        fields = ["name", "description", "starts_at", "ends_at", "recurrence", "services", "tags", "all_services"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)  # (masks first: the weekly parts then replace recurrence)
        weekly = windows.weekly_of(self.instance.recurrence) if self.instance.pk else None
        if weekly is not None and not self.is_bound:
            # Shown as its parts only, so the two representations cannot disagree.
            self.initial.update(
                weekly_days=list(weekly.days),
                weekly_start=weekly.start,
                weekly_duration_minutes=weekly.duration_minutes,
                weekly_timezone=weekly.timezone,
                recurrence=None,
            )

    def clean(self) -> dict:
        data = super().clean()
        days, start = data.get("weekly_days") or [], data.get("weekly_start")
        minutes = data.get("weekly_duration_minutes")
        zone = (data.get("weekly_timezone") or "").strip()
        if not (days or start or minutes is not None) or any(f in self.errors for f in WEEKLY_FIELDS):
            return data  # not a weekly window (a field's own error is already shown)
        problems = windows.weekly_problem(days, start, minutes, zone or "UTC")
        for field, part in WEEKLY_FIELDS.items():
            if part in problems:
                self.add_error(field, problems[part])
        if problems:
            return data
        built = windows.weekly_recurrence(windows.Weekly(tuple(days), start, minutes, zone or "UTC"))
        if data.get("recurrence") and data["recurrence"] != built:
            self.add_error("recurrence", "Leave empty when the weekly fields are filled: they write it.")
            return data
        data["recurrence"] = built
        return data


@admin.register(MaintenanceWindow)
class MaintenanceWindowAdmin(admin.ModelAdmin):
    """Saving and deleting go through the model's own writes (with their ledger entry)."""

    form = MaintenanceWindowForm
    list_display = ["name", "state_badge", "when", "scope_text", "created_by"]
    search_fields = ["name"]
    filter_horizontal = ["services"]
    fieldsets = [
        (None, {"fields": ["name", "description", "starts_at", "ends_at"]}),
        (
            "Weekly (writes the recurrence below)",
            {"fields": ["weekly_days", "weekly_start", "weekly_duration_minutes", "weekly_timezone"]},
        ),
        ("Any other recurrence", {"fields": ["recurrence"]}),
        ("Covers", {"fields": ["services", "tags", "all_services"]}),
    ]

    @admin.display(description="now")
    def state_badge(self, obj: MaintenanceWindow):
        on = obj.occurrence() is not None
        return badge("half_open" if on else "closed", "under maintenance" if on else "off")

    @admin.display(description="when")
    def when(self, obj: MaintenanceWindow) -> str:
        return obj.describe().split(", covering", 1)[0]

    @admin.display(description="covers")
    def scope_text(self, obj: MaintenanceWindow) -> str:
        return obj.scope()

    def save_model(self, request, obj, form, change):
        pass  # saved with its services in save_related, in one write

    def save_related(self, request, form, formsets, change):
        form.instance.save_by(
            actor=request.user.get_username(),
            services=list(form.cleaned_data.get("services") or []),
            created=not change,
        )

    def delete_model(self, request, obj):
        obj.remove(actor=request.user.get_username())

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            obj.remove(actor=request.user.get_username())


@admin.register(StatusPage)
class StatusPageAdmin(admin.ModelAdmin):
    """A group of services shown at /status/<slug>/ once marked public; writes go through
    the model's own (with their ledger entry)."""

    list_display = ["title", "slug", "public", "page_link"]
    list_filter = ["public"]
    search_fields = ["title", "slug"]
    filter_horizontal = ["services"]
    fields = ["title", "slug", "description", "public", "services", "tags"]
    prepopulated_fields = {"slug": ["title"]}

    @admin.display(description="page")
    def page_link(self, obj: StatusPage):
        return format_html('<a href="/status/{}/">/status/{}/</a>', obj.slug, obj.slug) if obj.public else "not public"

    def save_model(self, request, obj, form, change):
        pass  # saved with its services in save_related, in one write

    def save_related(self, request, form, formsets, change):
        form.instance.save_by(
            actor=request.user.get_username(),
            services=list(form.cleaned_data.get("services") or []),
            created=not change,
        )

    def delete_model(self, request, obj):
        obj.remove(actor=request.user.get_username())

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            obj.remove(actor=request.user.get_username())
