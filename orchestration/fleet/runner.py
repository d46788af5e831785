"""Running a worker: request → gates → lock → target with timeout → run, score, anomalies.

Flow 3 of DESIGN.md. A run is requested by its schedule, an upstream's success, a
person or a recovery; it goes through the job queue (kind ``worker.run``, lane
``FLEET_LANE``) so it executes on whichever cluster node picks it up. Every step that
more than one process could take at once is a conditional UPDATE:

* the worker lock (``Worker.lock_owner``): one run of a worker at a time;
* the run's own start (queued → running): a redelivered task does nothing;
* one run per schedule due time (a unique constraint on ``(worker, due_at)``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import datetime, timedelta
from typing import Any

import psutil
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, F, Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from orchestration.core import anomaly_rules, outbound, shutdown
from orchestration.core.anomalies import open_anomaly, react
from orchestration.core.choices import AnomalySeverity, Severity
from orchestration.core.jobs.kinds import import_callable
from orchestration.core.jobs.queue import enqueue, worker_identity
from orchestration.core.jobs.registry import PermanentJobError, job_kind
from orchestration.core.models import Anomaly
from orchestration.core.models.ledger import record
from orchestration.core.runnables import runnable
from orchestration.fleet import output_schema, scores, statements, tally
from orchestration.fleet.choices import FAILED_RUN_STATUSES, OverlapPolicy, RunStatus, RunTrigger, SkipReason
from orchestration.fleet.models import ScoreReport, Worker, WorkerRun, WorkerStateError
from orchestration.fleet.sync import SCHEDULE_FUNC

log = logging.getLogger("orchestration.fleet")

JOB_KIND = "worker.run"
BUFFERING = (OverlapPolicy.BUFFER_ONE, OverlapPolicy.BUFFER_ALL)


# --- request ------------------------------------------------------------------------
def request_run(
    worker: Worker,
    *,
    trigger: str = RunTrigger.MANUAL,
    actor: str = "system",
    due_at: datetime | None = None,
    not_before: datetime | None = None,
) -> WorkerRun:
    """Queue one run. For a scheduled due time that already has a run, return that run."""
    fields = {
        "trigger": trigger,
        "due_at": due_at,
        "actor": actor or "system",
        "timeout_seconds": worker.timeout_seconds,
    }
    with transaction.atomic():
        if due_at is None:  # only a due time can collide: no savepoint for the rest
            run = statements.insert(WorkerRun(worker=worker, **fields))
        else:
            try:
                with transaction.atomic():
                    run = statements.insert(WorkerRun(worker=worker, **fields))
            except IntegrityError:
                # Another scheduler already turned this due time into a run.
                return WorkerRun.objects.get(worker=worker, due_at=due_at)
        job = _enqueue_run(worker, run.pk, run.execution_id, not_before=not_before)
        statements.set_job(run.pk, job.pk)
        run.job = job
    if actor not in ("", "system", "orchestrator") and trigger != RunTrigger.BACKFILL:  # a backfill says it once
        record(
            "worker.triggered",
            f"Worker {worker.name} triggered ({trigger})",
            subject=worker.breaker_name,
            data={"run_id": run.pk, "execution_id": run.execution_id, "trigger": trigger},
            actor=actor,
        )
    return run


def _enqueue_run(worker: Worker, run_id: int, execution_id: str, *, not_before=None, attempt: str = ""):
    return enqueue(
        JOB_KIND,
        {"run_id": run_id, "worker": worker.name},
        priority=worker.priority,
        lane=settings.FLEET_LANE,
        max_attempts=1,
        not_before=not_before,
        reference=f"worker:{worker.name}:{execution_id}" + (f":{attempt}" if attempt else ""),
    )


def trigger(worker: Worker, *, actor: str) -> WorkerRun:
    """A person's trigger: refused (409) for a disabled worker."""
    if not worker.enabled:
        raise WorkerStateError(f"worker {worker.name} is disabled; enable it first")
    return request_run(worker, trigger=RunTrigger.MANUAL, actor=actor)


@runnable
def scheduled_run(name: str, due_at: str | None = None) -> str:
    """django-q2 schedule entry point: one run for this due time."""
    worker = Worker.objects.filter(name=name).first()
    if worker is None:
        return f"no worker {name!r}"
    if not worker.enabled:
        return f"worker {name} is disabled"
    due = parse_datetime(due_at) if due_at else None
    if due is not None:
        due = due.replace(microsecond=0)
    run = request_run(worker, trigger=RunTrigger.SCHEDULE, due_at=due)
    return f"run {run.execution_id}"


