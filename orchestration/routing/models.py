"""Routing's memory: outcomes, learned stats, rotation cursors, contexts, multipliers and
suggestions. Everything the brain knows is here, so it survives a restart."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce, Greatest
from django.db.models.lookups import GreaterThanOrEqual
from django.utils import timezone

from orchestration.core.choices import ActionStatus, Severity
from orchestration.core.models.ledger import record
from orchestration.core.storedjson import JSONField
from orchestration.loop import adjustments, guardrails
from orchestration.loop.models import Action, AutomationPolicy, GuardrailCounter, LoopState
from orchestration.routing import outliers
from orchestration.routing.learning import EWMA_ALPHA, ServiceStats, ewma_sample


class TypeMultiplier(models.Model):
    """Priority score multiplier of a task type (seed defaults, editable)."""

    task_type = models.CharField(max_length=100, unique=True)
    multiplier = models.FloatField(validators=[MinValueValidator(0), MaxValueValidator(100)])

    class Meta:
        ordering = ["-multiplier", "task_type"]

    def __str__(self) -> str:
        return f"{self.task_type} × {self.multiplier:g}"

    @classmethod
    def table(cls) -> dict[str, float]:
        return dict(cls.objects.values_list("task_type", "multiplier"))


class RotationCursor(models.Model):
    """Round-robin position per task type, shared by every process."""

    task_type = models.CharField(max_length=100, unique=True)
    position = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.task_type} at {self.position}"

    @classmethod
    def take(cls, task_type: str) -> int:
        """The next position for this type, atomically: two processes never get the same."""
        cls.objects.get_or_create(task_type=task_type)
        with transaction.atomic():
            # Row lock on PostgreSQL; SQLite's IMMEDIATE transaction serialises anyway.
            cursor = cls.objects.select_for_update().get(task_type=task_type)
            cls.objects.filter(pk=cursor.pk).update(position=F("position") + 1)
        return cursor.position

    @classmethod
    def peek(cls, task_type: str) -> int:
        return cls.objects.filter(task_type=task_type).values_list("position", flat=True).first() or 0


class TaskOutcome(models.Model):
    """One attempt of one routed task on one service: the short- and long-term memory."""

    task_type = models.CharField(max_length=100)
    service_name = models.CharField(max_length=100)
    job = models.ForeignKey("orchestration.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    priority = models.CharField(max_length=10, default="normal")
    strategy = models.CharField(max_length=20, blank=True)
    # The task's try number across all its services: 1 is its first try, more is a retry.
    attempt = models.PositiveSmallIntegerField(default=1)
    success = models.BooleanField()
    execution_ms = models.FloatField(null=True, blank=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    # timeout, connection, rate_limited, http_5xx, http_4xx… (outliers.error_class)
    error_class = models.CharField(max_length=30, blank=True)
    context = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["task_type", "-created_at"], name="outcome_type_idx"),
            models.Index(fields=["service_name", "-created_at"], name="outcome_service_idx"),
            models.Index(fields=["-created_at"], name="outcome_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.task_type} on {self.service_name}: {'ok' if self.success else 'failed'}"


class RouteStat(models.Model):
    """Long-term learned statistics per (task type, service), updated with F()
    expressions so concurrent outcomes never lose a count."""

    task_type = models.CharField(max_length=100)
    service_name = models.CharField(max_length=100)
    count = models.PositiveBigIntegerField(default=0)
    successes = models.PositiveBigIntegerField(default=0)
    total_ms = models.FloatField(default=0)
    timed = models.PositiveBigIntegerField(default=0)
    # Recent latency, failures counted at a penalty (learning.ewma_sample); None until the first try.
    ewma_ms = models.FloatField(null=True, blank=True)
    last_outcome_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["task_type", "service_name"]
        constraints = [models.UniqueConstraint(fields=["task_type", "service_name"], name="routestat_unique")]

    def __str__(self) -> str:
        return f"{self.task_type} / {self.service_name}"

    @property
    def success_rate(self) -> float | None:
        return round(self.successes / self.count, 4) if self.count else None

    @property
    def avg_ms(self) -> float | None:
        return round(self.total_ms / self.timed, 1) if self.timed else None

    def as_stats(self) -> ServiceStats:
        return ServiceStats(self.service_name, self.count, self.successes, self.avg_ms, self.ewma_ms)

    @classmethod
    def learn(cls, task_type: str, service_name: str, success: bool, execution_ms: float | None) -> None:
        cls.objects.get_or_create(task_type=task_type, service_name=service_name)
        fields = {
            "count": F("count") + 1,
            "successes": F("successes") + (1 if success else 0),
            "total_ms": F("total_ms") + (execution_ms or 0),
            "timed": F("timed") + (1 if execution_ms is not None else 0),
            "last_outcome_at": timezone.now(),
        }
        if execution_ms is not None:
            # One UPDATE: concurrent outcomes each fold into the value the other left.
            sample = ewma_sample(success, execution_ms)
            fields["ewma_ms"] = Coalesce(F("ewma_ms") * (1 - EWMA_ALPHA) + Value(sample * EWMA_ALPHA), Value(sample))
        cls.objects.filter(task_type=task_type, service_name=service_name).update(**fields)


class TaskContext(models.Model):
    """A named context shared by related tasks (e.g. one campaign's e-mails)."""

    name = models.SlugField(max_length=100, unique=True)
    data = JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return self.name


class SuggestionStatus(models.TextChoices):
    PENDING = "pending", "Pending approval"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    APPLIED = "applied", "Applied"
    REVERTED = "reverted", "Reverted"


class SuggestionPriority(models.TextChoices):
    HIGH = "high", "High"
    MEDIUM = "medium", "Medium"
    LOW = "low", "Low"


class SuggestionStateError(Exception):
    """Deciding a suggestion that is not waiting for that decision (answered 409)."""


class Suggestion(models.Model):
    """An improvement the analysis proposes. Never applied automatically: a person
    approves or rejects it; approval records the metrics before, tracking the after."""

    kind = models.CharField(max_length=40)
    subject = models.CharField(max_length=200)
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    action = models.CharField(max_length=60, blank=True, help_text="What a person would do if they approve.")
    evidence = JSONField(default=dict, blank=True)
    priority = models.CharField(max_length=10, choices=SuggestionPriority.choices, default=SuggestionPriority.MEDIUM)
    status = models.CharField(max_length=10, choices=SuggestionStatus.choices, default=SuggestionStatus.PENDING)
    auto_apply = models.BooleanField(default=False, editable=False)  # always False: suggestions only
    decided_by = models.CharField(max_length=150, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    notes = models.TextField(blank=True)
    impact = JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # Applying is a person's act: what it changed (to revert exactly that), who, when.
    change = JSONField(default=dict, blank=True, help_text="service, field, before, after")
    applied_by = models.CharField(max_length=150, blank=True)
    applied_at = models.DateTimeField(null=True, blank=True)
    reverted_by = models.CharField(max_length=150, blank=True)
    reverted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "kind", "subject"], name="suggestion_open_idx")]

    def __str__(self) -> str:
        return self.title

    def decide(self, approve: bool, *, actor: str, notes: str = "", before: dict | None = None) -> Suggestion:
        """Approve or reject; a conditional UPDATE so two people deciding at once
        cannot both succeed."""
        status = SuggestionStatus.APPROVED if approve else SuggestionStatus.REJECTED
        fields = {"status": status, "decided_by": actor, "decided_at": timezone.now(), "notes": notes}
        if approve and before is not None:
            fields["impact"] = {"before": before}
        if not type(self).objects.filter(pk=self.pk, status=SuggestionStatus.PENDING).update(**fields):
            self.refresh_from_db()
            raise SuggestionStateError(f"suggestion {self.pk} is already {self.status}")
        self.refresh_from_db()
        record(
            f"routing.suggestion_{status}",
            f"Suggestion '{self.title}' {status} by {actor}",
            subject=f"suggestion:{self.pk}",
            data={"suggestion_id": self.pk, "kind": self.kind, "notes": notes},
            actor=actor,
        )
        return self

    def apply(self, *, actor: str, metrics: dict) -> Suggestion:
        """A person applies an approved suggestion: the service or worker changes through
        its own write (the one the admin and the API use), and the metrics now are kept
        as "before"."""
        from orchestration.routing import improvement

        with transaction.atomic():
            if self.status != SuggestionStatus.APPROVED:
                raise SuggestionStateError(f"suggestion {self.pk} is {self.status}; only approved ones are applied")
            kind, name = improvement.target_of(self.action, self.subject, self.evidence or {})
            target, state = self._target(kind, name)
            plan = improvement.planned_change(self.action, self.subject, self.evidence or {}, state)
            now = timezone.now()
            impact = {**(self.impact or {}), "before": metrics, "applied_at": now.isoformat()}
            claimed = (
                type(self)
                .objects.filter(pk=self.pk, status=SuggestionStatus.APPROVED)
                .update(
                    status=SuggestionStatus.APPLIED,
                    change=plan.as_dict(),
                    applied_by=actor,
                    applied_at=now,
                    impact=impact,
                )
            )
            if not claimed:
                self.refresh_from_db()
                raise SuggestionStateError(f"suggestion {self.pk} is already {self.status}")
            self._write(
                target, plan.name, plan.field, plan.after, actor=actor, reason=f"suggestion {self.pk}: {self.title}"
            )
            self.refresh_from_db()
            record(
                "routing.suggestion_applied",
                f"Suggestion '{self.title}' applied by {actor}: {plan.target} {plan.name} {plan.field} "
                f"{plan.before} → {plan.after}",
                subject=f"suggestion:{self.pk}",
                data={"suggestion_id": self.pk, "change": plan.as_dict(), "before": metrics},
                actor=actor,
            )
        return self

    def revert(self, *, actor: str, metrics: dict) -> Suggestion:
        """Put back what applying changed, unless someone changed that field since (then a
        person decides: reverting would override them)."""
        with transaction.atomic():
            if self.status != SuggestionStatus.APPLIED or not self.change:
                raise SuggestionStateError(f"suggestion {self.pk} is {self.status}; only applied ones are reverted")
            change = self.change
            # Changes applied before workers could be changed name only their service.
            kind, name = change.get("target", "service"), change.get("name") or change.get("service")
            target, state = self._target(kind, name)
            now_value = state.get(change["field"])
            if now_value != change["after"]:
                raise SuggestionStateError(
                    f"{kind} {name} {change['field']} was changed since it was applied "
                    f"(now {now_value}, applied {change['after']}); not overriding that"
                )
            now = timezone.now()
            impact = {**(self.impact or {}), "after": metrics, "reverted_at": now.isoformat()}
            claimed = (
                type(self)
                .objects.filter(pk=self.pk, status=SuggestionStatus.APPLIED)
                .update(status=SuggestionStatus.REVERTED, reverted_by=actor, reverted_at=now, impact=impact)
            )
            if not claimed:
                self.refresh_from_db()
                raise SuggestionStateError(f"suggestion {self.pk} is already {self.status}")
            self._write(
                target, name, change["field"], change["before"], actor=actor, reason=f"revert of suggestion {self.pk}"
            )
            self.refresh_from_db()
            record(
                "routing.suggestion_reverted",
                f"Suggestion '{self.title}' reverted by {actor}: {name} {change['field']} back to {change['before']}",
                subject=f"suggestion:{self.pk}",
                data={"suggestion_id": self.pk, "change": change, "after": metrics},
                actor=actor,
            )
        return self

    @staticmethod
    def _target(kind: str, name: str) -> tuple[adjustments.Adjustable, dict[str, Any]]:
        from orchestration.routing.improvement import NotApplicable

        try:
            target = adjustments.target(kind)
        except adjustments.AdjustmentError as exc:
            raise NotApplicable(str(exc)) from None
        try:
            return target, target.read(name)
        except LookupError:
            raise SuggestionStateError(f"{kind} {name} does not exist") from None

    @staticmethod
    def _write(target: adjustments.Adjustable, name: str, field: str, value: Any, *, actor: str, reason: str) -> None:
        from orchestration.routing.improvement import NotApplicable

        try:
            target.write(name, field, value, actor=actor, reason=reason)
        except adjustments.AdjustmentError as exc:
            raise NotApplicable(str(exc)) from None  # the claim above rolls back with it

    def track_impact(self, after: dict, *, actor: str) -> Suggestion:
        """Record before/after for an approved (or already tracked) suggestion."""
        if self.status not in (SuggestionStatus.APPROVED, SuggestionStatus.APPLIED):
            raise SuggestionStateError(f"suggestion {self.pk} is {self.status}; only approved ones are tracked")
        before = (self.impact or {}).get("before", {})
        change = {}
        for key, now_value in after.items():
            was = before.get(key)
            if isinstance(was, int | float) and isinstance(now_value, int | float) and was:
                change[key] = f"{(now_value - was) / was * 100:+.1f}%"
        impact = {"before": before, "after": after, "change": change}
        type(self).objects.filter(pk=self.pk).update(impact=impact, status=SuggestionStatus.APPLIED)
        self.refresh_from_db()
        record(
            "routing.suggestion_tracked",
            f"Impact of '{self.title}' recorded: {change or 'no comparable numbers'}",
            subject=f"suggestion:{self.pk}",
            data=impact,
            actor=actor,
        )
        return self


