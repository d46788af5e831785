"""The job queue: enqueue, claim, execute, finish, reclaim.

The Job table is the only queue. django-q2 runs the jobs (cluster, worker processes,
timeouts), and its broker is ``orchestration.core.jobs.broker.JobBroker``, whose dequeue
claims Job rows directly. Life of a job::

    pending ──claim()──▶ processing ──execute()──▶ completed
       ▲                     │  │
       │      retry ◀────────┘  └──▶ failed (attempts exhausted / permanent)
       └── (not_before passed) ┘

Every state change is a conditional UPDATE on the row, so several web processes,
loop runners and cluster nodes can all call these functions at once: a claim that
lost the race changes zero rows. A claim carries a lease that the claiming node
renews for all its jobs at once; a lease that runs out is reclaimed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
import uuid
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connections, transaction
from django.db.models import F, QuerySet
from django.dispatch import Signal
from django.utils import timezone

from orchestration.core import dbfaults
from orchestration.core.choices import CLAIMABLE_STATUSES, Backoff, JobStatus, Priority, Severity
from orchestration.core.jobs import statements
from orchestration.core.jobs.backoff import retry_delay
from orchestration.core.jobs.registry import PermanentJobError, RetryLater, get_kind
from orchestration.core.models import Job
from orchestration.core.models.ledger import record

log = logging.getLogger("orchestration.core.jobs")

# Sent once a job reaches a final status (completed, failed, canceled), with
# ``job=<Job>``. Pipelines, routing and the fleet use it to move on.
job_finished = Signal()

# The PostgreSQL channel a new job is announced on (idle nodes LISTEN on it).
NOTIFY_CHANNEL = "orchestrator_jobs"

HOST = socket.gethostname()


def worker_identity() -> str:
    return f"{HOST}:{os.getpid()}:{threading.get_ident()}"


def runs_inline() -> bool:
    """True where jobs run in the process that queues them (``Q_SYNC``: the demo
    loader, and tests that ask for it): no cluster takes them."""
    from django_q.conf import Conf

    return bool(Conf.SYNC)


# --- enqueue ----------------------------------------------------------------------
def enqueue(
    kind: str,
    payload: dict[str, Any] | None = None,
    *,
    priority: str = Priority.NORMAL,
    lane: str = "default",
    max_attempts: int = 3,
    backoff: str = Backoff.EXPONENTIAL,
    not_before: datetime | None = None,
    actor: str | None = None,
    wake_nodes: bool = True,
    **fields: Any,
) -> Job:
    """Create a pending job. It commits with the caller's transaction, if any, and a
    node takes it once it has committed.

    ``actor`` (a username) makes the creation a ledger entry; internal callers that
    create many jobs leave it out. ``wake_nodes=False`` skips the wake-up (a caller
    queueing many jobs wakes the nodes once).
    """
    get_kind(kind)  # refuse unknown kinds before anything is written
    job = Job(
        kind=kind,
        payload=payload or {},
        priority=priority,
        lane=lane,
        max_attempts=max_attempts,
        backoff=backoff,
        not_before=not_before,
        **fields,
    )
    job.set_priority_rank()
    # On PostgreSQL the INSERT itself wakes the nodes (see wake()).
    notify = NOTIFY_CHANNEL if wake_nodes and not runs_inline() else ""
    with transaction.atomic() if actor else nullcontext():
        statements.insert(job, notify=notify)
        if actor:
            record(
                "job.created",
                f"Job {job.pk} ({job.kind}) queued in lane {job.lane} at {job.priority} priority",
                subject=f"job:{job.pk}",
                data={"job_id": job.pk, "kind": job.kind, "lane": job.lane, "priority": job.priority},
                actor=actor,
            )
    if wake_nodes and not (notify and connections[Job.objects.db].vendor == "postgresql"):
        wake()
    return job


def wake() -> list[int]:
    """Tell idle nodes that work is due.

    On PostgreSQL a NOTIFY, delivered when the current transaction commits (at once
    outside one), so an idle node claims within milliseconds; SQLite nodes poll (see
    JobBroker). Where jobs run inline, runs what is due once the caller's transaction
    has committed and returns the ids it ran.
    """
    if runs_inline():
        if transaction.get_autocommit():
            return run_due_inline()
        transaction.on_commit(run_due_inline)
        return []
    connection = connections[Job.objects.db]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"NOTIFY {NOTIFY_CHANNEL}")
    return []


_inline = threading.local()


def run_due_inline(limit: int = 500) -> list[int]:
    """Claim and run due jobs in this process until none is left (at most ``limit``).

    A job that queues another while it runs (a pipeline stage) does not start a
    second drain inside the first: the outer one picks the new job up.
    """
    if getattr(_inline, "draining", False):
        return []
    _inline.draining = True
    ran: list[int] = []
    try:
        while len(ran) < limit:
            claimed = claim(1, owner=f"{HOST}:{os.getpid()}")
            if not claimed:
                break
            for job_id, token in claimed:
                execute(job_id, token)
                ran.append(job_id)
    finally:
        _inline.draining = False
    return ran


# --- claim ------------------------------------------------------------------------
def claim(
    limit: int, *, owner: str, now: datetime | None = None, look_first: bool = True, token: str | None = None
) -> list[tuple[int, str]]:
    """Claim up to ``limit`` due jobs for ``owner`` (a node): the most urgent first
    (statements.CLAIM_ORDER), within lane limits, in one statement. Returns
    (job id, token) pairs; the token names this claim, so a stale delivery of an
    earlier claim of the same job finds a different token and does nothing.

    ``look_first``: a plain read first, so an empty queue costs no write transaction;
    a node whose last claim came back full skips it (more is very likely waiting).
    """
    now = now or timezone.now()
    if look_first and not statements.any_due(now):
        return []
    token = token or uuid.uuid4().hex
    expires = now + timedelta(seconds=settings.JOB_LEASE_SECONDS)
    ids = statements.claim(limit, now, token=token, owner=owner, lease_expires_at=expires)
    return [(job_id, token) for job_id in ids]


def release_unstarted(ids: list[int] | None = None, *, token: str | None = None, owner: str | None = None) -> int:
    """Put back claimed jobs that no process has started (no attempt is used); returns
    how many. By ``token``: a claim that never reached its node (the connection broke
    around its commit) or the rest of a chunk; by ``ids`` and ``owner``: the jobs a
    worker process held when it died."""
    held = Job.objects.filter(status=JobStatus.PROCESSING, started_at__isnull=True)
    if ids is not None:
        held = held.filter(pk__in=ids)
    if token is not None:
        held = held.filter(lease_token=token)
    if owner is not None:
        held = held.filter(lease_owner=owner)
    if ids is None and token is None:
        raise ValueError("release_unstarted needs the jobs' ids or their claim's token")
    return held.update(
        status=JobStatus.PENDING, lease_token="", lease_owner="", lease_expires_at=None, dispatched_at=None
    )


# --- execute ----------------------------------------------------------------------
@dataclass
class JobContext:
    """What a handler may ask of the queue while it runs."""

    job: Job
    _stop: threading.Event
    _checked_at: float = field(default=0.0)

    def should_stop(self) -> bool:
        """True once a person cancelled the job (looked up at most once a second)."""
        if not self._stop.is_set() and time.monotonic() - self._checked_at >= 1.0:
            self._checked_at = time.monotonic()
            if Job.objects.filter(pk=self.job.pk, cancel_requested=True).exists():
                self._stop.set()
        return self._stop.is_set()

    def heartbeat(self) -> bool:
        """Extend this job's lease now; False if the job was taken away from this run.
        (The node renews every lease it holds on its own; a long handler running
        outside a cluster may call this.)"""
        expires = timezone.now() + timedelta(seconds=settings.JOB_LEASE_SECONDS)
        ok = _held(self.job, self.job.lease_token).update(lease_expires_at=expires)
        if not ok:
            self._stop.set()
        return bool(ok) and not self.should_stop()


def execute(job_id: int, token: str, node: str | None = None) -> str:
    """Run one claimed job. Returns the status it ended in, or "stale".

    The start is itself a claim: only the first delivery of (job, token) passes it.
    ``node`` is the claiming node: the run holds the lease as that node's worker
    process, so the node renews it while this process lives, and not after.
    """
    owner = f"{node}/{os.getpid()}" if node else worker_identity()
    job = _start(job_id, token, owner)
    if job is None:
        log.info("job %s: delivery for token %s is stale, ignored", job_id, token[:8])
        return "stale"
    stop = threading.Event()
    if job.cancel_requested:
        stop.set()
    # The outcome is written after the handler's try: a failure to write it is not
    # the handler's failure.
    outcome: dict[str, Any]
    try:
        outcome = {"ok": True, "result": get_kind(job.kind).handler(job.payload, JobContext(job, stop))}
    except PermanentJobError as exc:
        outcome = {"ok": False, "error": str(exc), "permanent": True}
    except RetryLater as exc:
        outcome = {"ok": False, "error": str(exc), "delay": exc.delay_seconds}
    except Exception as exc:  # any handler failure is retried with backoff
        # (An exception may say how it reads as the job's error: a Django task's does.)
        detail = getattr(exc, "job_error", None) or f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}"
        # The database or the cache was unreachable: the job did not fail, the weather
        # did. It runs again without this attempt counting, even if it was its last.
        weather = dbfaults.is_weather(exc)
        if weather:
            dbfaults.close_connections()
        outcome = {"ok": False, "error": detail, "weather": weather}
    except BaseException as exc:
        # The cluster's time limit (django-q2 raises SystemExit in the worker): the
        # attempt is over, so say so before the worker process is replaced.
        _finish(job, token, ok=False, error=f"stopped: {type(exc).__name__}: {exc or 'time limit reached'}")
        raise
    return _finish(job, token, **outcome)


def _start(job_id: int, token: str, owner: str) -> Job | None:
    """The start of a claimed job (statements.start), retried through a database outage.

    A start whose answer was lost with the connection may have committed: the retry then
    finds the job started, and the row with this run's token and owner is this start.
    """
    retried = False

    def attempt() -> Job | None:
        nonlocal retried
        job = statements.start(job_id, token, timezone.now(), owner=owner)
        if job is None and retried:
            job = Job.objects.filter(
                pk=job_id, lease_token=token, lease_owner=owner, status=JobStatus.PROCESSING, started_at__isnull=False
            ).first()
        return job

    def note_retry(exc: BaseException) -> None:
        nonlocal retried
        retried = True

    return dbfaults.retry_transient(attempt, what=f"job {job_id} start", on_retry=note_retry)


def _finish(
    job: Job,
    token: str,
    *,
    ok: bool,
    result: Any = None,
    error: str = "",
    permanent: bool = False,
    delay: float | None = None,
    weather: bool = False,
) -> str:
    """Record the run's outcome; returns the status it ended in (or "stale").

    ``weather``: the run failed because the database or the cache was unreachable; it
    goes back to the queue and its attempt is given back. Writing the outcome itself
    rides out a database outage (retried with backoff, its connection renewed).
    """
    now = timezone.now()
    # ``job`` was read after execute() counted this attempt, and nothing else changes
    # the count while this run holds the lease, so no fresh read is needed for it.
    attempts = job.attempts
    if ok:
        status, fields = JobStatus.COMPLETED, {"finished_at": now, "result": _jsonable(result), "error": ""}
    elif weather and not permanent:
        # Not an attempt: the count goes back to what it was before this run started.
        attempts = max(0, attempts - 1)
        if delay is None:
            delay = retry_delay(1, job.backoff)
        status, fields = JobStatus.RETRY, {"not_before": now + timedelta(seconds=delay), "error": error}
        fields["attempts"] = attempts
    elif permanent or attempts >= job.max_attempts:
        # Marked so the loop's retry_failed leaves a permanent failure to a person.
        status, fields = JobStatus.FAILED, {"finished_at": now, "error": error, "failed_permanently": permanent}
    else:
        if delay is None:
            delay = retry_delay(attempts, job.backoff)
        status, fields = JobStatus.RETRY, {"not_before": now + timedelta(seconds=delay), "error": error}
    if job.deferred_by and status == JobStatus.RETRY:
        # The backoff's not_before is nobody's deferral: nothing for the loop to undo.
        fields.update(deferred_by="", requested_not_before=None)
    # A cancel requested while the job ran wins over its outcome; testing the flag in
    # the same UPDATE means a request arriving at the last moment is never lost.
    written = {"status": status, "lease_owner": "", "lease_expires_at": None, "updated_at": now, **fields}
    retried = False

    def write() -> tuple[str, dict[str, Any], bool]:
        if statements.finish(job.pk, token, written):
            return status, fields, True
        if retried and Job.objects.filter(pk=job.pk, lease_token=token, status=status, lease_owner="").exists():
            return status, fields, True  # the try whose answer was lost had committed
        canceled = {"finished_at": now, "error": error or "canceled while running"}
        changed = (
            _held(job, token)
            .filter(cancel_requested=True)
            .update(status=JobStatus.CANCELED, lease_owner="", lease_expires_at=None, **canceled)
        )
        if not changed and retried:
            changed = Job.objects.filter(
                pk=job.pk, lease_token=token, status=JobStatus.CANCELED, finished_at=now
            ).exists()
        return JobStatus.CANCELED, canceled, bool(changed)

    def note_retry(exc: BaseException) -> None:
        nonlocal retried
        retried = True

    status, fields, changed = dbfaults.retry_transient(write, what=f"job {job.pk} outcome", on_retry=note_retry)
    if not changed:
        # The lease expired and the job was reclaimed while we ran; the other
        # attempt owns it now and this result is dropped.
        log.warning("job %s finished after losing its lease; result dropped", job.pk)
        return "stale"
    # What the UPDATE wrote, without reading the row back.
    for name, value in {"status": status, "lease_owner": "", "lease_expires_at": None, **fields}.items():
        setattr(job, name, value)
    if status == JobStatus.FAILED:
        dbfaults.retry_transient(
            lambda: record(
                "job.failed",
                f"Job {job.pk} ({job.kind}) failed after {attempts} attempt(s): "
                f"{error.splitlines()[0] if error else ''}",
                severity=Severity.WARNING,
                subject=f"job:{job.pk}",
                data={"job_id": job.pk, "kind": job.kind, "attempts": attempts, "permanent": permanent},
            ),
            what=f"job {job.pk} ledger entry",
        )
    if status in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED):
        job_finished.send(sender=Job, job=job)
    elif status == JobStatus.RETRY and delay == 0:
        wake()
    return status


def _held(job: Job, token: str) -> QuerySet:
    """The job's row while this run still holds it."""
    return Job.objects.filter(pk=job.pk, lease_token=token, status=JobStatus.PROCESSING)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, dict | list | str | int | float | bool):
        return value
    return {"value": repr(value)}


