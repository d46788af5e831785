"""The job queue: enqueue, dispatch (claim), execute, finish, reclaim.

Life of a job::

    pending ──dispatch()──▶ processing ──execute()──▶ completed
       ▲                       │  │
       │        retry ◀────────┘  └──▶ failed (attempts exhausted / permanent)
       └── (not_before passed) ┘

Every state change is a conditional UPDATE on the row, so several web processes,
loop runners and cluster nodes can all call these functions at once: a claim that
lost the race changes zero rows and the caller backs off.
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
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection, connections, transaction
from django.db.models import Count, F, Q, QuerySet
from django.dispatch import Signal
from django.utils import timezone

from orchestration.choices import CLAIMABLE_STATUSES, Backoff, JobStatus, Priority, Severity
from orchestration.jobs import statements
from orchestration.jobs.backoff import retry_delay
from orchestration.jobs.registry import PermanentJobError, RetryLater, get_kind
from orchestration.models import Job, Lane
from orchestration.models.ledger import record

log = logging.getLogger("orchestration.jobs")

# Sent once a job reaches a final status (completed, failed, canceled), with
# ``job=<Job>``. Pipelines, routing and the fleet use it to move on.
job_finished = Signal()

# How long a dispatched job may wait in the broker before the loop assumes the task
# was lost (Redis broker on a killed node) and dispatches it again.
DISPATCH_LEASE_SECONDS = int(os.environ.get("JOB_DISPATCH_LEASE_SECONDS", "120"))

# How many jobs one dispatch claims at most.
DISPATCH_BATCH = 200

_HOST = f"{socket.gethostname()}:{os.getpid()}"


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


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
    dispatch_now: bool = True,
    **fields: Any,
) -> Job:
    """Create a pending job and dispatch it once the surrounding transaction commits.

    ``actor`` (a username) makes the creation a ledger entry; internal callers that
    create many jobs leave it out.
    """
    get_kind(kind)  # refuse unknown kinds before anything is written
    own_transaction = dispatch_now and transaction.get_autocommit()
    create = {
        "kind": kind,
        "payload": payload or {},
        "priority": priority,
        "lane": lane,
        "max_attempts": max_attempts,
        "backoff": backoff,
        "not_before": not_before,
        **fields,
    }
    if own_transaction:
        # Queued on its own (no person to record first), the job is inserted by one
        # statement: already claimed when nothing should go before it, its task sent
        # once that has committed (a task lost between the two is found by its
        # dispatch lease and sent again), else pending, for dispatch() to take in
        # order. Each write is its own short transaction: on SQLite a longer one,
        # held while the task was built, kept the cluster's workers from the write
        # lock while jobs arrived. A person's job first gets its ledger entry, then is
        # claimed by one conditional UPDATE.
        job = None if actor else _insert(create)
        if job is not None:
            return job
        with transaction.atomic() if actor else nullcontext():
            job = _create(create, actor)
        if not _claim_at_birth(job, timezone.now()):
            dispatch()
        return job
    # Inside a caller's transaction the dispatch waits for that transaction to
    # commit, so its locks are not held any longer.
    job = _create(create, actor)
    if dispatch_now:
        transaction.on_commit(dispatch)
    return job


def _insert(fields: dict[str, Any]) -> Job | None:
    """Insert the job with statements.insert() and send or dispatch it; None, and
    nothing written, where that statement does not apply (a job not yet due, lanes
    limited by default, no RETURNING)."""
    now = timezone.now()
    not_before = fields.get("not_before")
    if (
        settings.JOB_DEFAULT_LANE_LIMIT
        or (not_before and not_before > now)
        or not connections[Job.objects.db].features.can_return_columns_from_insert
    ):
        return None
    job = Job(**fields)
    job.set_priority_rank()
    token = uuid.uuid4().hex
    claim = {name: value for name, value in _claimed_fields(token, now).items() if name in statements.CLAIM_COLUMNS}
    claimed, waiting = statements.insert(job, claim, backlog=settings.JOB_DISPATCH_BACKLOG)
    if claimed:
        _send([(job.pk, token)])
    else:  # something goes before it: dispatch() takes the queue in order
        dispatch(outlook=(True, waiting))
    return job


def _create(fields: dict[str, Any], actor: str | None) -> Job:
    job = Job.objects.create(**fields)
    if actor:
        record(
            "job.created",
            f"Job {job.pk} ({job.kind}) queued in lane {job.lane} at {job.priority} priority",
            subject=f"job:{job.pk}",
            data={"job_id": job.pk, "kind": job.kind, "lane": job.lane, "priority": job.priority},
            actor=actor,
        )
    return job


def _claim_at_birth(job: Job, now: datetime) -> bool:
    """Claim a job just created, in one conditional UPDATE, when nothing should go
    before it; False leaves it to dispatch().

    The UPDATE holds every condition, so it is decided against the table as it is
    when it runs: the job is still pending (no dispatcher took it meanwhile) and
    due, no due job that dispatch() would take first waits (a higher priority, or the
    same one and older), its lane has no concurrency limit (limited lanes are counted
    under the lane's row lock in _claim()), and the broker backlog has room.
    """
    if settings.JOB_DEFAULT_LANE_LIMIT or (job.not_before is not None and job.not_before > now):
        return False
    fields = _claimed_fields(uuid.uuid4().hex, now)
    claimed = statements.birth_claim(
        job,
        now,
        token=fields["lease_token"],
        lease_expires_at=fields["lease_expires_at"],
        backlog=settings.JOB_DISPATCH_BACKLOG,
    )
    if claimed:
        _send([(job.pk, fields["lease_token"])])
    return claimed


def _claimed_fields(token: str, now: datetime) -> dict[str, Any]:
    # One token per dispatch batch: a task is valid for (job id, token) only, so a
    # redelivered or stale task finds a different token and does nothing.
    return {
        "status": JobStatus.PROCESSING,
        "lease_token": token,
        "lease_owner": "",
        "lease_expires_at": now + timedelta(seconds=DISPATCH_LEASE_SECONDS),
        "dispatched_at": now,
        "started_at": None,
    }


# --- dispatch -----------------------------------------------------------------
def _lane_limits(lanes: set[str]) -> dict[str, int]:
    """Concurrency limits for these lanes; locks their Lane rows where the backend can.

    On PostgreSQL the row lock serialises dispatchers per lane, so the capacity count
    that follows cannot be stale. On SQLite the IMMEDIATE transaction already holds
    the database's write lock.
    """
    rows = dict(Lane.objects.select_for_update().filter(name__in=lanes).values_list("name", "concurrency_limit"))
    default = settings.JOB_DEFAULT_LANE_LIMIT
    return {lane: rows.get(lane, default) for lane in lanes if rows.get(lane, default)}


def dispatch(limit: int = DISPATCH_BATCH, *, outlook: tuple[bool, int] | None = None) -> list[int]:
    """Claim the most urgent due jobs that fit their lanes and hand them to django-q2.

    Returns the ids claimed. Order: priority (critical first), then age. ``outlook``
    is (any job due, jobs waiting in the broker) when the caller already knows it.
    """
    now = timezone.now()
    # Every finished job calls dispatch(); most find nothing to do. One plain read
    # (or the finishing statement itself) answers that without the transaction
    # below, which on SQLite takes the database's write lock. A job queued just after
    # this read is dispatched by whoever queued it, or by the loop's next tick.
    due, waiting = outlook or statements.outlook(now)
    if not due:
        return []
    # Refill the broker in batches: while at least half the backlog still waits
    # there, the workers have enough to do and this finish need not take the write
    # lock. (Claiming one job per finished job made every job pay for a second
    # locking transaction.)
    if settings.JOB_DISPATCH_BACKLOG and waiting * 2 >= settings.JOB_DISPATCH_BACKLOG:
        return []
    with transaction.atomic():
        return _claim(now, limit)


def _due(now: datetime) -> Q:
    return Q(not_before__isnull=True) | Q(not_before__lte=now)


def _claim(now: datetime, limit: int) -> list[int]:
    """dispatch() inside a transaction the caller holds (so its claims commit with it)."""
    due = _due(now)
    if settings.JOB_DISPATCH_BACKLOG:
        # Soft cap (concurrent dispatchers on PostgreSQL may overshoot it by one
        # batch): claims stay correct either way, this only keeps the broker short.
        waiting = statements.waiting(connections[Job.objects.db])
        limit = min(limit, settings.JOB_DISPATCH_BACKLOG - waiting)
        if limit <= 0:
            return []
    candidates = list(
        Job.objects.select_for_update(skip_locked=True)
        .filter(due, status__in=CLAIMABLE_STATUSES)
        .order_by("-priority_rank", "created_at", "id")
        .values_list("id", "lane")[:limit]
    )
    if not candidates:
        return []
    limits = _lane_limits({lane for _, lane in candidates})
    in_flight: dict[str, int] = {}
    if limits:
        in_flight = dict(
            Job.objects.filter(status=JobStatus.PROCESSING, lane__in=list(limits))
            .values_list("lane")
            .annotate(n=Count("id"))
            .values_list("lane", "n")
        )
    chosen: list[int] = []
    for job_id, lane in candidates:
        if lane in limits:
            if in_flight.get(lane, 0) >= limits[lane]:
                continue
            in_flight[lane] = in_flight.get(lane, 0) + 1
        chosen.append(job_id)
    if not chosen:
        return []
    token = uuid.uuid4().hex
    changed = Job.objects.filter(pk__in=chosen, status__in=CLAIMABLE_STATUSES).update(**_claimed_fields(token, now))
    if changed == len(chosen):
        claimed = [(pk, token) for pk in chosen]
    else:  # someone else claimed some of them first: send only what is ours
        claimed = [
            (pk, token) for pk in Job.objects.filter(pk__in=chosen, lease_token=token).values_list("pk", flat=True)
        ]
    # Sent once the claim is visible, or a fast worker could find the job not yet
    # claimed and drop the task; a task lost in between is found by its dispatch
    # lease. With the ORM broker too: sending inside the claim's transaction held
    # SQLite's write lock while every task was built, and the cluster's own writes
    # (taking a task, starting and finishing jobs) waited behind it.
    transaction.on_commit(lambda: _send(claimed))
    return [pk for pk, _ in claimed]


@lru_cache(maxsize=1)
def _broker(pid: int) -> Any:
    """One broker per process (keyed by pid, so a forked child makes its own): a new
    Redis broker per dispatch meant a new connection pool and TCP connection each time."""
    from django_q.brokers import get_broker

    return get_broker()


def _send(claimed: list[tuple[int, str]]) -> None:
    from django_q.tasks import async_task

    broker = _broker(os.getpid())
    for job_id, token in claimed:
        # save=False: the Job row is the record of the run, so django-q2 keeps no
        # success row of its own (it still keeps a failure of execute_job itself).
        async_task(
            "orchestration.jobs.tasks.execute_job",
            job_id,
            token,
            task_name=f"job-{job_id}",
            broker=broker,
            save=False,
        )


# --- execute ----------------------------------------------------------------------
@dataclass
class JobContext:
    """What a handler may ask of the queue while it runs."""

    job: Job
    _stop: threading.Event

    def should_stop(self) -> bool:
        """True once a person cancelled the job (seen at the next heartbeat)."""
        return self._stop.is_set()

    def heartbeat(self) -> bool:
        """Extend the lease now; False if the job was taken away from this run."""
        return _extend_lease(self.job.pk, self.job.lease_token, self._stop)


def _extend_lease(job_id: int, token: str, stop: threading.Event) -> bool:
    expires = timezone.now() + timedelta(seconds=settings.JOB_LEASE_SECONDS)
    ok = Job.objects.filter(pk=job_id, lease_token=token, status=JobStatus.PROCESSING).update(lease_expires_at=expires)
    if not ok or Job.objects.filter(pk=job_id, cancel_requested=True).exists():
        stop.set()
    return bool(ok)


class _Heartbeats:
    """Extends the leases of the jobs this process runs, all from one thread.

    A thread of its own per job cost a start and a join on every job, and most jobs
    finish long before their first beat is due. The thread starts with the first job
    of a process (a forked cluster worker starts its own: threads do not survive a
    fork) and sleeps while no job is running.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._jobs: dict[int, tuple[str, threading.Event, float]] = {}
        self._pid: int | None = None
        self._wakes_at: float | None = None  # when the thread wakes next; None: when told

    @staticmethod
    def interval() -> float:
        return max(0.5, settings.JOB_LEASE_SECONDS / 3)

    def add(self, job_id: int, token: str, stop: threading.Event) -> None:
        with self._lock:
            if self._pid != os.getpid():
                self._pid, self._jobs, self._wakes_at = os.getpid(), {}, None
                threading.Thread(target=self._run, args=(self._pid,), daemon=True, name="job-heartbeats").start()
            at = time.monotonic() + self.interval()
            self._jobs[job_id] = (token, stop, at)
            if self._wakes_at is None or at < self._wakes_at:
                self._changed.notify()  # (otherwise it is awake by then anyway)

    def discard(self, job_id: int) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)

    def _run(self, pid: int) -> None:
        while True:
            with self._lock:
                if self._pid != pid:
                    return
                now = time.monotonic()
                due = [(job_id, token, stop) for job_id, (token, stop, at) in self._jobs.items() if at <= now]
                if not due:
                    self._wakes_at = min((at for _, _, at in self._jobs.values()), default=None)
                    self._changed.wait(None if self._wakes_at is None else self._wakes_at - now)
                    self._wakes_at = None
                    continue
                for job_id, token, stop in due:
                    self._jobs[job_id] = (token, stop, now + self.interval())
            # Outside the lock: a job that finishes meanwhile may get one more beat,
            # which changes nothing (its row is no longer processing under its token).
            close_old_connections()
            for job_id, token, stop in due:
                try:
                    _extend_lease(job_id, token, stop)
                except Exception:  # the database went away: the next beat tries again
                    log.exception("job %s: heartbeat failed", job_id)
                    connection.close()


