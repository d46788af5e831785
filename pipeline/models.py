from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from orchestration.core.storedjson import JSONField
from pipeline import transitions as t
from pipeline.choices import Decision, EventType, PipelineStatus
from pipeline.definitions import DEFAULT_LANE, DefinitionSpec, default_spec, to_machine


class PipelineDefinition(models.Model):
    """Ordered stages, their gates and timeouts, and the runner for each stage."""

    name = models.SlugField(max_length=100, unique=True)
    description = models.CharField(max_length=200, blank=True)
    stages = JSONField(help_text="Stage names in order.")
    gates = JSONField(default=dict, blank=True, help_text="stage → {required, auto_approve, timeout_minutes}")
    stage_timeouts = JSONField(default=dict, blank=True, help_text="stage → minutes")
    runners = JSONField(
        default=dict, blank=True, help_text="stage → dotted path; stages without one get the placeholder runner."
    )
    lane = models.SlugField(max_length=64, default=DEFAULT_LANE)
    stage_attempts = models.PositiveSmallIntegerField(
        default=3, help_text="Tries per stage run when it raises or its process dies."
    )
    retry_timed_out_stages = models.BooleanField(default=False)
    is_default = models.BooleanField(default=False)
    builtin = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def machine(self) -> t.Definition:
        return to_machine(self.stages, self.gates)

    def clean(self) -> None:
        # The admin form checks the same rules as the API and load_pipeline.
        from django.core.exceptions import ValidationError

        from pipeline.definitions import DefinitionError, parse

        document = {
            "gates": self.gates,
            "pipeline": {
                "stages": self.stages,
                "stage_timeouts": self.stage_timeouts,
                "runners": self.runners,
                "lane": self.lane,
                "stage_attempts": self.stage_attempts,
                "retry_timed_out_stages": self.retry_timed_out_stages,
            },
        }
        try:
            parse(document, name=self.name, task_timeout_seconds=settings.Q_CLUSTER["timeout"])
        except DefinitionError as exc:
            raise ValidationError({"stages": exc.errors})

    def snapshot(self) -> dict:
        """What a job keeps of its definition, so later edits do not change running jobs."""
        return {
            "definition": self.name,
            "stages": list(self.stages),
            "gates": dict(self.gates),
            "stage_timeouts": dict(self.stage_timeouts),
            "runners": dict(self.runners),
            "lane": self.lane,
            "stage_attempts": self.stage_attempts,
            "retry_timed_out_stages": self.retry_timed_out_stages,
        }

    @classmethod
    def from_spec(cls, spec: DefinitionSpec, **extra) -> tuple[PipelineDefinition, bool]:
        return cls.objects.update_or_create(
            name=spec.name,
            defaults={
                "stages": spec.stages,
                "gates": spec.gates,
                "stage_timeouts": spec.stage_timeouts,
                "runners": spec.runners,
                "lane": spec.lane,
                "stage_attempts": spec.stage_attempts,
                "retry_timed_out_stages": spec.retry_timed_out_stages,
                **extra,
            },
        )

    @classmethod
    def default(cls) -> PipelineDefinition:
        found = cls.objects.filter(is_default=True).order_by("id").first() or cls.objects.filter(name="default").first()
        if found is None:
            # Migration 0002 seeds it; recreate it if someone deleted it rather than
            # refuse to start jobs.
            found, _ = cls.from_spec(
                default_spec(), description="Seeded default: nine stages, four approval gates", is_default=True
            )
        return found


