"""Routing's memory: outcomes, learned stats, rotation cursors, contexts, multipliers and
suggestions. Everything the brain knows is here, so it survives a restart."""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models, transaction
from django.db.models import F
from django.utils import timezone

from orchestration.core.models.ledger import record
from orchestration.core.storedjson import JSONField
from orchestration.routing.learning import ServiceStats


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
    attempt = models.PositiveSmallIntegerField(default=1)
    success = models.BooleanField()
    execution_ms = models.FloatField(null=True, blank=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
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
        return ServiceStats(self.service_name, self.count, self.successes, self.avg_ms)

    @classmethod
    def learn(cls, task_type: str, service_name: str, success: bool, execution_ms: float | None) -> None:
        cls.objects.get_or_create(task_type=task_type, service_name=service_name)
        cls.objects.filter(task_type=task_type, service_name=service_name).update(
            count=F("count") + 1,
            successes=F("successes") + (1 if success else 0),
            total_ms=F("total_ms") + (execution_ms or 0),
            timed=F("timed") + (1 if execution_ms is not None else 0),
            last_outcome_at=timezone.now(),
        )


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
    APPLIED = "applied", "Applied (impact tracked)"


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