def record_firing(sender, task: dict, **kwargs) -> None:
    """``pre_enqueue`` receiver: a worker's due time becomes its run inside the
    scheduler's own transaction, the one that moves the schedule on.

    Without this the firing existed only as a broker message until a cluster worker
    ran ``scheduled_run``; a node killed while holding that message (Redis hands
    messages out without acknowledgement) lost the due time for good. Now the run and
    its job are committed with the schedule's new ``next_run``, or neither is, and the
    broker queues no second job for the firing.
    """

    if task.get("func") != SCHEDULE_FUNC or task.get("sync"):
        return  # (a synchronous task runs scheduled_run right away anyway)
    args = task.get("args") or ()
    due_at = (task.get("kwargs") or {}).get("due_at")
    if len(args) == 1 and isinstance(args[0], str) and due_at:
        scheduled_run(args[0], due_at=due_at)
        # The run's own job is the durable record: the broker queues nothing more.
        task["orchestrator_recorded"] = True


# --- execute ----------------------------------------------------------------------
@job_kind(JOB_KIND, description="Runs one worker of the fleet (payload: run_id).")
def worker_run_job(payload: dict, ctx) -> dict:
    run_id = payload.get("run_id")
    if not isinstance(run_id, int):
        raise PermanentJobError("payload.run_id must be an integer")
    return execute_run(run_id)


def execute_run(run_id: int) -> dict[str, Any]:
    """Gate, lock and execute one queued run. Safe to call twice: the second does nothing."""
    # The run, its worker and its breaker in one read; nothing below reads them again.
    run = statements.read_run(run_id)
    if run is None or run.status != RunStatus.QUEUED:
        return {"status": "stale"}
    worker = run.worker
    now = timezone.now()
    gate = check_gates(worker, run, now, fresh=True)
    if gate is not None:
        return skip(run, *gate)
    owner = f"{worker_identity()}:{run.execution_id}"
    if worker.overlap != OverlapPolicy.ALLOW_ALL and not acquire_lock(worker, owner, now):
        overlapped = _overlap(worker, run, owner, now)
        if overlapped is not None:
            return overlapped
    running = {
        "status": RunStatus.RUNNING,
        "started_at": now,
        "heartbeat_at": now,
        "owner": owner,
        "timeout_seconds": worker.timeout_seconds,
    }
    if not statements.update_run_if(run.pk, RunStatus.QUEUED, running):
        release_lock(worker, owner)
        return {"status": "stale"}
    for name, value in running.items():  # what the claim wrote, without reading it back
        setattr(run, name, value)
    return _execute_claimed(worker, run, owner)


def check_gates(worker: Worker, run: WorkerRun, now: datetime, *, fresh: bool = False) -> tuple[str, dict] | None:
    """Why this run must not start now, or None. Cheapest checks first. ``fresh``: the
    worker was read together with the run just now, so it is not read again."""
    if not fresh:
        worker.refresh_from_db()
    if not worker.enabled:
        return SkipReason.DISABLED, {}
    if worker.paused and run.trigger in (RunTrigger.SCHEDULE, RunTrigger.UPSTREAM, RunTrigger.BACKFILL):
        return SkipReason.PAUSED, {"paused_at": worker.paused_at.isoformat() if worker.paused_at else None}
    if run.trigger in (RunTrigger.SCHEDULE, RunTrigger.UPSTREAM):
        if Anomaly.objects.filter(code="QUEUE_OVERFLOW", resolved_at__isnull=True).exists():
            return SkipReason.QUEUE_PAUSED, {}
    required, optional = list(worker.depends_on or []), list(worker.optional_depends_on or [])
    if required or optional:
        upstreams = {w.name: w for w in Worker.objects.filter(name__in=required + optional)}
        running = sorted(
            WorkerRun.objects.filter(worker__name__in=list(upstreams), status=RunStatus.RUNNING)
            .order_by()
            .values_list("worker__name", flat=True)
            .distinct()
        )
        if running:
            return SkipReason.UPSTREAM_RUNNING, {"upstreams": running}
        failed = sorted(n for n in required if n in upstreams and upstreams[n].last_status in FAILED_RUN_STATUSES)
        if failed:
            return SkipReason.UPSTREAM_FAILED, {"upstreams": failed}
        stale = sorted(n for n in required if n not in upstreams or not upstreams[n].is_fresh(now))
        if stale:
            return SkipReason.UPSTREAM_STALE, {"upstreams": stale}
        if run.trigger == RunTrigger.UPSTREAM and worker.is_fresh(now):
            newest = max((u.last_success_at for u in upstreams.values() if u.last_success_at), default=None)
            if newest is not None and worker.last_success_at and worker.last_success_at >= newest:
                return SkipReason.ALREADY_FRESH, {"last_success_at": worker.last_success_at.isoformat()}
    # Last: a half-open breaker lets exactly one trial through, which must not be
    # spent on a run that another gate would stop.
    if not worker.ensure_circuit().allow():
        return SkipReason.CIRCUIT_OPEN, {"breaker": worker.breaker_name}
    return None


