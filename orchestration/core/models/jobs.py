from __future__ import annotations

from datetime import datetime

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from orchestration.core.choices import PRIORITY_RANK, Backoff, DeferredBy, JobStatus, Priority
from orchestration.core.storedjson import JSONField


class Lane(models.Model):
    """A named queue with a concurrency limit enforced across every process.

    A lane with limit 1 is single-lane: at most one of its jobs is processing at any
    moment, whichever cluster node runs it. Lanes without a row use
    ``JOB_DEFAULT_LANE_LIMIT`` (0 = unlimited).
    """

    name = models.SlugField(max_length=64, unique=True)
    concurrency_limit = models.PositiveIntegerField(
        default=0, help_text="Most jobs of this lane processing at once; 0 means unlimited."
    )
    description = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        limit = self.concurrency_limit or "∞"
        return f"{self.name} (limit {limit})"


class Campaign(models.Model):
    """A group of jobs with a budget and an active period; high-value ones go first."""

    name = models.CharField(max_length=120, unique=True)
    channel = models.CharField(max_length=40, blank=True)
    budget = models.DecimalField(max_digits=12, decimal_places=2, default=0)
    starts_at = models.DateTimeField(null=True, blank=True)
    ends_at = models.DateTimeField(null=True, blank=True)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def is_running(self, now=None) -> bool:
        now = now or timezone.now()
        return (
            self.active
            and (self.starts_at is None or self.starts_at <= now)
            and (self.ends_at is None or self.ends_at > now)
        )


def due_before(moment: datetime) -> Q:
    """Jobs due before ``moment``: a job is due from its ``not_before``, else from its
    creation, and waits from then on."""
    return Q(not_before__isnull=True, created_at__lt=moment) | Q(not_before__lt=moment)


class JobQuerySet(models.QuerySet):
    def defer_until(self, until: datetime, *, by: DeferredBy) -> int:
        """Push these jobs back to ``until`` on behalf of an automation (``by``), never
        earlier than the ``not_before`` they already have. The first automatic deferral
        keeps the job's own ``not_before`` in ``requested_not_before``, so undoing it
        (``undo_deferral``) gives the client's time back, not "now"."""
        later = Q(not_before__isnull=True) | Q(not_before__lt=until)
        # One UPDATE each: SET reads the old not_before, so it is what gets kept.
        first = self.filter(later, deferred_by=DeferredBy.NOBODY).update(
            requested_not_before=F("not_before"), not_before=until, deferred_by=by
        )
        again = self.filter(later).exclude(deferred_by=DeferredBy.NOBODY).update(not_before=until, deferred_by=by)
        return first + again

    def undo_deferral(self, *, by: DeferredBy) -> int:
        """Give back the ``not_before`` these jobs had before ``by`` deferred them; a job
        nobody deferred, or that another automation deferred, is left alone."""
        return self.filter(deferred_by=by).update(
            not_before=F("requested_not_before"), requested_not_before=None, deferred_by=DeferredBy.NOBODY
        )