class PipelineJob(models.Model):
    """One run of a pipeline. Every change goes through pipeline.engine.apply()."""

    slug = models.SlugField(max_length=100)
    intent = models.TextField(blank=True)
    definition = models.ForeignKey(PipelineDefinition, on_delete=models.PROTECT, related_name="jobs")
    config = JSONField(default=dict, blank=True, help_text="The definition as it was when the job started.")
    status = models.CharField(max_length=16, choices=PipelineStatus.choices, default=PipelineStatus.QUEUED)
    stage = models.CharField(max_length=40)
    # Each (re)queued stage run gets the next number; results of older runs are stale.
    stage_run = models.PositiveIntegerField(default=0)
    stage_job = models.ForeignKey(
        "orchestration.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    stage_deadline = models.DateTimeField(null=True, blank=True)
    waiting_since = models.DateTimeField(null=True, blank=True)
    gate_deadline = models.DateTimeField(null=True, blank=True)
    escalated_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("approve_gate", "Can approve or reject pipeline gates")]
        indexes = [
            # monitor.pipeline_section() and the list filter by status.
            models.Index(fields=["status", "gate_deadline"], name="pipeline_job_status_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.slug} #{self.pk}"

    def machine(self) -> t.Definition:
        # config is the definition as it was at start; rows made elsewhere may lack it.
        config = self.config or self.definition.snapshot()
        return to_machine(config.get("stages", []), config.get("gates", {}))

    def state(self) -> t.State:
        return t.State(self.status, self.stage, self.stage_run)

    @property
    def is_final(self) -> bool:
        return self.status in t.FINAL

    def progress(self) -> tuple[int, int]:
        return t.progress(self.machine(), self.state())

    def gates_view(self) -> list[dict]:
        """Each gate with where the job stands at it (API field ``gates``)."""
        stages = self.config.get("stages", [])
        decisions: dict[str, GateDecision] = {}
        # .all() so a list view's prefetch_related("decisions") serves every job.
        for decision in sorted(self.decisions.all(), key=lambda d: (d.created_at, d.pk)):
            decisions[decision.stage] = decision
        out = []
        for stage, gate in self.config.get("gates", {}).items():
            latest = decisions.get(stage)
            if self.status == t.NEEDS_APPROVAL and self.stage == stage:
                state = "waiting"
            elif latest is not None and latest.decision == Decision.APPROVED:
                state = "approved"
            elif latest is not None:
                state = "rejected"
            else:
                state = "pending"
            out.append(
                {
                    "stage": stage,
                    "required": gate.get("required", True),
                    "auto_approve": gate.get("auto_approve", False),
                    "timeout_minutes": gate.get("timeout_minutes", 60),
                    "state": state,
                    "decided_by": latest.decided_by if latest else None,
                    "notes": latest.notes if latest else "",
                    "automatic": latest.automatic if latest else False,
                    "order": stages.index(stage) if stage in stages else 0,
                }
            )
        return sorted(out, key=lambda g: g.pop("order"))


class GateDecision(models.Model):
    job = models.ForeignKey(PipelineJob, on_delete=models.CASCADE, related_name="decisions")
    stage = models.CharField(max_length=40)
    decision = models.CharField(max_length=10, choices=Decision.choices)
    decided_by = models.CharField(max_length=150)
    notes = models.TextField(blank=True)
    automatic = models.BooleanField(default=False, help_text="Decided by the system (gate timeout with auto_approve).")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.stage}: {self.decision} by {self.decided_by}"


class Artifact(models.Model):
    job = models.ForeignKey(PipelineJob, on_delete=models.CASCADE, related_name="artifacts")
    stage = models.CharField(max_length=40)
    path = models.CharField(max_length=300, help_text="Relative to the job's run directory.")
    kind = models.CharField(max_length=40)
    metadata = JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [models.UniqueConstraint(fields=["job", "path"], name="pipeline_artifact_unique_path")]

    def __str__(self) -> str:
        return self.path


class PipelineEvent(models.Model):
    job = models.ForeignKey(PipelineJob, on_delete=models.CASCADE, related_name="events")
    type = models.CharField(max_length=20, choices=EventType.choices)
    stage = models.CharField(max_length=40, blank=True)
    data = JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        indexes = [
            # The live stream reads a job's events after the last id it sent.
            models.Index(fields=["job", "id"], name="pipeline_event_job_idx"),
            # The JSON list and its cursor pages read a job's events oldest first.
            models.Index(fields=["job", "created_at", "id"], name="pipeline_event_job_time_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.stage}"

    def as_dict(self) -> dict:
        return {
            "id": self.pk,
            "type": self.type,
            "stage": self.stage,
            "data": self.data,
            "created_at": self.created_at.isoformat(),
        }