# --- overlap ------------------------------------------------------------------------
def _overlap(worker: Worker, run: WorkerRun, owner: str, now: datetime) -> dict[str, Any] | None:
    """Another run holds the lock: apply the worker's overlap policy. None means this
    run now holds the lock and goes ahead (cancel_other)."""
    holder = Worker.objects.filter(pk=worker.pk).values_list("lock_owner", flat=True).first() or ""
    policy = worker.overlap
    if policy in (OverlapPolicy.BUFFER_ONE, OverlapPolicy.BUFFER_ALL):
        return _buffer(worker, run, holder, one=policy == OverlapPolicy.BUFFER_ONE)
    if policy == OverlapPolicy.CANCEL_OTHER and _cancel_and_take_over(worker, run, holder, owner, now):
        return None
    return skip(run, SkipReason.LOCK_HELD, {"holder": holder, "overlap": policy})


def _buffer(worker: Worker, run: WorkerRun, holder: str, *, one: bool) -> dict[str, Any]:
    """The run waits for the current one (buffered); with buffer_one, only if no other
    run is already waiting.

    buffer_one's single place is ``buffer_slot`` under a partial unique index (one
    buffered slot-holder per worker): the NOT EXISTS of the UPDATE alone lets two
    runs racing on PostgreSQL both buffer (neither sees the other's uncommitted row),
    while the index makes the second one's UPDATE fail, so exactly one wins."""
    waiting = WorkerRun.objects.filter(worker_id=worker.pk, status=RunStatus.BUFFERED).exclude(pk=run.pk)
    claim = WorkerRun.objects.filter(pk=run.pk, status=RunStatus.QUEUED)
    if one:
        claim = claim.exclude(Exists(waiting))
    try:
        with transaction.atomic():
            buffered = claim.update(status=RunStatus.BUFFERED, buffer_slot=one)
    except IntegrityError:  # another run took the single place first
        buffered = 0
    if not buffered:
        if one:
            taken = waiting.values_list("execution_id", flat=True).first() or ""
            return skip(run, SkipReason.BUFFER_FULL, {"holder": holder, "buffered": taken, "overlap": "buffer_one"})
        return {"status": "stale"}
    # The holder may have finished between our failed lock and the buffering: start the
    # oldest waiting run now rather than leave it waiting for a finish that has passed.
    promote_buffered(worker)
    return {"status": RunStatus.BUFFERED, "holder": holder}


def promote_buffered(worker: Worker, now: datetime | None = None) -> int | None:
    """When the lock is free, queue the oldest buffered run again; returns its id."""
    now = now or timezone.now()
    free = Q(lock_owner="") | Q(lock_expires_at__isnull=True) | Q(lock_expires_at__lt=now)
    if not Worker.objects.filter(free, pk=worker.pk).exists():
        return None
    oldest = (
        WorkerRun.objects.filter(worker_id=worker.pk, status=RunStatus.BUFFERED)
        .order_by("queued_at", "id")
        .values_list("pk", "execution_id")
        .first()
    )
    if oldest is None:
        return None
    run_id, execution_id = oldest
    with transaction.atomic():
        if not WorkerRun.objects.filter(pk=run_id, status=RunStatus.BUFFERED).update(status=RunStatus.QUEUED):
            return None  # another node promoted it
        job = _enqueue_run(worker, run_id, execution_id, attempt="buffered")
        WorkerRun.objects.filter(pk=run_id).update(job=job)
    return run_id


def promote_stragglers() -> list[int]:
    """Buffered runs whose worker no longer buffers (its policy changed meanwhile), or
    whose promotion was lost with a node: started by the fleet sweep."""
    worker_ids = set(WorkerRun.objects.filter(status=RunStatus.BUFFERED).values_list("worker_id", flat=True))
    promoted = [promote_buffered(w) for w in Worker.objects.filter(pk__in=worker_ids)]
    return [p for p in promoted if p is not None]