class Job(models.Model):
    """One unit of queued work, and the queue itself: cluster nodes claim due rows
    directly (orchestration/core/jobs/broker.py), so everything a person can see (status,
    attempts, lease, result) is the one truth, with no second copy in a broker.
    """

    kind = models.CharField(max_length=100)
    payload = JSONField(default=dict, blank=True)
    priority = models.CharField(max_length=10, choices=Priority.choices, default=Priority.NORMAL)
    # Denormalised from priority so the dispatcher can ORDER BY an indexed integer.
    priority_rank = models.PositiveSmallIntegerField(default=PRIORITY_RANK[Priority.NORMAL], editable=False)
    lane = models.SlugField(max_length=64, default="default")
    status = models.CharField(max_length=12, choices=JobStatus.choices, default=JobStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=3, validators=[MinValueValidator(1), MaxValueValidator(100)])
    backoff = models.CharField(max_length=12, choices=Backoff.choices, default=Backoff.EXPONENTIAL)
    not_before = models.DateTimeField(null=True, blank=True)

    # Lease: the token names one claim; the claiming node keeps lease_expires_at in
    # the future with one heartbeat for all its jobs. An expired lease means the node
    # (or the job's worker process) died, and the job is reclaimed.
    lease_token = models.CharField(max_length=32, blank=True)
    lease_owner = models.CharField(max_length=200, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)

    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    result = JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    score = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0), MaxValueValidator(100)],
        help_text="Optional quality score 0-100 (> 80 high performer, < 40 low).",
    )
    channel = models.CharField(max_length=40, blank=True)
    campaign = models.ForeignKey(Campaign, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    reference = models.CharField(
        max_length=200, blank=True, help_text="What this job works for, e.g. pipeline:12:outline."
    )

    # Marks left by the loop's actions so one action does not re-apply every cycle.
    auto_retries = models.PositiveSmallIntegerField(default=0)
    promoted = models.BooleanField(default=False)
    downgraded = models.BooleanField(default=False)
    forced = models.BooleanField(default=False)
    # Who pushed not_before back, and the not_before the job had before (see
    # JobQuerySet.defer_until): automation undoes only its own deferrals.
    deferred_by = models.CharField(max_length=12, choices=DeferredBy.choices, blank=True, default="")
    requested_not_before = models.DateTimeField(null=True, blank=True)
    # The last failure said retrying cannot help (PermanentJobError, a 4xx): the loop
    # does not retry it; a person still may.
    failed_permanently = models.BooleanField(default=False)

    objects = JobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # GROUP BY status and per-status counts.
            models.Index(fields=["status", "-priority_rank", "created_at"], name="job_dispatch_idx"),
            # The claim (statements.CLAIM_ORDER): waiting jobs read in queue order, with
            # no sort of the whole backlog per claim.
            models.Index(
                fields=["-priority_rank", "created_at", "id"],
                name="job_claim_idx",
                condition=models.Q(status__in=["pending", "retry"]),
            ),
            # monitor.jobs_section(): its one pass over the live queue reads only this
            # covering index, never the table; with lane, so do the live counts per
            # lane of the dashboard and /metrics.
            models.Index(
                fields=[
                    "status",
                    "created_at",
                    "not_before",
                    "score",
                    "forced",
                    "promoted",
                    "downgraded",
                    "lease_expires_at",
                    "lane",
                ],
                name="job_live_idx",
            ),
            # The lists' default order (-created_at, -id): every page, by cursor, is a range.
            models.Index(fields=["created_at", "id"], name="job_created_idx"),
            # Finished jobs by time: the snapshot's, dashboard's and /metrics' terminal
            # counts (a recent range per status, lane included so the index answers
            # alone), failures in the last hour, retry_failed and job retention.
            models.Index(fields=["status", "finished_at", "lane"], name="job_finished_idx"),
            # reclaim_expired(): processing jobs whose lease ran out.
            models.Index(fields=["status", "lease_expires_at"], name="job_status_lease_idx"),
            # lane capacity in dispatch().
            models.Index(fields=["lane", "status"], name="job_lane_status_idx"),
            models.Index(fields=["kind", "status"], name="job_kind_status_idx"),
            models.Index(fields=["reference"], name="job_reference_idx"),
            # The list filters of the API and the admin.
            models.Index(fields=["priority", "created_at"], name="job_priority_created_idx"),
            models.Index(fields=["channel", "created_at"], name="job_channel_created_idx"),
        ]

    def __str__(self) -> str:
        return f"Job {self.pk} {self.kind} [{self.status}]"

    def save(self, *args, **kwargs):
        self.set_priority_rank()
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and "priority" in update_fields:
            kwargs["update_fields"] = set(update_fields) | {"priority_rank"}
        super().save(*args, **kwargs)

    def set_priority_rank(self) -> None:
        """The sortable form of ``priority`` (dispatch orders by it, critical first)."""
        self.priority_rank = PRIORITY_RANK[Priority(self.priority)]

    @property
    def is_final(self) -> bool:
        return self.status in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED)


class JobRollup(models.Model):
    """How many jobs finished per day, status, lane and kind: what job retention keeps
    of the rows it deletes (written in the same transaction as the delete)."""

    day = models.DateField()
    status = models.CharField(max_length=12, choices=JobStatus.choices)
    lane = models.SlugField(max_length=64)
    kind = models.CharField(max_length=100)
    count = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["-day", "status", "lane", "kind"]
        constraints = [
            models.UniqueConstraint(fields=["day", "status", "lane", "kind"], name="job_rollup_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.status} {self.lane}/{self.kind}: {self.count}"