def outlier_config() -> outliers.OutlierConfig:
    return outliers.OutlierConfig.from_mapping(getattr(settings, "ROUTING_OUTLIERS", None))


def budget_config() -> outliers.BudgetConfig:
    return outliers.BudgetConfig.from_mapping(getattr(settings, "ROUTING_RETRY_BUDGET", None))


EJECTION = "routing:ejection"


EJECT_ACTION = "eject_service"
# How long after an ejection ended its routed tries are looked at to verify it.
EJECTION_VERIFY_SECONDS = 60
# A claimed probe not answered in this long (its process died) may be claimed again;
# longer than the longest try (60 s, the normal priority's timeout).
PROBE_CLAIM_SECONDS = 90
HELD_STATUS = {
    guardrails.RATE_LIMITED: ActionStatus.RATE_LIMITED,
    guardrails.PAUSED: ActionStatus.PAUSED,
    guardrails.TRIPPED: ActionStatus.PAUSED,
}


def ejection_guard(service_name: str, task_type: str, now: datetime) -> tuple[guardrails.Verdict, bool]:
    """The guardrails of an ejection (per service and task type): the hourly limit and
    loop protection, and whether the verdict is new. It never waits for approval: an
    ejection is short and capped by the share of services, and a try in flight cannot
    wait for a person."""
    row = AutomationPolicy.of(EJECTION, risky=False, max_per_hour=EJECTIONS_PER_HOUR, loop_limit=EJECTION_LOOP_LIMIT)
    policy = replace(row.policy(), needs_approval=False)
    return GuardrailCounter.attempt(EJECTION, ejection_target(service_name, task_type), policy, now)


