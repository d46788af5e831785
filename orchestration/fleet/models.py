"""The worker fleet: workers, their runs and score reports (anomalies are in the core)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from health.choices import BreakerState
from orchestration.core.choices import Priority
from orchestration.core.models.ledger import record
from orchestration.core.storedjson import JSONField
from orchestration.fleet import cadence
from orchestration.fleet.cadence import Cadence
from orchestration.fleet.choices import (
    ExecutionModel,
    OverlapPolicy,
    ReportPeriod,
    RunStatus,
    RunTrigger,
    WorkerCategory,
)

if TYPE_CHECKING:
    from health.models import CircuitBreaker


def new_execution_id() -> str:
    return uuid.uuid4().hex


class WorkerStateError(Exception):
    """The worker is not in a state that allows this (API answers 409)."""


class Worker(models.Model):
    """A registry entry: what to run, when, after what, for how long.

    ``target`` is ``{"type": "python", "path": "pkg.mod.func"}`` or ``{"type": "http",
    "method": "POST", "url": "{base_url}/jobs/x", "headers": {}, "body": …,
    "expected_status": 200}``; ``{base_url}`` is replaced by ``FLEET_BASE_URL``.

    The lock fields are the cross-process lock: taken with a conditional UPDATE, so
    one run at a time however many cluster nodes there are.
    """

    name = models.SlugField(max_length=80, unique=True)
    description = models.CharField(max_length=300, blank=True)
    category = models.CharField(max_length=20, choices=WorkerCategory.choices)
    execution_model = models.CharField(max_length=20, choices=ExecutionModel.choices, default=ExecutionModel.SCHEDULED)
    interval_seconds = models.PositiveIntegerField(null=True, blank=True)
    cron = models.CharField(max_length=100, blank=True, help_text="Five fields, read in the worker's time zone.")
    timezone = models.CharField(
        max_length=64, default="UTC", help_text="IANA zone the cron is read in (intervals are elapsed time)."
    )
    overlap = models.CharField(
        max_length=12,
        choices=OverlapPolicy.choices,
        default=OverlapPolicy.SKIP,
        help_text="What a run does while another run of this worker is going.",
    )
    catch_up_seconds = models.PositiveIntegerField(
        default=60,
        help_text="Due times missed (downtime) within this many seconds run once each, oldest first; "
        "older ones are skipped and counted.",
    )
    jitter_seconds = models.PositiveIntegerField(
        default=0, help_text="Each scheduled run waits 0..N s, the same for a given due time on every node."
    )
    pause_after_failures = models.PositiveIntegerField(
        default=0, help_text="Pause scheduled runs after this many consecutive failures (0: never)."
    )
    output_schema = JSONField(
        null=True,
        blank=True,
        help_text="JSON Schema the run's output (metrics) must follow; a breach is DATA_CORRUPTION.",
    )
    timeout_seconds = models.PositiveIntegerField(default=300, validators=[MinValueValidator(1)])
    max_timeout_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="Cap for automatic timeout increases (default: 2× the timeout)."
    )
    expected_duration_seconds = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0)])
    freshness_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="How long a success keeps this worker's data fresh for its downstreams."
    )
    depends_on = JSONField(default=list, blank=True, help_text="Upstream worker names that must be fresh.")
    optional_depends_on = JSONField(
        default=list, blank=True, help_text="Upstreams whose failure does not block this worker."
    )
    run_after_upstream = models.BooleanField(
        default=False, help_text="Trigger this worker whenever one of its upstreams succeeds."
    )
    target = JSONField(default=dict)
    enabled = models.BooleanField(default=True)
    priority = models.CharField(max_length=10, choices=Priority.choices, default=Priority.NORMAL)
    builtin = models.BooleanField(default=False, editable=False)
    rate_factor = models.FloatField(
        default=1.0,
        validators=[MinValueValidator(1.0), MaxValueValidator(16.0)],
        help_text="Interval multiplier set by recovery to reduce the run rate (1 = as configured).",
    )
    circuit = models.OneToOneField(
        "health.CircuitBreaker", null=True, blank=True, on_delete=models.SET_NULL, related_name="worker", editable=False
    )

    # Cross-process lock.
    lock_token = models.CharField(max_length=32, blank=True)
    lock_owner = models.CharField(max_length=200, blank=True)
    lock_expires_at = models.DateTimeField(null=True, blank=True)
    lock_timeout_seconds = models.PositiveIntegerField(null=True, blank=True, help_text="Default: timeout + 60 s.")
    lock_failures = models.PositiveIntegerField(default=0, help_text="Failed acquisitions since the last success.")

    # Schedule state: the cursor every scheduler claims with a conditional UPDATE.
    next_due_at = models.DateTimeField(null=True, blank=True, editable=False)
    cadence_key = models.CharField(max_length=200, blank=True, editable=False)
    due_count = models.PositiveBigIntegerField(default=0, editable=False)
    missed_runs = models.PositiveIntegerField(
        default=0, editable=False, help_text="Due times skipped because they were older than the catch-up window."
    )
    paused = models.BooleanField(default=False, help_text="Scheduled runs paused after consecutive failures.")
    paused_at = models.DateTimeField(null=True, blank=True, editable=False)
    paused_reason = models.CharField(max_length=300, blank=True, editable=False)
    consecutive_failures = models.PositiveIntegerField(default=0, editable=False)

    # Denormalised so the fleet list needs no per-row queries.
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_status = models.CharField(max_length=12, choices=RunStatus.choices, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_score = models.FloatField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        indexes = [
            # The scheduler's query each tick (fleet/firing.py, fire_due): due workers only.
            models.Index(fields=["next_due_at"], condition=Q(next_due_at__isnull=False), name="worker_next_due_idx")
        ]
        # Apart from staff writes: a python target runs code on the host (orchestration/core/runnables.py).
        permissions = [("run_code", "Can define code that runs by name (python jobs, worker targets, stage runners)")]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        super().save(*args, **kwargs)
        if self.circuit_id and kwargs.get("update_fields") is None:
            self.ensure_circuit()  # a renamed worker's breaker takes the new name

    @property
    def schedule_name(self) -> str:
        return f"worker:{self.name}"

    @property
    def breaker_name(self) -> str:
        return f"worker:{self.name}"

    @property
    def breaker_state(self) -> str:
        return self.circuit.state if self.circuit_id else BreakerState.CLOSED

    def ensure_circuit(self) -> CircuitBreaker:
        """The worker's breaker (``worker:<name>``). Created on first need (a worker that
        never ran has none, and reads as closed); renamed with the worker."""
        # Resolved through the app registry: health's models import the ledger from
        # this package, so importing them here at load time would be circular.
        model = self._meta.get_field("circuit").related_model
        circuit = self.circuit if self.circuit_id else None
        if circuit is None:
            circuit = model.for_name(self.breaker_name)
            type(self).objects.filter(pk=self.pk).update(circuit=circuit)
            self.circuit = circuit
        elif circuit.name != self.breaker_name:
            # A leftover unlinked breaker may hold the new name (created before the
            # worker had its own); the worker's history wins.
            model.objects.filter(name=self.breaker_name, worker__isnull=True, service__isnull=True).delete()
            model.objects.filter(pk=circuit.pk).update(name=self.breaker_name)
            circuit.name = self.breaker_name
        return circuit

    @property
    def effective_lock_timeout(self) -> int:
        return self.lock_timeout_seconds or self.timeout_seconds + 60

    @property
    def timeout_cap(self) -> int:
        return self.max_timeout_seconds or self.timeout_seconds * 2

    def cadence_spec(self):

        return Cadence(self.interval_seconds, self.cron, self.timezone or "UTC")

    def cadence_text(self) -> str:
        return self.cadence_spec().describe(rate_factor=self.rate_factor)

    @property
    def scheduled(self) -> bool:
        """Has due times of its own (on-demand workers run when asked)."""
        return self.execution_model != ExecutionModel.ON_DEMAND and bool(self.interval_seconds or self.cron)

    def next_runs(self, count: int = 5, now=None) -> list:
        """The next ``count`` due times (UTC) while enabled and not paused; [] otherwise."""

        if not (self.enabled and self.scheduled) or self.paused:
            return []
        now = now or timezone.now()
        start = self.next_due_at if self.next_due_at and self.next_due_at > now else now
        first = [start] if self.next_due_at and self.next_due_at == start else []
        rate = self.rate_factor if self.interval_seconds else 1.0
        try:
            later = cadence.next_runs(self.cadence_spec(), start, count, rate_factor=rate)
        except (ValueError, LookupError):  # a zone or cron stored around validation: show none, not a 500
            return first
        return (first + later)[:count]

    def resume(self, *, actor: str) -> bool:
        """A person resumes a worker paused after failures: the failure count starts
        again and the schedule goes on from now (the paused due times are not replayed)."""
        from orchestration.fleet.sync import sync_schedule

        with transaction.atomic():
            now = timezone.now()
            changed = (
                type(self)
                .objects.filter(pk=self.pk, paused=True)
                .update(paused=False, paused_at=None, paused_reason="", consecutive_failures=0, updated_at=now)
            )
            if not changed:
                return False
            self.refresh_from_db()
            sync_schedule(self, restart=True)
            record(
                "worker.resumed",
                f"Worker {self.name} resumed; next run {self.next_due_at.isoformat() if self.next_due_at else '—'}",
                subject=self.breaker_name,
                actor=actor,
            )
        return True

    def backfill(self, start, end, *, actor: str) -> int:
        """Queue one run per due time in [start, end] under the overlap policy; a due
        time that already has a run is not queued again. Returns how many were queued."""
        from orchestration.fleet.firing import backfill

        return backfill(self, start, end, actor=actor)

    @classmethod
    def check_fields(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """The checks a worker's fields must pass whoever writes them (the API and the
        admin call this alike). ``values`` holds the worker as it would be saved; what
        is missing takes the model's default. Returns the normalised target and
        upstream lists; raises ``specs.SpecError`` naming the field."""
        from orchestration.fleet import specs

        def get(name: str) -> Any:
            value = values.get(name)
            return cls._meta.get_field(name).get_default() if value is None else value

        target = specs.validate_target(values.get("target"))
        specs.validate_cadence(
            values.get("interval_seconds"),
            values.get("cron") or "",
            get("execution_model"),
            values.get("timezone") or "UTC",
            get("jitter_seconds"),
        )
        specs.validate_schedule_options(
            get("overlap"),
            get("catch_up_seconds"),
            get("jitter_seconds"),
            get("pause_after_failures"),
            values.get("output_schema"),
        )
        specs.validate_timeouts(
            get("timeout_seconds"), values.get("max_timeout_seconds"), settings.Q_CLUSTER["timeout"]
        )
        required = specs.validate_names(values.get("depends_on"), "depends_on")
        optional = specs.validate_names(values.get("optional_depends_on"), "optional_depends_on")
        name = values.get("name") or ""
        others = cls.objects.exclude(name=name).values_list("name", "depends_on", "optional_depends_on")
        edges = {n: list(d or []) + list(o or []) for n, d, o in others}
        specs.validate_graph(name, required + optional, edges, set(edges))
        return {"target": target, "depends_on": required, "optional_depends_on": optional}

    # --- a person's writes (API, console and admin all call these) ----------------
    def set_enabled(self, enabled: bool, *, actor: str) -> bool:
        """Switch the worker on or off; returns whether anything changed.

        A conditional UPDATE, so two people pressing the same switch at once leave one
        ledger entry, not two.
        """
        from orchestration.fleet.sync import sync_schedule

        state = "enabled" if enabled else "disabled"
        with transaction.atomic():
            now = timezone.now()
            changed = type(self).objects.filter(pk=self.pk, enabled=not enabled).update(enabled=enabled, updated_at=now)
            self.enabled = enabled
            if changed:
                self.updated_at = now
                # update() sends no post_save: keep the django-q2 schedule in step here.
                sync_schedule(self)
                record(f"worker.{state}", f"Worker {self.name} {state}", subject=self.breaker_name, actor=actor)
        return bool(changed)

    def set_cadence(self, *, interval_seconds: int | None, cron: str, actor: str, reason: str = "") -> bool:
        """Change how often the worker runs (an interval, or a cron read in its zone),
        validated as the admin's form and the API validate it; the schedule cursor
        follows through the save signal the admin's save goes through. Returns whether
        anything changed; ``specs.SpecError`` names the field that is wrong."""
        from orchestration.fleet import specs

        interval, cron = interval_seconds or None, (cron or "").strip()
        specs.validate_cadence(interval, cron, self.execution_model, self.timezone or "UTC", self.jitter_seconds)
        if (self.interval_seconds or None, self.cron or "") == (interval, cron):
            return False
        before = self.cadence_text()
        changed = {"interval_seconds": [self.interval_seconds, interval], "cron": [self.cron, cron]}
        with transaction.atomic():
            self.interval_seconds, self.cron = interval, cron
            self.save(update_fields=["interval_seconds", "cron", "updated_at"])
            record(
                "worker.updated",
                f"Worker {self.name}: cadence {before} → {self.cadence_text()}" + (f" ({reason})" if reason else ""),
                subject=self.breaker_name,
                data={"changed": changed, "reason": reason},
                actor=actor,
            )
        return True

    def downstream(self) -> list[str]:
        """Workers that name this one as an upstream, required or optional."""
        return sorted(
            name
            for name, required, optional in type(self)
            .objects.exclude(pk=self.pk)
            .values_list("name", "depends_on", "optional_depends_on")
            if self.name in (required or []) or self.name in (optional or [])
        )

    def remove(self, *, actor: str) -> None:
        """Delete the worker, refused while other workers depend on it: they would
        wait forever for an upstream that no longer exists."""
        with transaction.atomic():
            blockers = self.downstream()
            if blockers:
                raise WorkerStateError(f"Required by {', '.join(blockers)}")
            record("worker.deleted", f"Worker {self.name} deleted", subject=self.breaker_name, actor=actor)
            self.delete()

    def is_fresh(self, now=None) -> bool:
        """Succeeded within its freshness window (no window: any success counts)."""
        if not self.last_success_at:
            return False
        if not self.freshness_seconds:
            return True
        now = now or timezone.now()
        return (now - self.last_success_at).total_seconds() <= self.freshness_seconds


class WorkerRun(models.Model):
    """One execution (or skip) of a worker."""

    worker = models.ForeignKey(Worker, on_delete=models.CASCADE, related_name="runs")
    execution_id = models.CharField(max_length=32, unique=True, default=new_execution_id)
    trigger = models.CharField(max_length=12, choices=RunTrigger.choices, default=RunTrigger.MANUAL)
    due_at = models.DateTimeField(null=True, blank=True, help_text="The schedule's due time for scheduled runs.")
    status = models.CharField(max_length=12, choices=RunStatus.choices, default=RunStatus.QUEUED)
    job = models.ForeignKey("orchestration.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    actor = models.CharField(max_length=150, blank=True, default="system")
    queued_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    owner = models.CharField(max_length=200, blank=True)
    success = models.BooleanField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    timeout_seconds = models.PositiveIntegerField(null=True, blank=True)
    metrics = JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    skipped_reason = models.CharField(max_length=20, blank=True)
    skipped_detail = JSONField(default=dict, blank=True)
    buffer_slot = models.BooleanField(
        default=False, editable=False, help_text="Buffered under buffer_one: holds the worker's single waiting place."
    )

    class Meta:
        ordering = ["-queued_at", "-id"]
        constraints = [
            # A schedule's due time produces one run, whatever races the schedulers run.
            models.UniqueConstraint(
                fields=["worker", "due_at"], condition=Q(due_at__isnull=False), name="workerrun_one_per_due_time"
            ),
            # buffer_one: one run waiting per worker, whatever races the runners run.
            models.UniqueConstraint(
                fields=["worker"],
                condition=Q(status="buffered", buffer_slot=True),
                name="workerrun_one_buffered_for_buffer_one",
            ),
        ]
        indexes = [
            models.Index(fields=["worker", "-queued_at"], name="workerrun_worker_idx"),
            # snapshot + crash detection: active runs and recent finishes.
            models.Index(fields=["status", "heartbeat_at"], name="workerrun_status_idx"),
            models.Index(fields=["completed_at"], name="workerrun_completed_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.worker.name} {self.execution_id[:8]} ({self.status})"


class ScoreReport(models.Model):
    """The report card of one run, or an hourly/daily rollup of a worker's runs."""

    worker = models.ForeignKey(Worker, on_delete=models.CASCADE, related_name="score_reports")
    run = models.OneToOneField(WorkerRun, null=True, blank=True, on_delete=models.CASCADE, related_name="score")
    period = models.CharField(max_length=8, choices=ReportPeriod.choices, default=ReportPeriod.RUN)
    period_start = models.DateTimeField(null=True, blank=True)
    execution_id = models.CharField(max_length=32, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    success = models.BooleanField(null=True)
    duration_ms = models.FloatField(null=True, blank=True)
    runs = models.PositiveIntegerField(default=1)
    reliability_score = models.FloatField()
    performance_score = models.FloatField()
    data_quality_score = models.FloatField()
    resource_score = models.FloatField()
    overall_score = models.FloatField()
    anomalies = JSONField(default=list, blank=True)
    recommendations = JSONField(default=list, blank=True)
    metrics = JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["worker", "period", "period_start"],
                condition=~Q(period="run"),
                name="scorereport_one_rollup_per_period",
            )
        ]
        indexes = [models.Index(fields=["worker", "period", "-created_at"], name="scorereport_worker_idx")]

    def __str__(self) -> str:
        return f"{self.worker.name} {self.period} {self.overall_score:.0f}"


class RunTally(models.Model):
    """Runs that ended in one minute, fleet-wide, counted as they end.

    The snapshot's last-hour figures add up at most 61 of these rows instead of
    counting the runs table, so reading them costs the same for 200 runs as for
    100,000. Written with an INSERT … ON CONFLICT that adds to the minute's row
    (``orchestration/fleet/tally.py``); rows older than two hours are pruned by the
    fleet sweep.
    """

    minute = models.DateTimeField(unique=True, help_text="Start of the minute (UTC).")
    runs = models.PositiveIntegerField(default=0, help_text="Runs that ended, skips left out.")
    failed = models.PositiveIntegerField(default=0, help_text="Failed, timed out or crashed.")
    skipped = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.minute:%Y-%m-%d %H:%M} runs {self.runs} failed {self.failed} skipped {self.skipped}"
