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


class OverlapPolicy(models.TextChoices):
    """What a run does when another run of its worker is going (Temporal's set)."""

    SKIP = "skip", "Skip: the new run is skipped"
    BUFFER_ONE = "buffer_one", "Buffer one: it waits for the current run; further ones are skipped"
    BUFFER_ALL = "buffer_all", "Buffer all: every one waits its turn, oldest first"
    CANCEL_OTHER = "cancel_other", "Cancel other: the current run is canceled and the new one starts"
    ALLOW_ALL = "allow_all", "Allow all: runs go side by side, no lock"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    BUFFERED = "buffered", "Buffered (waits for the current run)"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    TIMED_OUT = "timed_out", "Timed out"
    CRASHED = "crashed", "Crashed"
    INTERRUPTED = "interrupted", "Interrupted"
    SKIPPED = "skipped", "Skipped"
    CANCELED = "canceled", "Canceled (a newer run replaced it)"


ACTIVE_RUN_STATUSES = (RunStatus.QUEUED, RunStatus.BUFFERED, RunStatus.RUNNING)
FAILED_RUN_STATUSES = (RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CRASHED)


class RunTrigger(models.TextChoices):
    SCHEDULE = "schedule", "Schedule"
    MANUAL = "manual", "Manual"
    UPSTREAM = "upstream", "Upstream succeeded"
    RECOVERY = "recovery", "Recovery"
    REFRESH = "refresh", "Forced refresh"
    RERUN = "rerun", "Re-run after interruption"
    BACKFILL = "backfill", "Backfill"


class SkipReason(models.TextChoices):
    DISABLED = "disabled", "Worker disabled"
    CIRCUIT_OPEN = "circuit_open", "Circuit breaker open"
    LOCK_HELD = "lock_held", "Another run holds the lock"
    UPSTREAM_RUNNING = "upstream_running", "An upstream worker is running"
    UPSTREAM_STALE = "upstream_stale", "An upstream worker's data is stale"
    UPSTREAM_FAILED = "upstream_failed", "An upstream worker failed"
    ALREADY_FRESH = "already_fresh", "Data already fresh"
    QUEUE_PAUSED = "queue_paused", "New runs paused (queue overflow)"
    BUFFER_FULL = "buffer_full", "A run is already buffered (overlap: buffer one)"
    PAUSED = "paused", "Worker paused after consecutive failures"
    RATE_REDUCED = "rate_reduced", "Rate reduced by recovery: this due time is one of those left out"


class ReportPeriod(models.TextChoices):
    RUN = "run", "Run"
    HOURLY = "hourly", "Hourly"
    DAILY = "daily", "Daily"