def _cancel_and_take_over(worker: Worker, run: WorkerRun, holder: str, owner: str, now: datetime) -> bool:
    """cancel_other: the running run is marked canceled and its lock handed to this one,
    which starts at once. The canceled run's heartbeat finds its row canceled within
    FLEET_HEARTBEAT_SECONDS and stops its target where it runs (whatever process that
    is); what the target returns meanwhile is dropped, since it no longer holds its run
    or the lock.
    """
    with transaction.atomic():
        taken = Worker.objects.filter(pk=worker.pk, lock_owner=holder).update(
            lock_owner=owner,
            lock_token=owner[-32:],
            lock_expires_at=now + timedelta(seconds=worker.effective_lock_timeout),
            lock_failures=0,
        )
        if not taken:
            return False
        canceled = list(
            WorkerRun.objects.filter(worker_id=worker.pk, status=RunStatus.RUNNING, owner=holder).values_list(
                "pk", "execution_id"
            )
        )
        ended = WorkerRun.objects.filter(pk__in=[pk for pk, _ in canceled], status=RunStatus.RUNNING).update(
            status=RunStatus.CANCELED,
            completed_at=now,
            success=None,
            error=f"canceled: run {run.execution_id} replaced it (overlap: cancel_other)",
        )
        tally.count(RunStatus.CANCELED, now, ended)
        record(
            "worker.run_canceled",
            f"Worker {worker.name}: run {', '.join(e for _, e in canceled) or holder} canceled for "
            f"{run.execution_id} (overlap: cancel other)",
            severity=Severity.WARNING,
            subject=worker.breaker_name,
            data={"canceled": [pk for pk, _ in canceled], "by_run_id": run.pk, "holder": holder},
        )
    return True


# --- lock -------------------------------------------------------------------------
def acquire_lock(worker: Worker, owner: str, now: datetime | None = None) -> bool:
    """Take the worker's lock if free or expired. A failure is counted (contention)."""
    now = now or timezone.now()
    taken = {
        "lock_owner": owner,
        "lock_token": owner[-32:],
        "lock_expires_at": now + timedelta(seconds=worker.effective_lock_timeout),
        "lock_failures": 0,
    }
    won = statements.take_lock(worker.pk, taken, now)
    if won:  # the instance in hand says what the row now holds
        for name, value in taken.items():
            setattr(worker, name, value)
    else:
        Worker.objects.filter(pk=worker.pk).update(lock_failures=F("lock_failures") + 1)
    return bool(won)


def release_lock(worker: Worker, owner: str) -> bool:
    return bool(
        Worker.objects.filter(pk=worker.pk, lock_owner=owner).update(lock_owner="", lock_token="", lock_expires_at=None)
    )


# --- skipping ---------------------------------------------------------------------
def skip(run: WorkerRun, reason: str, detail: dict) -> dict[str, Any]:
    now = timezone.now()
    changed = WorkerRun.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
        status=RunStatus.SKIPPED, completed_at=now, skipped_reason=reason, skipped_detail=detail, success=None
    )
    if not changed:
        return {"status": "stale"}
    tally.count(RunStatus.SKIPPED, now)
    run.status, run.completed_at, run.skipped_reason, run.skipped_detail, run.success = (
        RunStatus.SKIPPED,
        now,
        reason,
        detail,
        None,
    )
    label = SkipReason(reason).label
    record(
        "worker.run_skipped",
        f"Worker {run.worker.name} skipped: {label}" + (f" ({detail})" if detail else ""),
        severity=Severity.INFO,
        subject=run.worker.breaker_name,
        data={"run_id": run.pk, "execution_id": run.execution_id, "reason": reason, **detail},
    )
    from orchestration.fleet import detection

    detection.after_run(run, now)  # re-reads the worker: a failed lock counted on its row
    return {"status": RunStatus.SKIPPED, "reason": reason, "detail": detail}


# --- the target -------------------------------------------------------------------
class _Beat:
    """One run this process is executing, as the heartbeat sees it."""

    def __init__(self, run_id: int, worker_id: int, owner: str, lock_seconds: int):
        self.run_id, self.worker_id, self.owner, self.lock_seconds = run_id, worker_id, owner, lock_seconds
        self.peak_memory = psutil.virtual_memory().percent
        # Only a run in the main thread can be stopped (by an alarm, as timeouts are).
        self.stoppable = shutdown.enforceable()
        self.canceled = False