_heartbeats = _Heartbeats()


def execute(job_id: int, token: str) -> str:
    """Run one dispatched job. Returns the status it ended in, or "stale".

    The start is itself a claim: only the first delivery of (job, token) passes it.
    """
    job = _start(job_id, token, timezone.now())
    if job is None:
        log.info("job %s: delivery for token %s is stale, ignored", job_id, token[:8])
        return "stale"
    stop = threading.Event()
    if job.cancel_requested:
        stop.set()
    _heartbeats.add(job_id, token, stop)
    try:
        result = get_kind(job.kind).handler(job.payload, JobContext(job, stop))
        outcome, outlook = _finish(job, token, ok=True, result=result)
    except PermanentJobError as exc:
        outcome, outlook = _finish(job, token, ok=False, error=str(exc), permanent=True)
    except RetryLater as exc:
        outcome, outlook = _finish(job, token, ok=False, error=str(exc), delay=exc.delay_seconds)
    except Exception as exc:  # any handler failure is retried with backoff
        detail = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}"
        outcome, outlook = _finish(job, token, ok=False, error=detail)
    finally:
        _heartbeats.discard(job_id)
    # A slot in this lane may have just freed up.
    dispatch(outlook=outlook)
    return outcome


def _start(job_id: int, token: str, now: datetime) -> Job | None:
    """Claim the start of a delivered job and read it back: only the first delivery
    of (job, token) passes; None for any other."""
    owner, expires = worker_identity(), now + timedelta(seconds=settings.JOB_LEASE_SECONDS)
    if connections[Job.objects.db].features.can_return_columns_from_insert:
        return statements.start(job_id, token, now, owner=owner, lease_expires_at=expires)
    # (An SQLite older than 3.35 has no UPDATE … RETURNING: claim, then read.)
    started = Job.objects.filter(
        pk=job_id, lease_token=token, status=JobStatus.PROCESSING, started_at__isnull=True
    ).update(started_at=now, attempts=F("attempts") + 1, lease_owner=owner, lease_expires_at=expires)
    return Job.objects.get(pk=job_id) if started else None


