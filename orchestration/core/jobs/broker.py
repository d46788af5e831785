"""django-q2's broker on the Job table: the one queue.

django-q2 stays the executor (cluster, worker processes, time limits, schedules,
monitor); the Job row is the one truth. ``dequeue`` claims due Job rows directly (one
statement per batch, see statements.claim) and hands the cluster's workers "execute
job N with token T". There is no second copy of a job to keep in step, so nothing is
lost between two queues and nothing waits out a dispatch lease.

Whatever django-q2 itself enqueues (schedule firings, ``async_task`` from anywhere)
becomes a durable Job of kind ``django_q.task`` through ``enqueue``: retried, leased
and reclaimed like any other job, and visible in the admin and the API.

A node (one cluster: its sentinel, pusher and worker processes) renews the leases of
all it holds in one statement per beat, from a thread of its pusher process. A job
whose worker process died is left out of the next beat, so its lease runs out and it
is reclaimed within one beat of that; a killed node's jobs likewise.

Wake-up: on PostgreSQL an idle node LISTENs for the NOTIFY every enqueue sends; on
SQLite it polls with a short interval that grows while the queue stays empty.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connections, transaction
from django.utils import timezone
from django_q.brokers import Broker
from django_q.conf import Conf
from django_q.signing import BadSignature, SignedPackage

from orchestration.core import runnables
from orchestration.core.choices import CLAIMABLE_STATUSES, JobStatus
from orchestration.core.jobs import queue, statements
from orchestration.core.jobs.registry import PermanentJobError
from orchestration.core.models import Job

log = logging.getLogger("orchestration.core.jobs.broker")

EXECUTE = "orchestration.core.jobs.tasks.execute_job"
EXECUTE_CHUNK = "orchestration.core.jobs.tasks.execute_jobs"
TASK_KIND = "django_q.task"
# Idle polling on SQLite: from the first to the last interval, doubling while empty.
POLL_FIRST_SECONDS = 0.002
# On PostgreSQL a NOTIFY wakes the node at once; the wait is bounded so a job whose
# not_before passes is claimed within it, and the pusher sees the cluster stop.
LISTEN_SECONDS = 0.5


# --- the jobs this node's worker processes are running -------------------------------
class RunningJobs:
    """(pid, job id) per job a worker process holds (the one it runs and the rest of
    its chunk), in memory shared by one node's processes.

    Created in the cluster's parent before it forks the sentinel, pusher and workers,
    so they all see the same slots. The heartbeat renews the leases of the jobs in
    here whose process is alive, and of the jobs claimed and not yet started; the
    unstarted jobs of a process that died go back to the queue at once.
    """

    SLOTS = 1024

    def __init__(self) -> None:
        self._slots = multiprocessing.Array("q", self.SLOTS * 2)

    # Under the lock the raw array is read: each item of the synchronized wrapper takes
    # the lock again, so a sweep of the 1,024 slots held it 0.83 ms (0.07 on the raw
    # array), and on a busy machine the workers ending jobs waited on it a third of their
    # time (20,000 services at 1,000 checks/s).
    def add(self, job_id: int) -> int:
        pid = os.getpid()
        with self._slots.get_lock():
            slots = self._slots.get_obj()
            for i in range(0, self.SLOTS * 2, 2):
                if slots[i] == 0:
                    slots[i], slots[i + 1] = pid, job_id
                    return i
        log.warning("no free slot to note job %s: its lease runs out if it runs longer than one", job_id)
        return -1

    def remove(self, slot: int) -> None:
        if slot >= 0:
            with self._slots.get_lock():
                slots = self._slots.get_obj()
                slots[slot], slots[slot + 1] = 0, 0

    def sweep(self) -> tuple[list[int], list[int]]:
        """(jobs held by live processes, jobs held by processes that died); the slots
        of dead processes are freed, so each of theirs is reported once."""
        alive, dead = [], []
        with self._slots.get_lock():
            slots = self._slots.get_obj()
            for i in range(0, self.SLOTS * 2, 2):
                pid, job_id = slots[i], slots[i + 1]
                if not pid:
                    continue
                if _pid_alive(pid):
                    alive.append(job_id)
                else:
                    dead.append(job_id)
                    slots[i], slots[i + 1] = 0, 0
        return alive, dead


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_running: RunningJobs | None = None


@contextmanager
def running(job_id: int) -> Iterator[None]:
    """Within the block this process counts as running ``job_id`` (for the heartbeat)."""
    slot = _running.add(job_id) if _running is not None else -1
    try:
        yield
    finally:
        if _running is not None:
            _running.remove(slot)


def run_chunk(claims: list[tuple[int, str]], node: str | None) -> list[str]:
    """Run the jobs of one package in turn (see ``JobBroker.dequeue``); returns the
    status each ended in. While a job runs, the rest wait for it; if it runs longer
    than CHUNK_WAIT_SECONDS they go back to the queue for any free worker instead.
    """
    slots = [_running.add(job_id) if _running is not None else -1 for job_id, _ in claims]
    watch = _ChunkWatch.get()
    outcomes: list[str] = []
    try:
        for i, (job_id, token) in enumerate(claims):
            rest = claims[i + 1 :]
            if rest:
                watch.arm(rest, node)
            try:
                outcomes.append(queue.execute(job_id, token, node))
            except BaseException:
                # The process may be on its way out (a time limit): the rest must not
                # wait for a lease to run out.
                watch.disarm()
                queue.release_unstarted([job for job, _ in rest], token=token)
                raise
            if _running is not None:
                _running.remove(slots[i])
                slots[i] = -1
            if rest and watch.disarm():
                break  # the rest went back to the queue while this job ran
    finally:
        for slot in slots:
            if _running is not None:
                _running.remove(slot)
    return outcomes


# How long the rest of a chunk waits behind one of its jobs before going back to the
# queue: short jobs share a package, a long one does not hold others up for long.
CHUNK_WAIT_SECONDS = 0.5


class _ChunkWatch(threading.Thread):
    """One per worker process: gives the rest of a chunk back to the queue once the
    job in front of it has run for CHUNK_WAIT_SECONDS."""

    _instance: _ChunkWatch | None = None
    _instance_pid = 0

    @classmethod
    def get(cls) -> _ChunkWatch:
        if cls._instance is None or cls._instance_pid != os.getpid() or not cls._instance.is_alive():
            cls._instance = cls()
            cls._instance_pid = os.getpid()
            cls._instance.start()
        return cls._instance

    def __init__(self) -> None:
        super().__init__(daemon=True, name="job-chunk-watch")
        self._cond = threading.Condition()
        self._rest: list[tuple[int, str]] = []
        self._node: str | None = None
        self._deadline = 0.0
        self._released = False

    def arm(self, rest: list[tuple[int, str]], node: str | None) -> None:
        with self._cond:
            self._rest, self._node, self._released = rest, node, False
            self._deadline = time.monotonic() + CHUNK_WAIT_SECONDS
            self._cond.notify()

    def disarm(self) -> bool:
        """Stop watching; True if the rest was given back meanwhile."""
        with self._cond:
            self._rest = []
            return self._released

    def run(self) -> None:
        while True:
            with self._cond:
                while not self._rest:
                    self._cond.wait()
                wait = self._deadline - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue  # re-read: disarmed, re-armed or due
                rest, self._rest, self._released = self._rest, [], True
            try:
                released = queue.release_unstarted([job for job, _ in rest], token=rest[0][1])
                if released:
                    queue.wake()
            except Exception as exc:  # their leases run out instead
                log.warning("giving back %d waiting job(s) failed: %s", len(rest), exc)
            finally:
                close_old_connections()


# --- the broker ---------------------------------------------------------------------
def node_identity() -> str:
    """The node a process belongs to: its host and the cluster's sentinel (the
    parent of the pusher and of every worker process)."""
    return f"{queue.HOST}:{os.getppid()}"


class JobBroker(Broker):
    def __init__(self, list_key: str | None = None) -> None:
        global _running
        super().__init__(list_key)
        if _running is None:
            _running = RunningJobs()
        self._poll = POLL_FIRST_SECONDS
        self._full = False  # the last claim came back full
        self._woken = False  # a NOTIFY said a job was queued
        self._tidied = 0.0
        self._listener: Any = None
        self._heartbeat: _Heartbeat | None = None
        self._lost_claims: list[str] = []

    @staticmethod
    def get_connection(list_key: str | None = None) -> None:
        return None

    def info(self) -> str:
        return "Job table"

    def ping(self) -> bool:
        return True

    # What django-q2 queues (schedules, async_task) becomes a Job.
    def enqueue(self, task: str) -> int:
        package = SignedPackage.loads(task)
        if package.get("orchestrator_recorded"):
            return 0  # already a job of its own (a fleet worker's firing, see workers.runner)
        job = queue.enqueue(TASK_KIND, describe(package, task), max_attempts=3)
        return job.pk

    def dequeue(self) -> list[tuple[int, str]] | None:
        node = node_identity()
        if self._heartbeat is None or not self._heartbeat.is_alive():
            self._heartbeat = _Heartbeat(node)
            self._heartbeat.start()
        # Dropping broken or old connections costs a health-check round trip on the next
        # query (PostgreSQL): once a second, not on every claim.
        if transaction.get_autocommit() and time.monotonic() - self._tidied >= 1.0:
            self._tidied = time.monotonic()
            close_old_connections()
        batch = max(1, Conf.BULK)
        token = uuid.uuid4().hex
        try:
            if self._lost_claims:  # claims whose outcome a broken connection hid
                self._lost_claims = [t for t in self._lost_claims if not _released(t)]
            # A full claim or a NOTIFY says jobs are very likely waiting: no look first.
            look_first = not (self._full or self._woken)
            self._woken = False
            claimed = queue.claim(batch, owner=node, look_first=look_first, token=token)
        except DatabaseError as exc:  # the database went away: try again shortly
            log.warning("claiming jobs failed (%s); retrying", exc)
            # The claim may have committed just before the connection broke: its jobs
            # would sit claimed by this node, renewed by its heartbeat, never delivered.
            self._lost_claims.append(token)
            _close()
            time.sleep(1.0)
            return None
        self._full = len(claimed) == batch
        if claimed:
            self._poll = POLL_FIRST_SECONDS
            # A package per worker process, not per job: django-q2's hand-offs of one
            # package (pusher → worker → monitor) cost more than a short job itself.
            # Interleaved, so the most urgent jobs start first on every worker.
            now = timezone.now()
            workers = max(1, Conf.WORKERS or 1)
            chunks = [claimed[i::workers] for i in range(min(workers, len(claimed)))]
            return [(chunk[0][0], SignedPackage.dumps(_package(chunk, node, now))) for chunk in chunks]
        self._wait()
        return None

    def _wait(self) -> None:
        connection = connections["default"]
        if connection.vendor == "postgresql":
            try:
                self._listen()
                return
            except Exception as exc:  # listening is an optimisation: fall back to polling
                log.warning("listening for new jobs failed (%s); polling", exc)
                self._close_listener()
        time.sleep(self._poll)
        self._poll = min(self._poll * 2, settings.JOB_POLL_SECONDS)

    def _listen(self) -> None:
        if self._listener is None:
            import psycopg

            params = connections["default"].get_connection_params()
            params.pop("cursor_factory", None)
            params.pop("context", None)
            self._listener = psycopg.connect(**params, autocommit=True)
            self._listener.execute(f"LISTEN {queue.NOTIFY_CHANNEL}")
        for _ in self._listener.notifies(timeout=LISTEN_SECONDS, stop_after=1):
            self._woken = True
            break

    def _close_listener(self) -> None:
        if self._listener is not None:
            try:
                self._listener.close()
            except Exception:
                pass
            self._listener = None

    # The Job row is the record of every run: there is nothing else to acknowledge.
    def acknowledge(self, task_id: Any) -> None:
        return None

    def fail(self, task_id: Any) -> None:
        return None

    def delete(self, task_id: Any) -> None:
        return None

    def queue_size(self) -> int:
        from django.db.models import Q

        now = timezone.now()
        return Job.objects.filter(
            Q(not_before__isnull=True) | Q(not_before__lte=now), status__in=CLAIMABLE_STATUSES
        ).count()

    def lock_size(self) -> int:

        return Job.objects.filter(status=JobStatus.PROCESSING).count()

    def purge_queue(self) -> None:
        return None  # jobs are canceled one by one, by a person, with a reason

    def delete_queue(self) -> None:
        return None


def _package(claims: list[tuple[int, str]], node: str, now: Any) -> dict[str, Any]:
    # save=False: the Job row is the record of the run, so django-q2 keeps no
    # success row of its own (it still keeps a failure of the entry point itself).
    if len(claims) == 1:
        name, func, args = f"job-{claims[0][0]}", EXECUTE, (*claims[0], node)
    else:
        name, func, args = f"jobs-{claims[0][0]}+{len(claims) - 1}", EXECUTE_CHUNK, (tuple(claims), node)
    return {
        "id": uuid.uuid4().hex,
        "name": name,
        "func": func,
        "args": args,
        "kwargs": {},
        "started": now,
        "save": False,
        "ack_failure": True,
    }


def describe(package: dict[str, Any], signed: str) -> dict[str, Any]:
    """The payload of a django-q2 task's job: what a person reads (function, name,
    arguments as text) and the signed package the job runs."""
    func = package.get("func")
    name = func if isinstance(func, str) else f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', '?')}"
    return {
        "func": name,
        "task_name": str(package.get("name") or ""),
        "args": repr(package.get("args") or ())[:500],
        "kwargs": repr(package.get("kwargs") or {})[:500],
        "package": signed,
    }


def run_package(payload: dict[str, Any]) -> Any:
    """Run a django-q2 task stored as a job (its signature checked with this
    install's key, so a package written by anyone else does not run)."""
    try:
        package = SignedPackage.loads(payload.get("package", ""))
    except (BadSignature, TypeError, ValueError) as exc:
        raise PermanentJobError(f"the task package does not carry this installation's signature: {exc}")
    func = package["func"]
    if not callable(func):
        # A function named by path (every schedule's) runs only if declared runnable:
        # a schedule's func is editable in the admin, and must not name any code.

        try:
            func = runnables.resolve(func)
        except runnables.NotRunnable as exc:
            raise PermanentJobError(str(exc))
    return func(*package.get("args", ()), **package.get("kwargs", {}))


def _released(token: str) -> bool:
    """Give back what a claim with a lost answer took; True once that is done."""
    released = queue.release_unstarted(token=token)
    if released:
        log.warning("released %d job(s) of a claim whose answer the database connection lost", released)
    return True


def _close() -> None:
    try:
        connections["default"].close()
    except Exception:
        pass


class _Heartbeat(threading.Thread):
    """One statement per beat renews every lease this node holds; then expired leases
    (of any node) are reclaimed, so a dead node's jobs come back within one beat of
    their expiry whether or not a loop runner is up."""

    def __init__(self, node: str) -> None:
        super().__init__(daemon=True, name="job-lease-heartbeat")
        self.node = node

    def run(self) -> None:
        interval = max(0.5, settings.JOB_LEASE_SECONDS / 3)
        wait = interval
        while True:
            time.sleep(wait)
            try:
                self.beat()
                wait = interval
            except Exception as exc:  # the database went away: the next beat tries again
                log.warning("lease heartbeat of %s failed: %s", self.node, exc)
                _close()
                # Sooner than a full interval, so leases are renewed before they run out.
                wait = min(interval, 1.0)

    def beat(self) -> None:
        close_old_connections()
        now = timezone.now()
        running_ids, orphaned = _running.sweep() if _running is not None else ([], [])
        expires = now + timedelta(seconds=settings.JOB_LEASE_SECONDS)
        statements.renew(self.node, running_ids, expires)
        if orphaned:  # held by worker processes that died: the unstarted ones go back now
            if queue.release_unstarted(orphaned, owner=self.node):
                queue.wake()
        queue.maintain(now)
