from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html
from rest_framework.exceptions import PermissionDenied as NotPermitted

from orchestration.core.models.ledger import record
from orchestrator_site.admin_scale import admin_link
from pipeline import engine, people
from pipeline import transitions as t
from pipeline import views as gate_pages
from pipeline.api.serializers import PipelineDefinitionSerializer
from pipeline.models import Artifact, GateDecision, PipelineDefinition, PipelineEvent, PipelineJob


class _ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class GateDecisionInline(_ReadOnlyInline):
    model = GateDecision
    fields = ["stage", "decision", "decided_by", "automatic", "notes", "created_at"]
    readonly_fields = fields


class ArtifactInline(_ReadOnlyInline):
    model = Artifact
    fields = ["stage", "path", "kind", "metadata", "created_at"]
    readonly_fields = fields


class PipelineEventInline(_ReadOnlyInline):
    model = PipelineEvent
    fields = ["created_at", "type", "stage", "data"]
    readonly_fields = fields
    ordering = ["id"]


class PipelineDefinitionForm(forms.ModelForm):
    """The API's (and the YAML loader's) validation, with errors shown on the form."""

    class Meta:
        model = PipelineDefinition
        fields = [
            "name",
            "description",
            "stages",
            "gates",
            "stage_timeouts",
            "runners",
            "lane",
            "stage_attempts",
            "retry_timed_out_stages",
        ]

    def clean(self):

        data = super().clean()
        if self.errors:
            return data
        checked = PipelineDefinitionSerializer(
            instance=self.instance if self.instance.pk else None,
            data=data,
            context={"user": getattr(self, "user", None)},
        )
        try:
            valid = checked.is_valid()
        except NotPermitted as exc:
            self.add_error("runners", str(exc.detail))
            return data
        if not valid:
            for field, errors in checked.errors.items():
                target = field if field in self.fields else None
                if isinstance(errors, dict):
                    errors = [
                        f"{key}: {' '.join(map(str, value)) if isinstance(value, list) else value}"
                        for key, value in errors.items()
                    ]
                self.add_error(target, [str(e) for e in (errors if isinstance(errors, list) else [errors])])
            return data
        for key in ("gates", "stage_timeouts", "stages"):
            data[key] = checked.validated_data[key]
        return data


@admin.register(PipelineDefinition)
class PipelineDefinitionAdmin(admin.ModelAdmin):
    form = PipelineDefinitionForm
    list_display = ["name", "stage_list", "gate_list", "lane", "is_default", "jobs_link"]
    search_fields = ["name", "description"]
    list_filter = ["is_default", "builtin", "lane"]

    def get_form(self, request, obj=None, **kwargs):
        # The form checks the run_code permission of whoever saves a stage runner.
        form = super().get_form(request, obj, **kwargs)
        return type(form.__name__, (form,), {"user": request.user})

    @admin.display(description="jobs")
    def jobs_link(self, obj: PipelineDefinition):
        url = reverse("admin:pipeline_pipelinejob_changelist") + f"?definition__id__exact={obj.pk}"
        return format_html('<a href="{}">jobs →</a>', url)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        verb = "updated" if change else "created"
        record(
            f"pipeline.definition.{verb}",
            f"Pipeline definition {obj.name} {verb} in the admin",
            subject=f"pipeline.definition:{obj.name}",
            actor=request.user.username,
        )

    @admin.display(description="stages")
    def stage_list(self, obj: PipelineDefinition) -> str:
        return " → ".join(obj.stages)

    @admin.display(description="gates")
    def gate_list(self, obj: PipelineDefinition) -> str:
        return ", ".join(stage for stage, gate in obj.gates.items() if gate.get("required", True))