def _finish(
    job: Job,
    token: str,
    *,
    ok: bool,
    result: Any = None,
    error: str = "",
    permanent: bool = False,
    delay: float | None = None,
) -> tuple[str, tuple[bool, int] | None]:
    """Record the run's outcome; returns the status it ended in (or "stale") and,
    when the finishing statement could tell, dispatch()'s outlook."""
    now = timezone.now()
    # ``job`` was read after execute() counted this attempt, and nothing else changes
    # the count while this run holds the lease, so no fresh read is needed for it.
    attempts = job.attempts
    if ok:
        status, fields = JobStatus.COMPLETED, {"finished_at": now, "result": _jsonable(result), "error": ""}
    elif permanent or attempts >= job.max_attempts:
        status, fields = JobStatus.FAILED, {"finished_at": now, "error": error}
    else:
        if delay is None:
            delay = retry_delay(attempts, job.backoff)
        status, fields = JobStatus.RETRY, {"not_before": now + timedelta(seconds=delay), "error": error}
    # A cancel requested while the job ran wins over its outcome; testing the flag in
    # the same UPDATE means a request arriving at the last moment is never lost. The
    # statement also answers what dispatch() would ask next.
    written = {"status": status, "lease_owner": "", "lease_expires_at": None, **fields}
    outlook = None
    if connections[Job.objects.db].features.can_return_columns_from_insert:
        outlook = statements.finish(job.pk, token, now, written)
        changed = outlook is not None
    else:  # (an SQLite older than 3.35 has no UPDATE … RETURNING)
        changed = _held(job, token).filter(cancel_requested=False).update(**written)
    if not changed:
        status, fields = JobStatus.CANCELED, {"finished_at": now, "error": error or "canceled while running"}
        changed = (
            _held(job, token)
            .filter(cancel_requested=True)
            .update(status=status, lease_owner="", lease_expires_at=None, **fields)
        )
    if not changed:
        # The lease expired and the loop reclaimed the job while we ran; the other
        # attempt owns it now and this result is dropped.
        log.warning("job %s finished after losing its lease; result dropped", job.pk)
        return "stale", None
    # What the UPDATE wrote, without reading the row back.
    for name, value in {"status": status, "lease_owner": "", "lease_expires_at": None, **fields}.items():
        setattr(job, name, value)
    if status == JobStatus.FAILED:
        record(
            "job.failed",
            f"Job {job.pk} ({job.kind}) failed after {attempts} attempt(s): {error.splitlines()[0] if error else ''}",
            severity=Severity.WARNING,
            subject=f"job:{job.pk}",
            data={"job_id": job.pk, "kind": job.kind, "attempts": attempts, "permanent": permanent},
        )
    if status in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED):
        job_finished.send(sender=Job, job=job)
    return status, outlook


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
    )
    if not changed:
        job.refresh_from_db()
        raise JobStateError(f"job {job.pk} is {job.status}; only failed or canceled jobs can be retried")
    record("job.retried", f"Job {job.pk} queued again", subject=f"job:{job.pk}", data={"job_id": job.pk}, actor=actor)
    transaction.on_commit(dispatch)
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
            key, fields = "retried", {"status": JobStatus.RETRY, "not_before": None}
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
    """One pass of queue upkeep: reclaim dead leases, then dispatch what is due."""
    close_old_connections()
    reclaimed = reclaim_expired(now)
    dispatched = dispatch()
    return {"reclaimed": reclaimed, "dispatched": len(dispatched)}