class _Heartbeats:
    """Keeps every run this process executes visibly alive and its lock held, and
    stops one that a newer run canceled (overlap: cancel other) within a beat.

    One thread per process, started with its first run, rather than one per run: a
    short run is over before its first beat, and starting and joining a thread (with
    its own database connection) cost a no-op run more than its target did.
    """

    def __init__(self) -> None:
        self._reset()
        # A forked cluster worker starts clean: the parent's thread is not in the
        # child, and its mutex may have been copied while held.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._mutex = threading.Lock()
        self._beats: dict[int, _Beat] = {}
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._interval = 0.0  # the FLEET_HEARTBEAT_SECONDS the thread waits with

    def add(self, beat: _Beat) -> None:
        with self._mutex:
            self._beats[beat.run_id] = beat
            if self._thread is None or not self._thread.is_alive():  # first run, or a forked child
                self._thread = threading.Thread(target=self._loop, daemon=True, name="fleet-heartbeat")
                self._thread.start()
        if settings.FLEET_HEARTBEAT_SECONDS != self._interval:
            self._wake.set()  # only then: waking the thread on every run start costs the run

    def remove(self, beat: _Beat) -> None:
        with self._mutex:
            self._beats.pop(beat.run_id, None)

    def _loop(self) -> None:
        last = time.monotonic()
        while True:
            # Woken early by a new run only to re-read the interval: runs already
            # going still beat every FLEET_HEARTBEAT_SECONDS, not later.
            self._interval = settings.FLEET_HEARTBEAT_SECONDS
            self._wake.wait(max(0.0, last + self._interval - time.monotonic()))
            self._wake.clear()
            if time.monotonic() < last + settings.FLEET_HEARTBEAT_SECONDS:
                continue
            last = time.monotonic()
            with self._mutex:
                beats = list(self._beats.values())
            if not beats:
                continue
            try:
                self.beat(beats)
            except Exception:  # a failed heartbeat only makes crash detection earlier
                log.exception("heartbeat of runs %s failed", [b.run_id for b in beats])
            finally:
                connection.close()

    def beat(self, beats: list[_Beat]) -> None:
        now = timezone.now()
        memory = psutil.virtual_memory().percent
        shutdown.check_drain()
        for beat in beats:
            beat.peak_memory = max(beat.peak_memory, memory)
            if not WorkerRun.objects.filter(pk=beat.run_id, status=RunStatus.RUNNING).update(heartbeat_at=now):
                self._stop_if_canceled(beat)
            Worker.objects.filter(pk=beat.worker_id, lock_owner=beat.owner).update(
                lock_expires_at=now + timedelta(seconds=beat.lock_seconds)
            )

    def _stop_if_canceled(self, beat: _Beat) -> None:
        """The run's row is no longer running: if a newer run canceled it, stop its
        target rather than let it go on working for a result that will be dropped."""
        if beat.canceled:
            return
        status, error = WorkerRun.objects.filter(pk=beat.run_id).values_list("status", "error").first() or ("", "")
        if status != RunStatus.CANCELED:
            return
        beat.canceled = True
        with self._mutex:  # still this run's turn in the main thread, not the next run's
            if beat.stoppable and beat.run_id in self._beats:
                shutdown.cancel(error or "canceled")


_heartbeats = _Heartbeats()


def http_url(url: str) -> str:
    return url.replace("{base_url}", settings.FLEET_BASE_URL)


def call_target(worker: Worker, run: WorkerRun) -> dict[str, Any]:
    """Execute the target; return the run's metrics. Raises on failure."""
    target = worker.target or {}
    kind = target.get("type")
    if kind == "python":
        func = import_callable(str(target.get("path", "")))
        result = func(**(target.get("kwargs") or {}))
        if isinstance(result, dict):
            return dict(result.get("metrics", result)) if isinstance(result.get("metrics"), dict) else dict(result)
        return {} if result is None else {"value": result}
    if kind == "http":
        url = http_url(str(target.get("url", "")))
        method = str(target.get("method", "POST")).upper()
        body = target.get("body")
        try:
            response = outbound.request(
                method,
                url,
                headers=target.get("headers") or {},
                json=body if isinstance(body, dict | list) else None,
                data=body if isinstance(body, str) else None,
                timeout=worker.timeout_seconds,
            )
        except outbound.OutboundRefused as exc:
            raise PermanentJobError(str(exc)) from None
        expected = target.get("expected_status")
        ok = response.status_code == int(expected) if expected else 200 <= response.status_code < 300
        if not ok:
            raise RuntimeError(f"{method} {url} answered {response.status_code}")
        metrics: dict[str, Any] = {"status_code": response.status_code}
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if isinstance(payload, dict) and isinstance(payload.get("metrics"), dict):
            metrics.update(payload["metrics"])
        return metrics
    raise PermanentJobError(f"worker {worker.name} has no valid target (type must be python or http)")


