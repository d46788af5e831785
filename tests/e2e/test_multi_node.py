"""Two cluster nodes and two loop runners; one node is killed (SIGKILL, the whole node)
in the middle of 1,000 jobs. Nothing is lost, nothing is left processing, side effects
happen at most once per attempt, cycles never overlap, and each worker's schedule fires once per due time.

Runs on whichever profile the suite runs on (SQLite + ORM broker, or PostgreSQL + Redis).
"""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import datetime, timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from django_q.models import Schedule

from orchestration.choices import JobStatus
from orchestration.jobs import queue
from orchestration.models import Job, LedgerEntry, LoopState, Worker, WorkerRun
from orchestration.workers.choices import RunStatus, RunTrigger
from tests.support.processes import manage, running, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

JOBS = 1000
SCHEDULES = 5
MARK_TARGET = "orchestration.jobs.kinds.mark_schedule"


def test_a_killed_node_loses_nothing(tmp_path, broker_only):
    # The built-in workers queue jobs of their own while this runs: count ours only.
    marked = Job.objects.filter(kind="mark")
    LoopState.get()
    Job.objects.bulk_create(Job(kind="mark", payload={"name": "multi", "sleep": 0.005}) for _ in range(JOBS))
    # Workers of the fleet due during the run; their schedules fire while the node is
    # busy (django-q2 hands the firing to whichever node's scheduler locks the row).
    soon = (timezone.now() + timedelta(seconds=3)).replace(microsecond=0)
    for i in range(SCHEDULES):
        worker = Worker.objects.create(
            name=f"fault-test-{i}",
            category="collection",
            interval_seconds=3600,  # one due time within the test
            timeout_seconds=30,
            expected_duration_seconds=1,
            target={"type": "python", "path": MARK_TARGET, "kwargs": {"name": f"sched{i}"}},
        )
        Schedule.objects.filter(name=worker.schedule_name).update(next_run=soon + timedelta(seconds=i))
    queue.dispatch(limit=50)
    env = {"JOB_LEASE_SECONDS": "4", "JOB_DISPATCH_LEASE_SECONDS": "15", "JOB_DISPATCH_BACKLOG": "40", "Q_WORKERS": "2"}
    with running(
        ("node-a", manage("qcluster")),
        ("node-b", manage("qcluster")),
        ("loop-1", manage("run_orchestrator")),
        ("loop-2", manage("run_orchestrator")),
        log_dir=tmp_path,
        **env,
    ) as procs:
        node_a = procs[0]
        wait_for(
            lambda: marked.filter(status=JobStatus.COMPLETED).count() >= JOBS // 3,
            timeout=120,
            message="a third of the jobs",
        )
        node_a.kill_group()
        killed_at = marked.filter(status=JobStatus.COMPLETED).count()
        try:
            wait_for(
                lambda: marked.filter(status=JobStatus.COMPLETED).count() == JOBS,
                timeout=240,
                interval=0.5,
                message="every job to complete after the kill",
            )
        except AssertionError:
            left = marked.exclude(status=JobStatus.COMPLETED)
            print("not completed:", list(left.values("pk", "status", "attempts", "error", "lease_expires_at")[:10]))
            raise
        fired = WorkerRun.objects.filter(worker__name__startswith="fault-test-")
        wait_for(
            lambda: fired.filter(status=RunStatus.SUCCEEDED).values("worker").distinct().count() == SCHEDULES,
            timeout=60,
            message="every worker's scheduled run to succeed",
        )
        # Enough cycles from the two runners to show they never overlap, however fast
        # the jobs went (a quick run once ended after 4 cycles).
        wait_for(lambda: LoopState.get().cycle_count >= 8, timeout=60, message="eight loop cycles")
    assert 0 < killed_at < JOBS
    assert marked.count() == JOBS
    assert not marked.exclude(status=JobStatus.COMPLETED).exists()  # none lost, none left processing

    lines = (settings.RUNS_DIR / "marks" / "multi").read_text().split()
    pairs = Counter(zip(lines[::2], lines[1::2], strict=True))
    assert {int(job) for job, _ in pairs} == set(marked.values_list("pk", flat=True))
    assert max(pairs.values()) == 1, "a side effect ran twice within one attempt"
    # A job runs again only in a new attempt (the killed node's running jobs, or a job
    # whose lease ran out while it waited for the database), and its attempts say so.
    runs = Counter(int(job) for job, _ in pairs)
    attempts = dict(marked.values_list("pk", "attempts"))
    assert all(runs[pk] <= attempts[pk] for pk in runs)
    assert all(int(attempt) <= attempts[int(job)] for job, attempt in pairs)
    rerun = sum(1 for n in runs.values() if n > 1)
    print(f"\nkilled after {killed_at} completions; {rerun} job(s) ran again in a new attempt; 0 lost")

    # One run per due time, whichever node's scheduler fired it and whether or not the
    # node holding the firing's message died; its side effect happened once per run
    # that started (a run interrupted by the kill is run again, as a new run).
    for i in range(SCHEDULES):
        runs = fired.filter(worker__name=f"fault-test-{i}")
        scheduled = runs.filter(trigger=RunTrigger.SCHEDULE)
        assert list(scheduled.values_list("due_at", flat=True)) == [soon + timedelta(seconds=i)]
        lines = (settings.RUNS_DIR / "marks" / f"sched{i}").read_text().split()
        assert set(lines) == {"fired"}
        assert 1 <= len(lines) <= runs.exclude(started_at=None).count()

    cycles = sorted(
        (datetime.fromisoformat(e.data["started_at"]), e.data["duration_ms"], e.data["cycle"])
        for e in LedgerEntry.objects.filter(event_type__in=("orchestrator.cycle_idle", "orchestrator.cycle_completed"))
    )
    assert len(cycles) > 5
    assert len({c for _, _, c in cycles}) == len(cycles)  # one entry per cycle number
    for (start, duration, _), (next_start, _, _) in itertools.pairwise(cycles):
        assert start + timedelta(milliseconds=duration) <= next_start, "two cycles overlapped"
    print(
        f"{JOBS} jobs: {marked.filter(status=JobStatus.COMPLETED).count()} completed, 0 lost, 0 left processing, "
        f"0 side effects twice in one attempt; {len(cycles)} cycles from 2 runners, 0 overlapping; "
        f"{SCHEDULES} schedules, each fired once for its due time"
    )