# --- people's actions -----------------------------------------------------------------
class JobStateError(Exception):
    """The job is not in a state that allows this (API answers 409)."""


def cancel(job: Job, *, actor: str = "system") -> Job:
    """Cancel a job; a running one is told to stop and ends canceled when it does."""
    now = timezone.now()
    if Job.objects.filter(pk=job.pk, status__in=CLAIMABLE_STATUSES).update(
        status=JobStatus.CANCELED, finished_at=now, lease_token="", lease_expires_at=None
    ):
        message = f"Job {job.pk} canceled"
    elif Job.objects.filter(pk=job.pk, status=JobStatus.PROCESSING, started_at__isnull=True).update(
        status=JobStatus.CANCELED, finished_at=now, lease_token="", lease_owner="", lease_expires_at=None
    ):
        message = f"Job {job.pk} canceled before it started"
    elif Job.objects.filter(pk=job.pk, status=JobStatus.PROCESSING).update(cancel_requested=True):
        message = f"Job {job.pk} told to stop"
    else:
        job.refresh_from_db()
        raise JobStateError(f"job {job.pk} is {job.status}; only pending, retry or processing jobs can be canceled")
    record("job.canceled", message, subject=f"job:{job.pk}", data={"job_id": job.pk}, actor=actor)
    job.refresh_from_db()
    if job.status == JobStatus.CANCELED:
        job_finished.send(sender=Job, job=job)
    return job