@admin.register(PipelineJob)
class PipelineJobAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "slug",
        "status_badge",
        "stage",
        "progress_bar",
        "definition_link",
        "created_at",
        "updated_at",
    ]
    list_filter = ["status", "definition"]
    list_select_related = ["definition"]
    search_fields = ["slug", "intent"]
    readonly_fields = [
        "definition",
        "status_badge",
        "stage",
        "progress_bar",
        "stage_run",
        "stage_job",
        "waiting_since",
        "gate_deadline",
        "escalated_at",
        "error",
        "created_by",
        "created_at",
        "finished_at",
    ]
    fields = ["slug", "intent", *readonly_fields]
    inlines = [GateDecisionInline, ArtifactInline, PipelineEventInline]
    actions = ["resume_jobs", "cancel_jobs"]
    change_form_template = "admin/pipeline/pipelinejob/change_form.html"

    def has_add_permission(self, request) -> bool:
        return False  # jobs start through the API or pipeline_demo, which run the first stage

    def view_on_site(self, obj: PipelineJob) -> str:
        return f"/pipelines/{obj.pk}/"

    @admin.display(description="definition", ordering="definition__name")
    def definition_link(self, obj: PipelineJob):
        return admin_link(obj.definition)

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: PipelineJob) -> str:
        return format_html('<span class="ob-badge b-pl-{}">{}</span>', obj.status, obj.get_status_display())

    @admin.display(description="progress")
    def progress_bar(self, obj: PipelineJob) -> str:
        done, total = obj.progress()
        return format_html(
            '<progress value="{}" max="{}" title="{} of {} stages"></progress> {}/{}',
            done,
            total,
            done,
            total,
            done,
            total,
        )

    def get_urls(self):
        return [
            path(
                "<int:object_id>/decide/",
                self.admin_site.admin_view(self.decide_view),
                name="pipeline_pipelinejob_decide",
            ),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        job = PipelineJob.objects.filter(pk=object_id).first()
        extra = extra_context or {}
        if job is not None:
            extra["waiting_gate"] = job.stage if job.status == t.NEEDS_APPROVAL else None
            extra["can_decide"] = request.user.is_superuser or request.user.has_perm("pipeline.approve_gate")
            extra["decide_url"] = reverse("admin:pipeline_pipelinejob_decide", args=[job.pk])
            if job.status == t.NEEDS_APPROVAL:
                extra["input_fields"] = gate_pages.form_fields(job.policy().input_schema)
        return super().change_view(request, object_id, form_url, extra_context=extra)

    def decide_view(self, request, object_id: int):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not (request.user.is_superuser or request.user.has_perm("pipeline.approve_gate")):
            raise PermissionDenied
        job = get_object_or_404(PipelineJob, pk=object_id)
        decision = request.POST.get("decision")
        stage = request.POST.get("stage", "")
        notes = request.POST.get("notes", "")
        target = reverse("admin:pipeline_pipelinejob_change", args=[job.pk])
        if decision not in ("approve", "reject"):
            self.message_user(request, "Choose approve or reject.", messages.ERROR)
            return HttpResponseRedirect(target)
        values: dict | None = None
        if decision == "approve":
            values, problems = gate_pages.posted_input(job.policy(stage).input_schema, request.POST)
            if problems:
                self.message_user(request, f"Not done: {engine.GateInputError(problems)}", messages.ERROR)
                return HttpResponseRedirect(target)
        try:
            # The signed-in person, with their groups: the gate's assignees and its
            # self-approval rule judge them as they judge an API or console caller.
            job = engine.decide(
                job, stage, decision, person=people.person_of(request.user), notes=notes, values=values, via="admin"
            )
        except (t.TransitionError, engine.GateForbidden, engine.GateInputError) as exc:
            self.message_user(request, f"Not done: {exc}", messages.ERROR)
        else:
            verb = "approved" if decision == "approve" else "rejected"
            self.message_user(request, f"Gate {stage} {verb}; job is now {job.get_status_display().lower()}.")
        return HttpResponseRedirect(target)

    @admin.action(description="Resume selected paused or failed jobs (re-runs the current stage)")
    def resume_jobs(self, request, queryset):
        self._each(request, queryset, engine.resume, "resumed")

    @admin.action(description="Cancel selected jobs")
    def cancel_jobs(self, request, queryset):
        self._each(request, queryset, engine.cancel, "canceled")

    def _each(self, request, queryset, func, verb: str) -> None:
        done, refused = 0, []
        for job in queryset:
            try:
                func(job, actor=request.user.get_username())
                done += 1
            except t.TransitionError as exc:
                refused.append(f"#{job.pk}: {exc}")
        if done:
            self.message_user(request, f"{done} job(s) {verb}.")
        if refused:
            self.message_user(request, "Not changed: " + "; ".join(refused), messages.WARNING)