def ejection_target(service_name: str, task_type: str) -> str:
    return f"{service_name}/{task_type}"[:200]


def _cycle() -> int:
    return LoopState.objects.filter(pk=LoopState.SINGLETON_ID).values_list("cycle_count", flat=True).first() or 0


def verify_ejections(now: datetime | None = None) -> int:
    """The later check of each ejection that ended: effective when the service's routed
    tries since its end fail below the ejection's rate (outliers.recovered). One with no
    tries since waits for some; one ejected again was already found not effective."""
    now = now or timezone.now()
    config = outlier_config()
    verified = 0
    due = Action.objects.filter(
        rule_name=EJECTION, status=ActionStatus.SUCCEEDED, verified_at__isnull=True, verify_after__lte=now
    )
    for action in due[:100]:
        params, result = action.params or {}, action.result or {}
        ended = result.get("ended_at")
        if not ended:
            continue
        tries = TaskOutcome.objects.filter(
            service_name=params.get("service"),
            task_type=params.get("task_type"),
            created_at__gte=datetime.fromisoformat(ended),
        ).aggregate(n=models.Count("id"), failed=models.Count("id", filter=Q(success=False)))
        if not tries["n"]:
            continue
        effective, note = outliers.recovered(tries["n"], tries["failed"], config)
        verified += int(action.mark_verified(effective, note, now))
    return verified


