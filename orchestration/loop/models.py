from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models, transaction
from django.db.models import F, Q
from django.utils import timezone

from orchestration.core.choices import ActionStatus, DeductionScope
from orchestration.core.models.ledger import record
from orchestration.core.storedjson import JSONField


class LoopState(models.Model):
    """The control loop's singleton row: switch, interval, cycle lease, last summary.

    The cycle lease is the only thing that lets a process run a cycle. It is taken
    with a conditional UPDATE, so however many runners exist, cycles never overlap.
    """

    SINGLETON_ID = 1

    enabled = models.BooleanField(default=True)
    interval_seconds = models.FloatField(default=2.0, validators=[MinValueValidator(0.1), MaxValueValidator(3600)])
    dry_run = models.BooleanField(default=False, help_text="Decide and record, but execute nothing.")

    lease_owner = models.CharField(max_length=200, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)

    cycle_count = models.PositiveBigIntegerField(default=0)
    last_cycle_started_at = models.DateTimeField(null=True, blank=True)
    next_cycle_due_at = models.DateTimeField(null=True, blank=True)
    last_cycle_finished_at = models.DateTimeField(null=True, blank=True)
    last_cycle = JSONField(null=True, blank=True)
    last_health_score = models.PositiveSmallIntegerField(null=True, blank=True)

    # A dedicated runner (run_orchestrator) reports here; the django-q2 fallback
    # schedule stays idle while one is alive.
    runner_owner = models.CharField(max_length=200, blank=True)
    runner_seen_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "control loop"
        verbose_name_plural = "control loop"

    def __str__(self) -> str:
        return f"Control loop ({'enabled' if self.enabled else 'disabled'}, every {self.interval_seconds:g}s)"

    @classmethod
    def get(cls) -> LoopState:
        state, _ = cls.objects.get_or_create(
            pk=cls.SINGLETON_ID,
            defaults={
                "enabled": settings.ORCHESTRATOR_ENABLED,
                "interval_seconds": settings.ORCHESTRATOR_INTERVAL_SECONDS,
                "dry_run": settings.ORCHESTRATOR_DRY_RUN,
            },
        )
        return state

    # --- a person's writes (API, console and admin all call these) ----------------
    @classmethod
    def enable(cls, interval_seconds: float | None = None, *, actor: str) -> LoopState:
        """Switch the loop on, optionally with a new interval; the next cycle is due at
        once, so the change takes effect within one interval."""
        fields: dict[str, Any] = {"enabled": True}
        if interval_seconds is not None:
            fields["interval_seconds"] = cls._checked_interval(interval_seconds)
        with transaction.atomic():
            state = cls._write(fields)
            record(
                "orchestrator.enabled",
                f"Control loop enabled, every {state.interval_seconds:g}s",
                data={"interval_seconds": state.interval_seconds},
                actor=actor,
            )
        return state

    @classmethod
    def disable(cls, *, actor: str) -> LoopState:
        """Switch the loop off: no periodic cycle runs until it is enabled again."""
        with transaction.atomic():
            state = cls._write({"enabled": False})
            record("orchestrator.disabled", "Control loop disabled", actor=actor)
        return state

    @classmethod
    def configure(
        cls,
        *,
        actor: str,
        enabled: bool | None = None,
        interval_seconds: float | None = None,
        dry_run: bool | None = None,
    ) -> LoopState:
        """Several settings at once (the admin's form): a switch is the same write and
        ledger entry as ``enable``/``disable``; the other changes are one
        ``orchestrator.settings_changed`` entry."""
        with transaction.atomic():
            if enabled is True:
                state = cls.enable(interval_seconds, actor=actor)
                interval_seconds = None
            elif enabled is False:
                state = cls.disable(actor=actor)
            else:
                state = cls.get()
            rest: dict[str, Any] = {}
            if interval_seconds is not None:
                rest["interval_seconds"] = cls._checked_interval(interval_seconds)
            if dry_run is not None:
                rest["dry_run"] = dry_run
            if rest:
                state = cls._write(rest)
                record(
                    "orchestrator.settings_changed",
                    f"Loop settings changed: {', '.join(rest)}",
                    data=rest,
                    actor=actor,
                )
        return state

    @classmethod
    def _checked_interval(cls, value: float) -> float:
        cls._meta.get_field("interval_seconds").run_validators(value)
        return value

    @classmethod
    def _write(cls, fields: dict[str, Any]) -> LoopState:
        # An UPDATE of these fields only: a whole-row save would write back a stale
        # lease and cycle summary over a cycle running meanwhile. auto_now does not
        # apply to update(), hence updated_at by hand.
        cls.get()
        cls.objects.filter(pk=cls.SINGLETON_ID).update(next_cycle_due_at=None, updated_at=timezone.now(), **fields)
        return cls.objects.get(pk=cls.SINGLETON_ID)

    # --- cycle lease -------------------------------------------------------------
    @classmethod
    def acquire_cycle_lease(cls, owner: str, ttl_seconds: float, *, respect_interval: bool, lead: float = 0.0) -> bool:
        """Take the cycle lease if it is free or expired; True when this caller won.

        With ``respect_interval`` (the periodic runners) the lease is only granted to
        an enabled loop whose next cycle is due (within ``lead`` seconds: the runner
        then waits for the due time itself), so several runners together still
        produce one cycle per interval. A manual run-once ignores both.
        """
        now = timezone.now()
        free = Q(lease_owner="") | Q(lease_expires_at__lt=now) | Q(lease_expires_at__isnull=True)
        query = cls.objects.filter(free, pk=cls.SINGLETON_ID)
        if respect_interval:
            due_by = now + timedelta(seconds=lead)
            query = query.filter(Q(next_cycle_due_at__isnull=True) | Q(next_cycle_due_at__lte=due_by), enabled=True)
        return bool(query.update(lease_owner=owner, lease_expires_at=now + timedelta(seconds=ttl_seconds)))

    @classmethod
    def renew_cycle_lease(cls, owner: str, ttl_seconds: float) -> bool:
        """Extend a lease this owner holds (a cycle still running); False if it lost it."""
        expires = timezone.now() + timedelta(seconds=ttl_seconds)
        return bool(cls.objects.filter(pk=cls.SINGLETON_ID, lease_owner=owner).update(lease_expires_at=expires))

    @classmethod
    def release_cycle_lease(cls, owner: str, **fields) -> bool:
        return bool(
            cls.objects.filter(pk=cls.SINGLETON_ID, lease_owner=owner).update(
                lease_owner="", lease_expires_at=None, **fields
            )
        )

    @classmethod
    def beat_runner(cls, owner: str) -> None:
        if not cls.objects.filter(pk=cls.SINGLETON_ID).update(runner_owner=owner, runner_seen_at=timezone.now()):
            cls.get()
            cls.objects.filter(pk=cls.SINGLETON_ID).update(runner_owner=owner, runner_seen_at=timezone.now())

    @classmethod
    def count_cycle(cls) -> None:
        cls.objects.filter(pk=cls.SINGLETON_ID).update(cycle_count=F("cycle_count") + 1)

    # A dedicated runner beats every second; one silent this long is taken for dead and
    # the clusters' standby loops run the cycles (within RUNNER_ALIVE_SECONDS + a tick).
    RUNNER_ALIVE_SECONDS = 5.0

    def dedicated_runner_alive(self, now=None) -> bool:
        now = now or timezone.now()
        if not self.runner_seen_at:
            return False
        return (now - self.runner_seen_at).total_seconds() < self.RUNNER_ALIVE_SECONDS

    @property
    def running(self) -> bool:
        """Enabled and a cycle happened recently enough that someone is running them."""
        if not self.enabled or not self.last_cycle_started_at:
            return False
        age = (timezone.now() - self.last_cycle_started_at).total_seconds()
        return age < max(10.0, self.interval_seconds * 5)