def _execute_claimed(worker: Worker, run: WorkerRun, owner: str) -> dict[str, Any]:
    beat = _Beat(run.pk, worker.pk, owner, worker.effective_lock_timeout)
    _heartbeats.add(beat)
    started = time.monotonic()
    metrics: dict[str, Any] = {}
    error = ""
    status = RunStatus.SUCCEEDED
    try:
        with shutdown.guarded(worker.timeout_seconds, settings.FLEET_SHUTDOWN_GRACE_SECONDS):
            metrics = call_target(worker, run)
        if worker.output_schema:
            metrics = output_schema.checked(worker.output_schema, metrics)
    except shutdown.RunTimeout as exc:
        status, error = RunStatus.TIMED_OUT, str(exc)
    except shutdown.RunInterrupted as exc:
        status, error = RunStatus.INTERRUPTED, str(exc)
    except shutdown.RunCanceled as exc:  # its row already says canceled: finish drops it
        status, error = RunStatus.CANCELED, str(exc)
    except Exception as exc:  # the target's failure is the run's result, not ours
        status, error = RunStatus.FAILED, f"{type(exc).__name__}: {exc}"
    finally:
        _heartbeats.remove(beat)
    duration_s = time.monotonic() - started
    if status == RunStatus.SUCCEEDED and duration_s > worker.timeout_seconds:
        # Not enforceable here (not a main thread): detected after the fact.
        status, error = RunStatus.TIMED_OUT, f"ran {duration_s:.1f} s, over the {worker.timeout_seconds} s timeout"
    outcome = finish(
        run, owner, status=status, metrics=metrics, error=error, duration_s=duration_s, memory_percent=beat.peak_memory
    )
    shutdown.pass_on_if_requested()
    return outcome


def finish(
    run: WorkerRun,
    owner: str,
    *,
    status: str,
    metrics: dict[str, Any],
    error: str = "",
    duration_s: float = 0.0,
    memory_percent: float | None = None,
) -> dict[str, Any]:
    """Record the outcome, release the lock, then score, detect, recover and alert.

    The run and the worker in hand are current (read with the run, written only by
    this run while it holds the lock), so nothing is read back: the run's row is closed
    with one UPDATE, and the worker's lock, last outcome, failure streak and score go
    in one more."""
    now = timezone.now()
    worker = run.worker
    closed_fields = closed_run_fields(status, now, duration_s=duration_s, metrics=metrics, error=error)
    closed = statements.update_run_if(run.pk, RunStatus.RUNNING, closed_fields)
    if not closed:
        # Declared crashed by the sweep, or canceled by a newer run, while it ran; its
        # result is dropped.
        release_lock(worker, owner)
        if worker.overlap in BUFFERING:
            promote_buffered(worker)
        return {"status": "stale"}
    tally.count(status, now)
    for name, value in closed_fields.items():
        setattr(run, name, value)
    report = None
    worker_fields = worker_fields_after(status, now)
    if status != RunStatus.INTERRUPTED:
        report = scores.report_for_run(run, memory_percent=memory_percent, save=False)
        worker_fields["last_score"] = report.overall_score
    streak = "add" if status in FAILED_RUN_STATUSES else "reset" if status == RunStatus.SUCCEEDED else ""
    statements.finish_worker(worker.pk, worker_fields, streak=streak, owner=owner)
    _apply_locally(worker, worker_fields, status, owner)
    if worker.overlap in BUFFERING:
        promote_buffered(worker)
    if status == RunStatus.INTERRUPTED:
        return {"status": status, "rerun": _run_again(worker, run)}
    pause_if_failing(worker, run, now)
    success = status == RunStatus.SUCCEEDED
    worker.ensure_circuit().record(success)
    statements.insert(report)
    _ledger_run(worker, run, status, report, error=error, duration_s=duration_s)
    _note_anomalies(run, report, now)
    if success:
        trigger_downstream(worker)
    return {"status": status, "score": report.overall_score, "anomalies": report.anomalies}


