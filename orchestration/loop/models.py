from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models, transaction
from django.db.models import F, Q
from django.utils import timezone

from orchestration.core import anomalies
from orchestration.core.choices import ActionStatus, DeductionScope, RuleMode, Severity
from orchestration.core.models.ledger import record
from orchestration.core.storedjson import JSONField
from orchestration.loop import guardrails
from orchestration.loop.executor import is_risky


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
    mode = models.CharField(
        max_length=10,
        choices=RuleMode.choices,
        blank=True,
        help_text="Left empty, a risky action (the emergency fail, disabling a worker, pausing schedules) "
        "waits for approval and any other runs on its own.",
    )
    max_per_hour = models.PositiveIntegerField(
        default=30, help_text="Rate limit: runs per target per hour (0: no limit); more are held back."
    )
    loop_limit = models.PositiveIntegerField(
        default=60,
        help_text="Loop protection: more attempts than this per target in an hour pause the rule for that "
        "target, raise an anomaly and alert (0: off).",
    )
    last_fired_at = models.DateTimeField(null=True, blank=True)
    builtin = models.BooleanField(default=False, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-priority", "name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        # A rule nobody chose a mode for follows its action's risk; from then on only a
        # person changes it.
        if not self.mode:
            self.mode = guardrails.default_mode(self.risky)
        super().save(*args, **kwargs)

    @property
    def risky(self) -> bool:
        return is_risky(self.action_type, self.action_params or {})

    @property
    def effective_mode(self) -> str:
        """The mode in force: the one a person chose, else the one the action's risk gives
        (a rule another app's data migration wrote has none stored)."""
        return self.mode or guardrails.default_mode(self.risky)

    def policy(self) -> guardrails.Policy:
        return guardrails.Policy(
            max_per_hour=self.max_per_hour,
            loop_limit=self.loop_limit,
            needs_approval=guardrails.needs_approval(self.mode, self.risky),
        )

    def set_mode(self, mode: str, *, actor: str) -> bool:
        """A person lets the rule run on its own, or makes it wait for approval."""
        if mode not in RuleMode.values:
            raise ValueError(f"mode must be one of {', '.join(RuleMode.values)}")
        with transaction.atomic():
            changed = (
                type(self).objects.filter(pk=self.pk).exclude(mode=mode).update(mode=mode, updated_at=timezone.now())
            )
            self.mode = mode
            if changed:
                record(
                    "rule.mode_changed",
                    f"Rule {self.name} now {RuleMode(mode).label.lower()}"
                    + (" (a risky action)" if self.risky else ""),
                    subject=f"rule:{self.name}",
                    data={"mode": mode, "risky": self.risky},
                    actor=actor,
                )
        return bool(changed)

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
    status = models.CharField(max_length=20, choices=ActionStatus.choices)
    result = JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    duration_ms = models.FloatField(default=0)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    guardrail = models.CharField(max_length=300, blank=True, help_text="Why the guardrails held it back or asked.")
    # Risk tiers: who decided, when, and until when a decision was awaited.
    expires_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.CharField(max_length=150, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_notes = models.TextField(blank=True)
    executed_at = models.DateTimeField(null=True, blank=True, help_text="When an approved action was run.")
    # Verification: the conditions that fired it are checked again after verify_after.
    verify_conditions = JSONField(default=list, blank=True)
    verify_after = models.DateTimeField(null=True, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    effective = models.BooleanField(null=True, blank=True, help_text="Did the triggering condition clear?")
    verification = models.CharField(max_length=300, blank=True, help_text="What the check found.")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["action_type", "status"], name="action_type_status_idx"),
            # Each cycle: approvals that expire, approved actions to run, checks that are due.
            models.Index(fields=["status", "expires_at"], name="action_status_expiry_idx"),
            models.Index(fields=["verified_at", "verify_after"], name="action_verify_idx"),
            models.Index(fields=["rule_name", "effective"], name="action_rule_effective_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.action_type} (cycle {self.cycle}, {self.status})"

    # --- a person's decision on a pending action (API, console and admin) ------------
    def approve(self, *, actor: str, notes: str = "") -> Action:
        """Approve an action awaiting approval; the next pass of its automation runs it."""
        return self._decide(ActionStatus.APPROVED, actor=actor, notes=notes)

    def reject(self, *, actor: str, notes: str = "") -> Action:
        return self._decide(ActionStatus.REJECTED, actor=actor, notes=notes)

    def decide(self, approve: bool, *, actor: str, notes: str = "") -> Action:
        """Approve or reject: the one call the API, the console and the admin make."""
        return self.approve(actor=actor, notes=notes) if approve else self.reject(actor=actor, notes=notes)

    def _decide(self, status: str, *, actor: str, notes: str) -> Action:
        now = timezone.now()
        with transaction.atomic():
            # Only the first decision counts, and never one after the timeout.
            changed = (
                type(self)
                .objects.filter(pk=self.pk, status=ActionStatus.AWAITING_APPROVAL)
                .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
                .update(status=status, decided_by=actor[:150], decided_at=now, decision_notes=notes)
            )
            if not changed:
                self.refresh_from_db()
                raise ActionStateError(f"action {self.pk} is {self.status}, not awaiting approval")
            self.refresh_from_db()
            record(
                f"action.{status}",
                f"{self.action_type} on {self.target or 'the queue'} {status} by {actor}"
                + (f": {notes}" if notes else ""),
                subject=self.target or self.rule_name,
                data={"action_id": self.pk, "rule": self.rule_name, "notes": notes},
                actor=actor,
            )
        return self

    def ask_people(self) -> int:
        """Tell the notification channels that this action waits for a person."""
        from orchestration.core import notifications

        queued = notifications.notify(
            f"action:{self.pk}",
            "high",
            f"Approval needed: {self.action_type} on {self.target or 'the queue'}",
            f"{self.reason}\nRule: {self.rule_name}. Approve or reject in the console (Actions), the admin or "
            f"POST /api/v1/actions/{self.pk}/approve"
            + (f"; expires {self.expires_at:%Y-%m-%d %H:%M} UTC." if self.expires_at else "."),
            tags=["approval"],
        )
        return len(queued)

    @classmethod
    def expire_due(cls, now) -> int:
        """Pending approvals nobody answered in time expire (they are not run)."""
        ids = list(
            cls.objects.filter(status=ActionStatus.AWAITING_APPROVAL, expires_at__lte=now).values_list("pk", flat=True)[
                :200
            ]
        )
        expired = 0
        for pk in ids:
            if cls.objects.filter(pk=pk, status=ActionStatus.AWAITING_APPROVAL).update(
                status=ActionStatus.EXPIRED, decided_at=now
            ):
                expired += 1
                row = cls.objects.get(pk=pk)
                record(
                    "action.expired",
                    f"{row.action_type} on {row.target or 'the queue'} expired: nobody approved it in time",
                    severity=Severity.WARNING,
                    subject=row.target or row.rule_name,
                    data={"action_id": pk, "rule": row.rule_name},
                )
        return expired

    def claim_approved(self, now) -> bool:
        """Take an approved action for running; only one process ever wins."""
        return bool(
            type(self)
            .objects.filter(pk=self.pk, status=ActionStatus.APPROVED, executed_at__isnull=True)
            .update(executed_at=now)
        )

    def mark_verified(self, effective: bool, note: str, now) -> bool:
        """Record the later check; the first check wins. One ledger entry."""
        done = (
            type(self)
            .objects.filter(pk=self.pk, verified_at__isnull=True)
            .update(effective=effective, verified_at=now, verification=note[:300])
        )
        if done:
            record(
                "orchestrator.action_verified",
                f"{self.action_type} on {self.target or 'the queue'} was "
                + ("effective" if effective else "not effective")
                + f": {note}",
                severity=Severity.INFO if effective else Severity.WARNING,
                subject=self.target or self.rule_name,
                data={"action_id": self.pk, "rule": self.rule_name, "effective": effective},
            )
        return bool(done)

    @classmethod
    def effectiveness_by_rule(cls) -> dict[str, dict[str, Any]]:
        """Per rule: verified actions and how many were effective. An automation that is
        not a rule (the fleet's recovery) acts through several strategies: each also has
        its own line, ``<automation>:<action type>``, so a strategy that never helps shows."""
        rows = (
            cls.objects.filter(effective__isnull=False)
            .values("rule_name", "action_type", "rule_id")
            .annotate(verified=models.Count("id"), effective_count=models.Count("id", filter=Q(effective=True)))
        )
        totals: dict[str, list[int]] = {}
        for r in rows:
            keys = [r["rule_name"]] + ([f"{r['rule_name']}:{r['action_type']}"] if r["rule_id"] is None else [])
            for key in keys:
                verified, effective = totals.get(key, [0, 0])
                totals[key] = [verified + r["verified"], effective + r["effective_count"]]
        return {key: guardrails.Effectiveness(*counts).as_dict() for key, counts in sorted(totals.items())}


class ActionStateError(Exception):
    """The action is not in the state this decision needs (a 409)."""


class GuardrailCounter(models.Model):
    """The persisted counts of one automation on one target (see ``guardrails``): runs
    and attempts in the current hour, and a pause loop protection set."""

    automation = models.CharField(max_length=100, help_text="rule:<name>, recovery:<strategy> or routing:ejection")
    target = models.CharField(max_length=200)
    window_started_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    runs = models.PositiveIntegerField(default=0)
    paused_at = models.DateTimeField(null=True, blank=True)
    last_outcome = models.CharField(max_length=20, blank=True)
    last_reason = models.CharField(max_length=300, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["automation", "target"]
        constraints = [models.UniqueConstraint(fields=["automation", "target"], name="guardrail_one_per_target")]

    def __str__(self) -> str:
        return f"{self.automation} on {self.target}"

    @property
    def subject(self) -> str:
        return f"automation:{self.automation}@{self.target}"[:200]

    def as_counter(self) -> guardrails.Counter:
        return guardrails.Counter(self.window_started_at, self.attempts, self.runs, self.paused_at)

    @classmethod
    def attempt(
        cls, automation: str, target: str, policy: guardrails.Policy, now, *, approved: bool = False
    ) -> tuple[guardrails.Verdict, bool]:
        """Count one attempt and say whether it may run, and whether this outcome is new
        (not the same hold-back as last time). A compare-and-swap on the counts read, so
        two processes never both take the last run of the hour."""
        target = (target or "queue")[:200]
        for _ in range(10):
            row, _ = cls.objects.get_or_create(automation=automation, target=target)
            verdict = guardrails.judge(policy, row.as_counter(), now, approved=approved)
            after = verdict.counter
            # A trip and the pause that follows are one state for the "say it once" rule.
            outcome = guardrails.PAUSED if verdict.outcome == guardrails.TRIPPED else verdict.outcome
            swapped = cls.objects.filter(
                pk=row.pk,
                window_started_at=row.window_started_at,
                attempts=row.attempts,
                runs=row.runs,
                paused_at=row.paused_at,
            ).update(
                window_started_at=after.window_started_at,
                attempts=after.attempts,
                runs=after.runs,
                paused_at=after.paused_at,
                last_outcome=outcome,
                last_reason=verdict.reason[:300],
                updated_at=now,
            )
            if not swapped:
                continue  # another process counted meanwhile: judge again on its counts
            first = outcome != row.last_outcome
            if first and verdict.outcome in (guardrails.RATE_LIMITED, guardrails.TRIPPED):
                row.refresh_from_db()
                row._held_back(verdict, now)
            return verdict, first
        busy = guardrails.Verdict(guardrails.RATE_LIMITED, guardrails.Counter(), "counter busy; held back this time")
        return busy, False

    def _held_back(self, verdict: guardrails.Verdict, now) -> None:
        """The first hold-back of a run of them is written down (not one per cycle); a
        loop protection trip also opens an anomaly, which alerts."""
        tripped = verdict.outcome == guardrails.TRIPPED
        record(
            "guardrail.paused" if tripped else "guardrail.rate_limited",
            f"{self.automation} on {self.target}: {verdict.reason}",
            severity=Severity.ERROR if tripped else Severity.WARNING,
            subject=self.target,
            data={"automation": self.automation, "attempts": self.attempts, "runs": self.runs},
        )
        if tripped:
            anomaly, created = anomalies.open_anomaly(
                "REMEDIATION_LOOP",
                self.subject,
                {"automation": self.automation, "target": self.target, "attempts": self.attempts, "runs": self.runs},
                now=now,
            )
            if created:
                anomalies.react([anomaly])

    def resume(self, *, actor: str) -> bool:
        """A person lifts the pause: the automation acts on this target again, with
        fresh counts, and the loop anomaly resolves."""
        with transaction.atomic():
            changed = (
                type(self)
                .objects.filter(pk=self.pk, paused_at__isnull=False)
                .update(paused_at=None, attempts=0, runs=0, window_started_at=None, last_outcome="", last_reason="")
            )
            if changed:
                record(
                    "guardrail.resumed",
                    f"{self.automation} on {self.target} resumed by {actor}",
                    subject=self.target,
                    data={"automation": self.automation},
                    actor=actor,
                )
        if changed:
            anomalies.resolve("REMEDIATION_LOOP", self.subject)
        self.refresh_from_db()
        return bool(changed)


class AutomationPolicy(models.Model):
    """The guardrails of an automation that is not a rule (a recovery strategy, the
    routing ejection): rate limit, loop protection and mode, editable by a person."""

    name = models.CharField(max_length=100, unique=True, help_text="recovery:<strategy> or routing:ejection")
    mode = models.CharField(max_length=10, choices=RuleMode.choices)
    max_per_hour = models.PositiveIntegerField(default=6)
    loop_limit = models.PositiveIntegerField(default=12)
    risky = models.BooleanField(default=False, editable=False)
    updated_by = models.CharField(max_length=150, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "automation policies"

    def __str__(self) -> str:
        return self.name

    @classmethod
    def of(cls, name: str, *, risky: bool, max_per_hour: int, loop_limit: int) -> AutomationPolicy:
        row, _ = cls.objects.get_or_create(
            name=name,
            defaults={
                "mode": guardrails.default_mode(risky),
                "risky": risky,
                "max_per_hour": max_per_hour,
                "loop_limit": loop_limit,
            },
        )
        return row

    def policy(self) -> guardrails.Policy:
        return guardrails.Policy(
            max_per_hour=self.max_per_hour,
            loop_limit=self.loop_limit,
            needs_approval=guardrails.needs_approval(self.mode, self.risky),
        )

    def configure(self, *, actor: str, **fields: Any) -> None:
        """A person's change of mode or limits, with its ledger entry."""
        for name in fields:
            if name not in ("mode", "max_per_hour", "loop_limit"):
                raise ValueError(f"unknown field {name}")
        if "mode" in fields and fields["mode"] not in RuleMode.values:
            raise ValueError(f"mode must be one of {', '.join(RuleMode.values)}")
        with transaction.atomic():
            type(self).objects.filter(pk=self.pk).update(updated_by=actor[:150], updated_at=timezone.now(), **fields)
            record(
                "automation_policy.updated",
                f"Automation {self.name}: " + ", ".join(f"{k}={v}" for k, v in fields.items()),
                subject=self.name,
                data=fields,
                actor=actor,
            )
        self.refresh_from_db()


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
