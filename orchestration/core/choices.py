"""States and kinds as named constants. Colours are reused by admin badges and the console."""

from __future__ import annotations

from django.db import models


class JobStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    PROCESSING = "processing", "Processing"
    RETRY = "retry", "Retry"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELED = "canceled", "Canceled"


# Statuses from which the dispatcher may claim a job.
CLAIMABLE_STATUSES = (JobStatus.PENDING, JobStatus.RETRY)
FINAL_STATUSES = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED)


class Priority(models.TextChoices):
    CRITICAL = "critical", "Critical"
    HIGH = "high", "High"
    NORMAL = "normal", "Normal"
    LOW = "low", "Low"


# Numeric rank used for ordering (higher runs first) and for routing's priority score.
PRIORITY_RANK = {Priority.CRITICAL: 4, Priority.HIGH: 3, Priority.NORMAL: 2, Priority.LOW: 1}


class Backoff(models.TextChoices):
    EXPONENTIAL = "exponential", "Exponential (1, 2, 4, 8 s…)"
    LINEAR = "linear", "Linear (5, 10, 15 s…)"


class DeferredBy(models.TextChoices):
    """Who pushed a job's ``not_before`` back. Only a deferral an automation made may be
    undone by automation; a ``not_before`` a client or a person set is never cleared."""

    NOBODY = "", "Nobody (the job's own not_before)"
    LOOP = "loop", "The control loop"
    RECOVERY = "recovery", "Fleet recovery"


class Severity(models.TextChoices):
    DEBUG = "debug", "Debug"
    INFO = "info", "Info"
    WARNING = "warning", "Warning"
    ERROR = "error", "Error"
    CRITICAL = "critical", "Critical"


class ActionStatus(models.TextChoices):
    PLANNED = "planned", "Planned (dry run)"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    # Risk tiers: a risky action waits for a person, who approves (the next pass runs
    # it) or rejects it; unanswered within the timeout it expires.
    AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
    APPROVED = "approved", "Approved (runs next cycle)"
    REJECTED = "rejected", "Rejected"
    EXPIRED = "expired", "Expired (nobody decided in time)"
    # Guardrails held it back (no change made): over the hourly limit, or the
    # automation is paused for that target after a remediation loop.
    RATE_LIMITED = "rate_limited", "Held back (hourly limit)"
    PAUSED = "paused", "Held back (automation paused for this target)"


# Actions whose outcome is known and may be verified later.
EXECUTED_STATUSES = (ActionStatus.SUCCEEDED, ActionStatus.FAILED)


class RuleMode(models.TextChoices):
    """Whether a rule's action runs on its own or waits for a person's approval. A
    risky action's rule starts in approval; only a person makes it automatic."""

    AUTOMATIC = "automatic", "Runs on its own"
    APPROVAL = "approval", "Waits for a person's approval"


class Operator(models.TextChoices):
    GT = ">", "greater than"
    GTE = ">=", "at least"
    LT = "<", "less than"
    LTE = "<=", "at most"
    EQ = "==", "equals"
    NE = "!=", "differs from"


class DeductionScope(models.TextChoices):
    """What a health-score deduction is about. The emergency rebalance reads the
    queue's own score only, so an outside service's outage never fails queued work."""

    QUEUE = "queue", "The job queue and its ledger (the seed's formula)"
    SERVICES = "services", "Monitored services"
    OTHER = "other", "Anything else"


class HealthStatus(models.TextChoices):
    HEALTHY = "healthy", "Healthy"
    DEGRADED = "degraded", "Degraded"
    CRITICAL = "critical", "Critical"


# One palette for every badge: admin list columns and the dashboard use these.
BADGE_COLORS = {
    "pending": "#6c757d",
    "processing": "#0d6efd",
    "retry": "#fd7e14",
    "completed": "#198754",
    "failed": "#dc3545",
    "canceled": "#495057",
    "critical": "#b02a37",
    "high": "#dc3545",
    "normal": "#0d6efd",
    "low": "#6c757d",
    "debug": "#adb5bd",
    "info": "#0dcaf0",
    "warning": "#ffc107",
    "error": "#dc3545",
    "planned": "#6f42c1",
    "succeeded": "#198754",
    "healthy": "#198754",
    "degraded": "#fd7e14",
    "unhealthy": "#dc3545",
    "unknown": "#6c757d",
    "closed": "#198754",
    "open": "#dc3545",
    "half_open": "#fd7e14",
    "circuit_open": "#dc3545",
    "enabled": "#198754",
    "awaiting_approval": "#fd7e14",
    "approved": "#20c997",
    "rejected": "#b02a37",
    "expired": "#adb5bd",
    "rate_limited": "#ffc107",
    "paused": "#6f42c1",
    "disabled": "#6c757d",
    "alive": "#198754",
    "gone": "#adb5bd",
}


class ProcessRole(models.TextChoices):
    WEB = "web", "Web"
    CLUSTER = "cluster", "Cluster node"
    LOOP = "loop", "Loop runner"


# Anomalies and their alerts (models/anomalies.py, alerts.py).
class AnomalySeverity(models.TextChoices):
    CRITICAL = "critical", "Critical"
    HIGH = "high", "High"
    MEDIUM = "medium", "Medium"
    LOW = "low", "Low"


class AlertState(models.TextChoices):
    PENDING = "pending", "Pending"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"
    LOG_ONLY = "log_only", "Log only"
    SUPPRESSED = "suppressed", "Resolved before due"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed (retries exhausted)"


class NotifySeverity(models.TextChoices):
    """What a notification is about, for channel routes (anomaly severities, plus info)."""

    CRITICAL = "critical", "Critical"
    HIGH = "high", "High"
    MEDIUM = "medium", "Medium"
    LOW = "low", "Low"
    INFO = "info", "Info"