def _apply_locally(worker: Worker, fields: dict[str, Any], status: str, owner: str) -> None:
    """What the finishing UPDATE wrote, on the instance in hand instead of a re-read."""
    for name, value in fields.items():
        setattr(worker, name, value)
    if worker.lock_owner == owner:
        worker.lock_owner, worker.lock_token, worker.lock_expires_at = "", "", None
    if status == RunStatus.SUCCEEDED:
        worker.consecutive_failures = 0
    elif status in FAILED_RUN_STATUSES:
        if worker.pause_after_failures:
            # Other runs (allow_all) or the sweep may have counted too: the pause
            # decision reads the streak as it is now. Only a failing run pays for it.
            worker.refresh_from_db(fields=["consecutive_failures", "paused"])
        else:
            worker.consecutive_failures += 1


# --- pure: what a finished run writes ---------------------------------------------------
def closed_run_fields(status: str, now: datetime, *, duration_s: float, metrics: Any, error: str) -> dict[str, Any]:
    """The run's columns once it ended (an interrupted run neither succeeded nor failed)."""
    return {
        "status": status,
        "completed_at": now,
        "success": None if status == RunStatus.INTERRUPTED else status == RunStatus.SUCCEEDED,
        "duration_ms": round(duration_s * 1000, 1),
        "metrics": _jsonable(metrics),
        "error": error[:5000],
        "heartbeat_at": now,
    }


def worker_fields_after(status: str, now: datetime) -> dict[str, Any]:
    fields: dict[str, Any] = {"last_run_at": now, "last_status": status}
    if status == RunStatus.SUCCEEDED:
        fields["last_success_at"] = now
    return fields


def failure_streak(status: str) -> dict[str, Any]:
    """How a finished run moves the worker's consecutive-failure count (an interrupted
    run neither breaks nor extends the streak)."""
    if status in FAILED_RUN_STATUSES:
        return {"consecutive_failures": F("consecutive_failures") + 1}
    if status == RunStatus.SUCCEEDED:
        return {"consecutive_failures": 0}
    return {}


def should_pause(consecutive_failures: int, pause_after: int, paused: bool) -> bool:
    return bool(pause_after) and not paused and consecutive_failures >= pause_after


def run_message(name: str, status: str, duration_s: float, score: float, error: str) -> str:
    return f"Worker {name} {RunStatus(status).label.lower()} in {duration_s:.2f} s, score {score:.0f}" + (
        f": {error.splitlines()[0]}" if error else ""
    )


def merged_anomalies(listed: list[str], codes: list[str]) -> list[str] | None:
    """The report's anomaly codes with this run's added; None when nothing is new to save.
    The report lists what the run showed, whether it opened an anomaly or confirmed one."""
    if not codes:
        return None
    return sorted(set(listed) | set(codes))


# --- steps around the database ----------------------------------------------------------
def pause_if_failing(worker: Worker, run: WorkerRun, now: datetime) -> bool:
    """After ``pause_after_failures`` consecutive failures the worker's scheduled runs
    stop until a person resumes it: a paused flag, a ledger entry and an anomaly (so an
    alert) saying why. Manual triggers still run."""
    if not should_pause(worker.consecutive_failures, worker.pause_after_failures, worker.paused):
        return False
    reason = f"{worker.consecutive_failures} consecutive failures (pause after {worker.pause_after_failures})"
    if not Worker.objects.filter(pk=worker.pk, paused=False).update(paused=True, paused_at=now, paused_reason=reason):
        return False
    worker.paused, worker.paused_at, worker.paused_reason = True, now, reason
    record(
        "worker.paused",
        f"Worker {worker.name} paused: {reason}; resume it from the console, the admin or the API",
        severity=Severity.ERROR,
        subject=worker.breaker_name,
        data={"run_id": run.pk, "consecutive_failures": worker.consecutive_failures},
    )
    anomaly, created = open_anomaly(
        "HIGH_FAILURE_RATE",
        worker.breaker_name,
        {"paused": True, "consecutive_failures": worker.consecutive_failures, "reason": reason},
        worker=worker,
        run=run,
        now=now,
    )
    if created:
        react([anomaly])
    return True


def _run_again(worker: Worker, run: WorkerRun) -> int:
    """An interrupted run (shutdown) is queued again; returns the new run's id."""
    again = request_run(worker, trigger=RunTrigger.RERUN)
    record(
        "worker.run_interrupted",
        f"Worker {worker.name} interrupted by shutdown; queued again as {again.execution_id}",
        severity=Severity.WARNING,
        subject=worker.breaker_name,
        data={"run_id": run.pk, "rerun_id": again.pk},
    )
    return again.pk