# An ejection grows longer each time (up to 5 min): 10 an hour is a service out most
# of it; trying past twice that means ejecting does not help and a person should look.
EJECTIONS_PER_HOUR = 10
EJECTION_LOOP_LIMIT = 20


class OutlierState(models.Model):
    """Passive outlier detection of one service for one task type: its recent routed
    outcomes and its ejection, if any. Shared by every process through the database;
    each change is one compare-and-swap UPDATE on ``version``. The rules are in
    ``routing.outliers``."""

    service_name = models.CharField(max_length=100)
    task_type = models.CharField(max_length=100)
    consecutive_failures = models.PositiveIntegerField(default=0)
    window_started_at = models.DateTimeField(null=True, blank=True)
    window_requests = models.PositiveIntegerField(default=0)
    window_failures = models.PositiveIntegerField(default=0)
    ejections = models.PositiveIntegerField(default=0, help_text="How many times it was ejected (not cooldowns).")
    ejected_at = models.DateTimeField(null=True, blank=True)
    until = models.DateTimeField(null=True, blank=True, help_text="Ejected or cooling down until then.")
    reason = models.CharField(max_length=300, blank=True)
    probation = models.BooleanField(default=False, help_text="Back from an ejection: one failure ejects it again.")
    ended_at = models.DateTimeField(null=True, blank=True)
    last_reason = models.CharField(max_length=300, blank=True, help_text="Why it was last ejected.")
    probe_claimed_at = models.DateTimeField(
        null=True, blank=True, help_text="When a process took the one probe try after the ejection's time was up."
    )
    version = models.PositiveBigIntegerField(default=0, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)

    STATUS_FIELDS = (
        "consecutive_failures",
        "window_started_at",
        "window_requests",
        "window_failures",
        "ejections",
        "ejected_at",
        "until",
        "reason",
        "probation",
        "ended_at",
    )

    class Meta:
        ordering = ["task_type", "service_name"]
        constraints = [models.UniqueConstraint(fields=["service_name", "task_type"], name="outlier_unique")]
        # routing.router.ejected_services: the live ejections of one task type.
        indexes = [models.Index(fields=["task_type", "until"], name="outlier_until_idx")]

    def __str__(self) -> str:
        return f"{self.service_name} for {self.task_type}"

    @property
    def status(self) -> outliers.OutlierStatus:
        return outliers.OutlierStatus(**{name: getattr(self, name) for name in self.STATUS_FIELDS})

    def is_ejected(self, now: datetime | None = None) -> bool:
        return self.until is not None and (now or timezone.now()) < self.until

    def awaiting_probe(self, now: datetime | None = None) -> bool:
        return self.status.awaiting_probe(now or timezone.now())

    @classmethod
    def out_of_traffic(cls, now: datetime) -> Q:
        """Ejected, cooling down, or past its ejection but not yet probed successfully."""
        return Q(until__gt=now) | Q(probation=True, until__isnull=False)

    @classmethod
    def live(cls, task_type: str, now: datetime | None = None) -> dict[str, OutlierState]:
        """The services out of full traffic for this task type right now."""
        rows = cls.objects.filter(cls.out_of_traffic(now or timezone.now()), task_type=task_type)
        return {row.service_name: row for row in rows}

    @classmethod
    def claim_probe(cls, service_name: str, task_type: str, *, owner: str, now: datetime | None = None) -> bool:
        """Take the one probe try of a service whose ejection's time is up: a conditional
        UPDATE, so of all the processes that ask only one gets it (a claim whose process
        died without an answer may be taken again after PROBE_CLAIM_SECONDS)."""
        now = now or timezone.now()
        stale = now - timedelta(seconds=PROBE_CLAIM_SECONDS)
        won = (
            cls.objects.filter(service_name=service_name, task_type=task_type, probation=True, until__lte=now)
            .filter(Q(probe_claimed_at__isnull=True) | Q(probe_claimed_at__lt=stale))
            .update(probe_claimed_at=now, updated_at=now)
        )
        if won:
            record(
                "routing.probe_sent",
                f"{service_name}: ejection from {task_type} is over; one probe try ({owner}) decides whether it"
                " takes traffic again",
                subject=f"service:{service_name}",
                data={"service": service_name, "task_type": task_type, "owner": owner},
            )
        return bool(won)

    @classmethod
    def observe(
        cls,
        service_name: str,
        task_type: str,
        success: bool,
        *,
        capable: int,
        what: str = "",
        retry_after: float | None = None,
        now: datetime | None = None,
    ) -> str | None:
        """Fold one routed try in; returns the transition (``ejected``, ``ejection_ended``,
        ``cooldown``) or None. Every transition is written to the ledger."""
        now = now or timezone.now()
        config = outlier_config()
        cls.objects.get_or_create(service_name=service_name, task_type=task_type)
        guard: tuple[guardrails.Verdict, bool] | None = None  # asked once per try, however many races follow
        for _ in range(20):
            row = cls.objects.get(service_name=service_name, task_type=task_type)
            probed = row.awaiting_probe(now)  # this try is the probe after the ejection
            if retry_after is not None:
                seen = outliers.observe(row.status, success, now, config, ejectable=False, what=what)
                result = outliers.cooldown(seen.status, retry_after, now, what)
                if row._swap(result.status):
                    break
                continue
            result = outliers.observe(row.status, success, now, config, what=what)
            if result.transition != outliers.EJECTED:
                if row._swap(result.status):
                    break
                continue
            # Ejections of one task type take turns (the budget row is the lock), so
            # two processes cannot both take the last place under the share cap.
            with transaction.atomic():
                RetryBudget.objects.get_or_create(task_type=task_type)
                RetryBudget.objects.select_for_update().filter(task_type=task_type).first()
                others = (
                    cls.objects.filter(cls.out_of_traffic(now), task_type=task_type)
                    .exclude(service_name=service_name)
                    .exclude(reason=outliers.RETRY_AFTER)
                    .count()
                )
                if not outliers.may_eject(others, capable, config):
                    result = outliers.observe(row.status, success, now, config, ejectable=False, what=what)
                else:
                    if guard is None:
                        guard = ejection_guard(service_name, task_type, now)
                    if not guard[0].runs:
                        held = outliers.observe(row.status, success, now, config, ejectable=False, what=what)
                        result = replace(held, held_back=f"guardrails: {guard[0].reason}")
                if row._swap(result.status):
                    break
        else:  # pragma: no cover - twenty lost races in a row
            return None
        with transaction.atomic():  # the Action and its ledger entry together
            action_id = row._act(result, now, capable, guard, probed=probed)
            row._ledger(result, now, capable, probed=probed, action_id=action_id)
        return result.transition

    def _swap(self, status: outliers.OutlierStatus) -> bool:
        fields = {name: getattr(status, name) for name in self.STATUS_FIELDS}
        if status.reason and status.reason != outliers.RETRY_AFTER:
            fields["last_reason"] = status.reason
        # A new ejection, or back in traffic: any probe claim belonged to the old state.
        if status.until != self.until or not status.probation:
            fields["probe_claimed_at"] = None
        changed = (
            type(self)
            .objects.filter(pk=self.pk, version=self.version)
            .update(**fields, version=F("version") + 1, updated_at=timezone.now())
        )
        if changed:
            for name, value in fields.items():
                setattr(self, name, value)
        return bool(changed)

    def _act(
        self,
        result: outliers.Observation,
        now: datetime,
        capable: int,
        guard: tuple[guardrails.Verdict, bool] | None,
        *,
        probed: bool,
    ) -> int | None:
        """Ejections are remediations like the loop's: each one an Action row, verified
        after it ends; a guardrail hold-back an Action row too (once per run of them).
        Returns the Action written or updated."""
        held = guard is not None and not guard[0].runs and guard[1] and result.held_back.startswith("guardrails: ")
        failed_probe = probed and bool(result.held_back)  # back in traffic without a new ejection
        if result.transition not in (outliers.EJECTED, outliers.EJECTION_ENDED) and not (held or failed_probe):
            return None  # most tries: no query at all
        target = ejection_target(self.service_name, self.task_type)
        open_ones = Action.objects.filter(
            rule_name=EJECTION, target=target, status=ActionStatus.SUCCEEDED, verified_at__isnull=True
        )
        if failed_probe:
            for action in open_ones:
                note = f"its probe failed at {now:%H:%M:%S} UTC; not ejected again ({result.held_back})"
                action.mark_verified(False, note[:300], now)
        base = {
            "cycle": _cycle(),
            "rule_name": EJECTION,
            "action_type": EJECT_ACTION,
            "target": target,
            "params": {"service": self.service_name, "task_type": self.task_type},
            "created_at": now,
        }
        if result.transition == outliers.EJECTED:
            # The one before did not hold: the service failed again once it was back.
            for action in open_ones:
                action.mark_verified(False, f"ejected again at {now:%H:%M:%S} UTC: {self.reason}"[:300], now)
            seconds = (self.until - now).total_seconds()
            return Action.objects.create(
                **base,
                priority=5,
                status=ActionStatus.SUCCEEDED,
                reason=(
                    f"{self.reason}; out for {seconds:g} s (ejection {self.ejections}); verified "
                    f"{EJECTION_VERIFY_SECONDS} s after it ends by the routed tries since"
                )[:300],
                trigger={
                    "reason": self.reason,
                    "consecutive_failures": self.consecutive_failures,
                    "capable_services": capable,
                },
                result={"ejected_at": now.isoformat(), "until": self.until.isoformat(), "ejections": self.ejections},
                guardrail=(guard[0].reason if guard else "")[:300],
                executed_at=now,
            ).pk
        if result.transition == outliers.EJECTION_ENDED:
            how = "its probe try succeeded" if probed else "a routed try succeeded while it was out"
            ended = None
            for action in open_ones.filter(verify_after__isnull=True):
                Action.objects.filter(pk=action.pk).update(
                    result={**(action.result or {}), "ended_at": now.isoformat(), "ended_by": how},
                    verify_after=now + timedelta(seconds=EJECTION_VERIFY_SECONDS),
                )
                ended = action.pk
            return ended
        if held and guard is not None:
            return Action.objects.create(
                **base,
                priority=5,
                status=HELD_STATUS[guard[0].outcome],
                reason=f"not ejected: {result.held_back.removeprefix('guardrails: ')}"[:300],
                trigger={"capable_services": capable, "consecutive_failures": self.consecutive_failures},
                guardrail=guard[0].reason[:300],
            ).pk
        return None

    def _ledger(
        self,
        result: outliers.Observation,
        now: datetime,
        capable: int,
        *,
        probed: bool = False,
        action_id: int | None = None,
    ) -> None:
        subject = f"service:{self.service_name}"
        data = {"service": self.service_name, "task_type": self.task_type, "capable_services": capable}
        if action_id is not None:
            data["action_id"] = action_id
        if result.transition == outliers.EJECTED:
            seconds = (self.until - now).total_seconds()
            record(
                "routing.service_ejected",
                f"{self.service_name} ejected from {self.task_type} for {seconds:g} s: {self.reason}",
                subject=subject,
                severity=Severity.WARNING,
                data={**data, "reason": self.reason, "until": self.until.isoformat(), "ejections": self.ejections},
            )
        elif result.transition == outliers.EJECTION_ENDED:
            record(
                "routing.ejection_ended",
                f"{self.service_name} back in {self.task_type}: "
                + ("its probe try succeeded" if probed else "a routed try succeeded while it was out"),
                subject=subject,
                data={**data, "ejections": self.ejections, "probe": probed},
            )
        elif result.transition == outliers.COOLDOWN:
            seconds = (self.until - now).total_seconds()
            record(
                "routing.service_cooldown",
                f"{self.service_name} asked for {seconds:g} s of rest (Retry-After) on {self.task_type}",
                subject=subject,
                severity=Severity.WARNING,
                data={**data, "reason": outliers.RETRY_AFTER, "until": self.until.isoformat()},
            )
        elif result.held_back.startswith("guardrails: "):
            record(
                "routing.ejection_held_back",
                f"{self.service_name} not ejected from {self.task_type}: {result.held_back}",
                subject=subject,
                severity=Severity.WARNING,
                data={**data, "reason": result.held_back},
            )
        elif result.held_back:
            record(
                "routing.ejection_held_back",
                f"{self.service_name} not ejected from {self.task_type}: too many of its"
                f" {capable} services are out already ({result.held_back})",
                subject=subject,
                severity=Severity.WARNING,
                data={**data, "reason": result.held_back},
            )


