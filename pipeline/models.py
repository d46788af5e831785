from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from orchestration.core.storedjson import JSONField
from pipeline import gates
from pipeline import transitions as t
from pipeline.choices import Decision, EventType, PipelineStatus
from pipeline.definitions import DEFAULT_LANE, DefinitionError, DefinitionSpec, default_spec, parse, to_machine


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
    # How many of the gate's escalate_to tiers have been added to its assignees.
    escalation_tier = models.PositiveSmallIntegerField(default=0)
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

    def policy(self, stage: str | None = None) -> gates.Policy:
        return gates.Policy.of(self.config.get("gates", {}).get(stage or self.stage))

    def round_votes(self, stage: str | None = None) -> list[gates.Vote]:
        """The people's decisions at the gate the job waits at now (this run of its stage)."""
        stage = stage or self.stage
        return [
            gates.Vote(d.decided_by, d.decision)
            for d in self.decisions.all()
            if d.stage == stage and d.run == self.stage_run and not d.automatic
        ]

    def gate_input(self, stage: str) -> dict:
        """The input of the approval that let ``stage``'s gate through most recently
        (earlier approvers' values, overridden by later ones in the same round)."""
        approvals = [d for d in self.decisions.all() if d.stage == stage and d.decision == Decision.APPROVED]
        if not approvals:
            return {}
        last_run = max(d.run for d in approvals)
        merged: dict = {}
        for decision in sorted(approvals, key=lambda d: (d.created_at, d.pk)):
            if decision.run == last_run:
                merged.update(decision.input or {})
        return merged

    def gates_view(self) -> list[dict]:
        """Each gate with where the job stands at it and every person's decision (API field ``gates``)."""
        stages = self.config.get("stages", [])
        by_stage: dict[str, list[GateDecision]] = {}
        # .all() so a list view's prefetch_related("decisions") serves every job.
        for decision in sorted(self.decisions.all(), key=lambda d: (d.created_at, d.pk)):
            by_stage.setdefault(decision.stage, []).append(decision)
        out = []
        for stage, gate in self.config.get("gates", {}).items():
            policy = gates.Policy.of(gate)
            decided = by_stage.get(stage, [])
            # The latest round: the decisions made at the gate's most recent wait.
            latest_run = self.stage_run if self.stage == stage else max((d.run for d in decided), default=0)
            round_ = [d for d in decided if d.run == latest_run]
            settled = next((d for d in reversed(round_) if d.settles), None) or (decided[-1] if decided else None)
            if self.status == t.NEEDS_APPROVAL and self.stage == stage:
                state = "waiting"
            elif settled is not None and settled.decision == Decision.APPROVED:
                state = "approved"
            elif settled is not None:
                state = "rejected"
            else:
                state = "pending"
            out.append(
                {
                    "stage": stage,
                    "required": gate.get("required", True),
                    "auto_approve": gate.get("auto_approve", False),
                    "timeout_minutes": policy.timeout_minutes,
                    "on_timeout": policy.on_timeout,
                    "input_schema": policy.input_schema,
                    "assignees": list(policy.assignees_at(self.escalation_tier if self.stage == stage else 0)),
                    "quorum": policy.quorum,
                    "reject_quorum": policy.reject_quorum,
                    "allow_self_approval": policy.allow_self_approval,
                    "state": state,
                    "approvals": sum(d.decision == Decision.APPROVED and not d.automatic for d in round_),
                    "rejections": sum(d.decision == Decision.REJECTED and not d.automatic for d in round_),
                    "decided_by": settled.decided_by if settled else None,
                    "notes": settled.notes if settled else "",
                    "automatic": settled.automatic if settled else False,
                    "input": self.gate_input(stage) if state == "approved" else {},
                    "decisions": [d.as_dict() for d in round_],
                    "order": stages.index(stage) if stage in stages else 0,
                }
            )
        return sorted(out, key=lambda g: g.pop("order"))


class GateDecision(models.Model):
    """One person's (or the timeout's) decision at one wait at a gate."""

    job = models.ForeignKey(PipelineJob, on_delete=models.CASCADE, related_name="decisions")
    stage = models.CharField(max_length=40)
    # The stage run whose gate this decides: a resumed stage waits again, with new decisions.
    run = models.PositiveIntegerField(default=0)
    decision = models.CharField(max_length=10, choices=Decision.choices)
    decided_by = models.CharField(max_length=150)
    notes = models.TextField(blank=True)
    input = JSONField(default=dict, blank=True, help_text="The values given, checked against the gate's input_schema.")
    automatic = models.BooleanField(default=False, help_text="Decided by the system (the gate's timeout policy).")
    settles = models.BooleanField(default=False, help_text="This decision completed the gate's quorum.")
    via = models.CharField(max_length=10, blank=True, help_text="api, console, admin, link or timeout.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            # The same person deciding the same wait twice is refused by the database itself.
            models.UniqueConstraint(
                fields=["job", "stage", "run", "decided_by"],
                condition=models.Q(automatic=False),
                name="pipeline_gatedecision_once_per_person",
            )
        ]

    def __str__(self) -> str:
        return f"{self.stage}: {self.decision} by {self.decided_by}"

    def as_dict(self) -> dict:
        return {
            "decided_by": self.decided_by,
            "decision": self.decision,
            "notes": self.notes,
            "input": self.input,
            "automatic": self.automatic,
            "via": self.via,
            "created_at": self.created_at.isoformat(),
        }


class GateLink(models.Model):
    """A signed one-click decision link sent to one person; used at most once.

    The signed token carries this row's ``nonce``; the row records when it was used, so
    a replayed link is refused even inside its lifetime."""

    nonce = models.CharField(max_length=32, unique=True)
    job = models.ForeignKey(PipelineJob, on_delete=models.CASCADE, related_name="links")
    stage = models.CharField(max_length=40)
    run = models.PositiveIntegerField()
    username = models.CharField(max_length=150)
    verb = models.CharField(max_length=10, choices=[("approve", "Approve"), ("reject", "Reject")])
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.verb} {self.stage} of #{self.job_id} for {self.username}"


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
