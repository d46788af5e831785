"""Pipeline states and kinds as TextChoices; values come from the pure state machine."""

from __future__ import annotations

from django.db import models

from pipeline import gates
from pipeline import transitions as t


class PipelineStatus(models.TextChoices):
    QUEUED = t.QUEUED, "Queued"
    RUNNING = t.RUNNING, "Running"
    NEEDS_APPROVAL = t.NEEDS_APPROVAL, "Needs approval"
    PAUSED = t.PAUSED, "Paused"
    COMPLETED = t.COMPLETED, "Completed"
    FAILED = t.FAILED, "Failed"
    CANCELED = t.CANCELED, "Canceled"


class EventType(models.TextChoices):
    JOB_STARTED = "job_started", "Job started"
    STAGE_STARTED = "stage_started", "Stage started"
    STAGE_COMPLETED = "stage_completed", "Stage completed"
    STAGE_FAILED = "stage_failed", "Stage failed"
    GATE_PAUSE = "gate_pause", "Paused at gate"
    GATE_DECISION = "gate_decision", "A person decided at a gate"
    GATE_ESCALATED = "gate_escalated", "Gate escalated"
    GATE_TIMED_OUT = "gate_timed_out", "Gate timed out"
    GATE_APPROVED = "gate_approved", "Gate approved"
    GATE_REJECTED = "gate_rejected", "Gate rejected"
    JOB_RESUMED = "job_resumed", "Job resumed"
    JOB_COMPLETED = "job_completed", "Job completed"
    JOB_FAILED = "job_failed", "Job failed"
    JOB_CANCELED = "job_canceled", "Job canceled"


class OnTimeout(models.TextChoices):
    APPROVE_WITH_DEFAULTS = gates.APPROVE_WITH_DEFAULTS, "Approve with the input's defaults"
    REJECT = gates.REJECT, "Reject"
    FAIL = gates.FAIL, "Fail the job"
    ESCALATE = gates.ESCALATE, "Escalate"


class Decision(models.TextChoices):
    APPROVED = gates.APPROVED, "Approved"
    REJECTED = gates.REJECTED, "Rejected"


STATUS_COLORS = {
    t.QUEUED: "#6c757d",
    t.RUNNING: "#0d6efd",
    t.NEEDS_APPROVAL: "#fd7e14",
    t.PAUSED: "#ffc107",
    t.COMPLETED: "#198754",
    t.FAILED: "#dc3545",
    t.CANCELED: "#495057",
}