class RetryBudget(models.Model):
    """Retries per task type over a sliding window, so a wide outage does not multiply
    the load (routing.outliers.budget_allows). Two aligned buckets; counts move with F()
    and a retry is taken with one conditional UPDATE, so processes share one budget."""

    task_type = models.CharField(max_length=100, unique=True)
    bucket_started_at = models.DateTimeField(null=True, blank=True)
    first_tries = models.PositiveBigIntegerField(default=0)
    retries = models.PositiveBigIntegerField(default=0)
    prev_first_tries = models.PositiveBigIntegerField(default=0)
    prev_retries = models.PositiveBigIntegerField(default=0)
    denied = models.PositiveBigIntegerField(default=0, help_text="Retries refused since the row was created.")

    class Meta:
        ordering = ["task_type"]

    def __str__(self) -> str:
        return f"retry budget of {self.task_type}"

    @classmethod
    def _current(cls, task_type: str, now: datetime, config: outliers.BudgetConfig) -> datetime:
        """Roll the buckets forward if time has moved on; returns the current bucket."""
        start = outliers.bucket_start(now, config)
        row, _ = cls.objects.get_or_create(task_type=task_type, defaults={"bucket_started_at": start})
        old = row.bucket_started_at
        if old is None or old < start:
            contiguous = old is not None and (start - old).total_seconds() <= config.window_seconds
            # Whoever moves the bucket first wins; the others see the new one.
            cls.objects.filter(pk=row.pk, bucket_started_at=old).update(
                bucket_started_at=start,
                prev_first_tries=F("first_tries") if contiguous else 0,
                prev_retries=F("retries") if contiguous else 0,
                first_tries=0,
                retries=0,
            )
        return start

    @classmethod
    def note_first_try(cls, task_type: str, now: datetime | None = None) -> None:
        now = now or timezone.now()
        config = budget_config()
        start = cls._current(task_type, now, config)
        cls.objects.filter(task_type=task_type, bucket_started_at__gte=start).update(first_tries=F("first_tries") + 1)

    @classmethod
    def take_retry(cls, task_type: str, now: datetime | None = None) -> bool:
        """One retry out of the budget, or False when it is spent."""
        now = now or timezone.now()
        config = budget_config()
        start = cls._current(task_type, now, config)
        weight = outliers.previous_weight(now, config)
        firsts = F("first_tries") + F("prev_first_tries") * Value(weight)
        spent = F("retries") + F("prev_retries") * Value(weight)
        limit = Greatest(Value(float(config.min_retries)), firsts * Value(config.ratio))
        taken = (
            cls.objects.filter(task_type=task_type, bucket_started_at__gte=start)
            .filter(GreaterThanOrEqual(limit - spent, Value(1.0)))
            .update(retries=F("retries") + 1)
        )
        if not taken:
            cls.objects.filter(task_type=task_type).update(denied=F("denied") + 1)
        return bool(taken)