class Rule(models.Model):
    """One decider heuristic as data: ANDed conditions over snapshot fields → action.

    ``conditions`` is a list of ``{"field": "jobs.pending", "op": ">", "value": 50}``;
    the decider evaluates it without ``eval``. ``cooldown_seconds`` keeps a rule whose
    condition stays true from re-firing every cycle.
    """

    name = models.SlugField(max_length=80, unique=True)
    description = models.CharField(max_length=300, blank=True, help_text="The reason recorded with each action.")
    conditions = JSONField(default=list)
    action_type = models.CharField(max_length=64)
    action_params = JSONField(default=dict, blank=True)
    priority = models.PositiveSmallIntegerField(default=5, validators=[MaxValueValidator(100)])
    enabled = models.BooleanField(default=True)
    cooldown_seconds = models.PositiveIntegerField(default=0)
    last_fired_at = models.DateTimeField(null=True, blank=True)
    builtin = models.BooleanField(default=False, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-priority", "name"]

    def __str__(self) -> str:
        return self.name

    def set_enabled(self, enabled: bool, *, actor: str) -> bool:
        """Switch the rule on or off; returns whether anything changed (one ledger
        entry however many people press the switch at once)."""
        state = "enabled" if enabled else "disabled"
        with transaction.atomic():
            now = timezone.now()
            changed = type(self).objects.filter(pk=self.pk, enabled=not enabled).update(enabled=enabled, updated_at=now)
            self.enabled = enabled
            if changed:
                self.updated_at = now
                record(f"rule.{state}", f"Rule {self.name} {state}", subject=f"rule:{self.name}", actor=actor)
        return bool(changed)

    def cooling_down(self, now) -> bool:
        return bool(
            self.cooldown_seconds
            and self.last_fired_at
            and (now - self.last_fired_at).total_seconds() < self.cooldown_seconds
        )


class ScoreDeduction(models.Model):
    """One line of the health score: when its ANDed conditions hold over the snapshot,
    the score loses ``points`` (times the value of ``per_field`` when set, at most
    ``max_points``). The score is 100 minus the deductions that apply, and the snapshot
    lists each with the values that made it apply."""

    name = models.SlugField(max_length=80, unique=True)
    conditions = JSONField(default=list, help_text='Same shape as a rule\'s: [{"field", "op", "value"}], ANDed.')
    points = models.PositiveSmallIntegerField(validators=[MaxValueValidator(100)])
    per_field = models.CharField(
        max_length=120,
        blank=True,
        help_text="Optional snapshot field: the points count once per unit of it.",
    )
    max_points = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MaxValueValidator(100)], help_text="Cap for a per-unit deduction."
    )
    reason = models.CharField(max_length=200, help_text="What a person reads next to the score.")
    scope = models.CharField(
        max_length=12,
        choices=DeductionScope.choices,
        default=DeductionScope.QUEUE,
        help_text="Queue deductions make the queue's own score (what the emergency rebalance reads).",
    )
    enabled = models.BooleanField(default=True)
    builtin = models.BooleanField(default=False, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-points", "name"]

    def __str__(self) -> str:
        return self.name

    def set_enabled(self, enabled: bool, *, actor: str) -> bool:
        """Switch the deduction on or off; one ledger entry however many press it at once."""
        state = "enabled" if enabled else "disabled"
        with transaction.atomic():
            now = timezone.now()
            changed = type(self).objects.filter(pk=self.pk, enabled=not enabled).update(enabled=enabled, updated_at=now)
            self.enabled = enabled
            if changed:
                self.updated_at = now
                record(
                    f"score_deduction.{state}",
                    f"Health-score deduction {self.name} {state}",
                    subject=f"score_deduction:{self.name}",
                    actor=actor,
                )
        return bool(changed)


class Action(models.Model):
    """What a cycle decided, why, and what came of it."""

    cycle = models.PositiveBigIntegerField(db_index=True)
    rule = models.ForeignKey(Rule, null=True, blank=True, on_delete=models.SET_NULL, related_name="actions")
    rule_name = models.CharField(max_length=80, blank=True)
    action_type = models.CharField(max_length=64)
    priority = models.PositiveSmallIntegerField(default=5)
    reason = models.CharField(max_length=300, blank=True)
    target = models.CharField(max_length=200, blank=True)
    params = JSONField(default=dict, blank=True)
    trigger = JSONField(default=dict, blank=True, help_text="Snapshot values that fired the rule.")
    status = models.CharField(max_length=12, choices=ActionStatus.choices)
    result = JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    duration_ms = models.FloatField(default=0)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["action_type", "status"], name="action_type_status_idx")]

    def __str__(self) -> str:
        return f"{self.action_type} (cycle {self.cycle}, {self.status})"


class ChannelWindow(models.Model):
    """A daily window (UTC hours) in which a channel's jobs are best run."""

    channel = models.CharField(max_length=40, unique=True)
    start_hour = models.PositiveSmallIntegerField(validators=[MaxValueValidator(23)])
    end_hour = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(24)], help_text="Exclusive; 24 means midnight."
    )
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["channel"]

    def __str__(self) -> str:
        return f"{self.channel} {self.start_hour:02d}–{self.end_hour:02d} h UTC"