def retry(job: Job, *, actor: str = "system", extra_attempts: int = 1) -> Job:
    """Queue a failed or canceled job again with ``extra_attempts`` more tries."""
    changed = Job.objects.filter(pk=job.pk, status__in=(JobStatus.FAILED, JobStatus.CANCELED)).update(
        status=JobStatus.RETRY,
        not_before=None,
        finished_at=None,
        cancel_requested=False,
        max_attempts=F("attempts") + extra_attempts,
        failed_permanently=False,
        deferred_by="",
        requested_not_before=None,
    )
    if not changed:
        job.refresh_from_db()
        raise JobStateError(f"job {job.pk} is {job.status}; only failed or canceled jobs can be retried")
    record("job.retried", f"Job {job.pk} queued again", subject=f"job:{job.pk}", data={"job_id": job.pk}, actor=actor)
    wake()
    job.refresh_from_db()
    return job


# --- reclaim ----------------------------------------------------------------------
def reclaim_expired(now: datetime | None = None, limit: int = 500) -> dict[str, int]:
    """Give back jobs whose lease ran out (their process died or the task was lost).

    A job that never started goes back to the queue without using an attempt; one
    that started is retried if attempts remain, else failed.
    """
    now = now or timezone.now()
    rows = list(
        Job.objects.filter(status=JobStatus.PROCESSING, lease_expires_at__lt=now).values(
            "pk", "lease_token", "started_at", "attempts", "max_attempts", "cancel_requested"
        )[:limit]
    )
    counts = {"requeued": 0, "retried": 0, "failed": 0, "canceled": 0}
    finished: list[int] = []
    for row in rows:
        if row["cancel_requested"]:
            key, fields = "canceled", {"status": JobStatus.CANCELED, "finished_at": now}
        elif row["started_at"] is None:
            key, fields = "requeued", {"status": JobStatus.PENDING}
        elif row["attempts"] < row["max_attempts"]:
            key, fields = "retried", {"status": JobStatus.RETRY, "not_before": None, "deferred_by": ""}
        else:
            key, fields = "failed", {"status": JobStatus.FAILED, "finished_at": now}
        changed = Job.objects.filter(pk=row["pk"], lease_token=row["lease_token"], status=JobStatus.PROCESSING).update(
            lease_owner="",
            lease_expires_at=None,
            error="lease expired: the process running this job stopped answering",
            **fields,
        )
        if changed:
            counts[key] += 1
            if key in ("failed", "canceled"):
                finished.append(row["pk"])
    total = sum(counts.values())
    if total:
        record(
            "jobs.reclaimed",
            f"Reclaimed {total} job(s) whose lease expired",
            severity=Severity.WARNING,
            data={**counts, "job_ids": [r["pk"] for r in rows][:50]},
        )
        for job in Job.objects.filter(pk__in=finished):
            job_finished.send(sender=Job, job=job)
    return counts


def maintain(now: datetime | None = None) -> dict[str, Any]:
    """One pass of queue upkeep: reclaim dead leases, and wake the nodes for what that
    gave back."""
    close_old_connections()
    reclaimed = reclaim_expired(now)
    if reclaimed["requeued"] or reclaimed["retried"]:
        wake()
    return {"reclaimed": reclaimed}