def _ledger_run(worker: Worker, run: WorkerRun, status: str, report: ScoreReport, *, error: str, duration_s: float):
    success = status == RunStatus.SUCCEEDED
    record(
        f"worker.run_{'succeeded' if success else 'failed'}",
        run_message(worker.name, status, duration_s, report.overall_score, error),
        severity=Severity.INFO if success else Severity.WARNING,
        subject=worker.breaker_name,
        data={"run_id": run.pk, "execution_id": run.execution_id, "status": status, "score": report.overall_score},
    )


def _note_anomalies(run: WorkerRun, report: ScoreReport, now: datetime) -> None:
    from orchestration.fleet import detection

    opened = detection.after_run(run, now, current=True)
    codes = [a.code for a in opened] + list(anomaly_rules.evaluate("run", detection.run_facts(run)).fired)
    merged = merged_anomalies(report.anomalies, codes)
    if merged is not None:
        report.anomalies = merged
        report.save(update_fields=["anomalies"])


def trigger_downstream(worker: Worker) -> list[int]:
    """Queue workers that run after this one. JSON lists are filtered in Python to stay
    portable across SQLite and PostgreSQL; the fleet is small."""
    candidates = statements.downstream_candidates(worker.pk)
    chosen = [pk for pk, required, optional in candidates if worker.name in required + optional]
    # Most runs have no downstream: the full rows are read only for those that do.
    return (
        [request_run(c, trigger=RunTrigger.UPSTREAM).pk for c in Worker.objects.filter(pk__in=chosen)] if chosen else []
    )


def _jsonable(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))


# --- crashes ----------------------------------------------------------------------
def detect_crashed_runs(now: datetime | None = None) -> list[int]:
    """Runs whose process stopped answering (no heartbeat) are crashed: their lock is
    released, WORKER_CRASH opens and its recovery restarts the worker."""

    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.FLEET_CRASH_AFTER_SECONDS)
    crashed = []
    for run in WorkerRun.objects.select_related("worker").filter(status=RunStatus.RUNNING, heartbeat_at__lt=cutoff):
        if mark_crashed(run, now, "no heartbeat: the process running this worker stopped answering"):
            crashed.append(run.pk)
    return crashed


def mark_crashed(run: WorkerRun, now: datetime, reason: str) -> bool:
    from orchestration.fleet import detection

    changed = WorkerRun.objects.filter(pk=run.pk, status__in=(RunStatus.RUNNING, RunStatus.QUEUED)).update(
        status=RunStatus.CRASHED, completed_at=now, success=False, error=reason
    )
    if not changed:
        return False
    tally.count(RunStatus.CRASHED, now)
    release_lock(run.worker, run.owner)
    if run.worker.overlap in BUFFERING:
        promote_buffered(run.worker, now)
    Worker.objects.filter(pk=run.worker_id).update(
        last_run_at=now, last_status=RunStatus.CRASHED, **failure_streak(RunStatus.CRASHED)
    )
    run.worker.ensure_circuit().record(False)
    run.refresh_from_db()
    record(
        "worker.run_crashed",
        f"Worker {run.worker.name} crashed: {reason}",
        severity=Severity.ERROR,
        subject=run.worker.breaker_name,
        data={"run_id": run.pk, "execution_id": run.execution_id},
    )
    detection.after_run(run)
    return True


def on_job_finished(sender, job, **kwargs) -> None:
    """The job of a run ended failed or canceled while the run never finished (its
    process died and the queue gave the job up): the run crashed."""
    if job.kind != JOB_KIND or job.status == "completed":
        return
    run_id = (job.payload or {}).get("run_id")
    run = WorkerRun.objects.select_related("worker").filter(pk=run_id).first()
    if run is None or run.status not in (RunStatus.RUNNING, RunStatus.QUEUED):
        return
    if run.status == RunStatus.QUEUED and job.status == "canceled":
        now = timezone.now()
        skipped = WorkerRun.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
            status=RunStatus.SKIPPED, completed_at=now, skipped_reason="", error="job canceled"
        )
        tally.count(RunStatus.SKIPPED, now, skipped)
        return
    mark_crashed(run, timezone.now(), f"job {job.pk} ended {job.status}: {(job.error or '').splitlines()[0:1]}")


SEVERITY_TO_LEDGER = {
    AnomalySeverity.CRITICAL: Severity.CRITICAL,
    AnomalySeverity.HIGH: Severity.ERROR,
    AnomalySeverity.MEDIUM: Severity.WARNING,
    AnomalySeverity.LOW: Severity.INFO,
}
