"""States and kinds of the worker fleet."""

from __future__ import annotations

from django.db import models


class WorkerCategory(models.TextChoices):
    COLLECTION = "collection", "Data collection"
    INTELLIGENCE = "intelligence", "Intelligence"
    AGGREGATION = "aggregation", "Aggregation"
    GENERATION = "generation", "Generation"
    REPORTING = "reporting", "Reporting"
    MAINTENANCE = "maintenance", "Maintenance"


class ExecutionModel(models.TextChoices):
    SCHEDULED = "scheduled", "Scheduled"
    TIME_TRIGGERED = "time_triggered", "Time-triggered"
    ON_DEMAND = "on_demand", "On demand"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    TIMED_OUT = "timed_out", "Timed out"
    CRASHED = "crashed", "Crashed"
    INTERRUPTED = "interrupted", "Interrupted"
    SKIPPED = "skipped", "Skipped"


ACTIVE_RUN_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)
FAILED_RUN_STATUSES = (RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CRASHED)


class RunTrigger(models.TextChoices):
    SCHEDULE = "schedule", "Schedule"
    MANUAL = "manual", "Manual"
    UPSTREAM = "upstream", "Upstream succeeded"
    RECOVERY = "recovery", "Recovery"
    REFRESH = "refresh", "Forced refresh"
    RERUN = "rerun", "Re-run after interruption"


class SkipReason(models.TextChoices):
    DISABLED = "disabled", "Worker disabled"
    CIRCUIT_OPEN = "circuit_open", "Circuit breaker open"
    LOCK_HELD = "lock_held", "Another run holds the lock"
    UPSTREAM_RUNNING = "upstream_running", "An upstream worker is running"
    UPSTREAM_STALE = "upstream_stale", "An upstream worker's data is stale"
    UPSTREAM_FAILED = "upstream_failed", "An upstream worker failed"
    ALREADY_FRESH = "already_fresh", "Data already fresh"
    QUEUE_PAUSED = "queue_paused", "New runs paused (queue overflow)"


class ReportPeriod(models.TextChoices):
    RUN = "run", "Run"
    HOURLY = "hourly", "Hourly"
    DAILY = "daily", "Daily"
