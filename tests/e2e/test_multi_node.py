"""Two cluster nodes and two loop runners; one node is killed (SIGKILL, the whole node)
in the middle of 1,000 jobs. Nothing is lost, nothing is left processing, side effects
happen at most once per attempt, cycles never overlap, and each worker's schedule fires once per due time.

The fault is proven, not assumed: the killed node had run jobs before the kill, the
surviving node ran jobs after it, and the surviving node and both loop runners were
alive and working to the end. Runs on whichever profile the suite runs on (SQLite or
PostgreSQL; the Job table is the queue on both).
"""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import datetime, timedelta

import pytest
from django.conf import settings
from django.db.models import Max
from django.utils import timezone

from orchestration.core.choices import JobStatus
from orchestration.core.models import Job, LedgerEntry
from orchestration.fleet.choices import RunStatus, RunTrigger
from orchestration.fleet.models import Worker, WorkerRun
from orchestration.loop.models import LoopState
from tests.support.processes import manage, running, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

JOBS = 1000
SCHEDULES = 5
MARK_TARGET = "orchestration.core.jobs.kinds.mark_schedule"


def test_a_killed_node_loses_nothing(tmp_path, broker_only):
    # The built-in workers queue jobs of their own while this runs: count ours only.
    marked = Job.objects.filter(kind="mark")
    LoopState.get()
    # The jobs flow in two waves, so the queue never holds over 1,000 (the fleet's
    # QUEUE_OVERFLOW threshold, which would rightly pause the scheduled runs below).
    first_wave = JOBS * 3 // 5
    Job.objects.bulk_create(Job(kind="mark", payload={"name": "multi", "sleep": 0.005}) for _ in range(first_wave))
    # Workers of the fleet that fall due around the kill.
    workers = [
        Worker.objects.create(
            name=f"fault-test-{i}",
            category="collection",
            interval_seconds=3600,  # one due time within the test
            timeout_seconds=30,
            expected_duration_seconds=1,
            target={"type": "python", "path": MARK_TARGET, "kwargs": {"name": f"sched{i}"}},
        )
        for i in range(SCHEDULES)
    ]
    Worker.objects.filter(pk__in=[w.pk for w in workers]).update(next_due_at=timezone.now() + timedelta(days=1))
    lease = 4
    env = {"JOB_LEASE_SECONDS": str(lease), "Q_WORKERS": "2"}
    with running(
        ("node-a", manage("qcluster")),
        ("node-b", manage("qcluster")),
        ("loop-1", manage("run_orchestrator")),
        ("loop-2", manage("run_orchestrator")),
        log_dir=tmp_path,
        **env,
    ) as procs:
        node_a, node_b, loop_1, loop_2 = procs
        wait_for(lambda: marked.filter(status=JobStatus.COMPLETED).count() >= JOBS // 5, timeout=120, alive=procs)
        Job.objects.bulk_create(
            Job(kind="mark", payload={"name": "multi", "sleep": 0.005}) for _ in range(JOBS - first_wave)
        )
        wait_for(
            lambda: marked.filter(status=JobStatus.COMPLETED).count() >= JOBS // 3,
            timeout=120,
            message="a third of the jobs",
            alive=procs,
        )
        soon = (timezone.now() + timedelta(seconds=1)).replace(microsecond=0)
        for i, worker in enumerate(workers):
            Worker.objects.filter(pk=worker.pk).update(next_due_at=soon + timedelta(seconds=i))
        node_a_pids = node_a.descendants()
        node_a.kill_group()
        killed = timezone.now()
        killed_at = marked.filter(status=JobStatus.COMPLETED).count()
        survivors = [node_b, loop_1, loop_2]
        try:
            wait_for(
                lambda: marked.filter(status=JobStatus.COMPLETED).count() == JOBS,
                timeout=240,
                interval=0.5,
                message="every job to complete after the kill",
                alive=survivors,
            )
        except AssertionError:
            left = marked.exclude(status=JobStatus.COMPLETED)
            print("not completed:", list(left.values("pk", "status", "attempts", "error", "lease_expires_at")[:10]))
            raise
        fired = WorkerRun.objects.filter(worker__name__startswith="fault-test-")
        try:
            wait_for(
                lambda: fired.filter(status=RunStatus.SUCCEEDED).values("worker").distinct().count() == SCHEDULES,
                timeout=60,
                message="every worker's scheduled run to succeed",
                alive=survivors,
            )
        except AssertionError:
            print(
                "runs:",
                list(fired.values("worker__name", "status", "skipped_reason", "error", "job__status", "job__error")),
            )
            raise
        # Enough cycles from the two runners to show they never overlap, however fast
        # the jobs went (a quick run once ended after 4 cycles).
        wait_for(lambda: LoopState.get().cycle_count >= 8, timeout=60, message="eight loop cycles", alive=survivors)
        # The survivors are still alive at the end, not merely were at some point.
        assert all(proc.popen.poll() is None for proc in survivors)
        loop_pids = {loop_1.popen.pid, loop_2.popen.pid}
    assert 0 < killed_at < JOBS
    assert marked.count() == JOBS
    assert not marked.exclude(status=JobStatus.COMPLETED).exists()  # none lost, none left processing
    recovered = (marked.aggregate(last=Max("finished_at"))["last"] - killed).total_seconds()
    assert recovered <= lease + 15, f"the last job finished {recovered:.1f} s after the kill"

    # Each line: job id, attempt, and the lease owner "host:<node's sentinel pid>/<worker pid>".
    lines = (settings.RUNS_DIR / "marks" / "multi").read_text().split()
    triples = list(zip(lines[::3], lines[1::3], lines[2::3], strict=True))
    pairs = Counter((job, attempt) for job, attempt, _ in triples)
    assert {int(job) for job, _ in pairs} == set(marked.values_list("pk", flat=True))
    assert max(pairs.values()) == 1, "a side effect ran twice within one attempt"
    by_node = Counter("a" if int(owner.split(":")[1].split("/")[0]) in node_a_pids else "b" for _, _, owner in triples)
    assert by_node["a"] > 0, "the killed node had run no job before the kill"
    assert by_node["b"] >= JOBS - killed_at, "the surviving node did not run the rest"
    # A job runs again only in a new attempt (the killed node's running jobs), and its
    # attempts say so; at most one job per worker process of the killed node.
    runs = Counter(int(job) for job, _ in pairs)
    attempts = dict(marked.values_list("pk", "attempts"))
    assert all(runs[pk] <= attempts[pk] for pk in runs)
    assert all(int(attempt) <= attempts[int(job)] for job, attempt in pairs)
    rerun = sum(1 for n in runs.values() if n > 1)
    assert rerun <= int(env["Q_WORKERS"]), f"{rerun} jobs ran again; the killed node ran at most 2 at once"
    print(
        f"\nkilled after {killed_at} completions ({by_node['a']} runs on the killed node, {by_node['b']} on the "
        f"survivor); {rerun} job(s) ran again in a new attempt; 0 lost; last job done {recovered:.1f} s after the kill"
    )

    # One run per due time, whichever node's scheduler fired it and whether or not the
    # node holding the firing died; its side effect happened once per run that started
    # (a run interrupted by the kill is run again, as a new run).
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
    # The cycles were run by the two runners (whichever held the cycle lease; the
    # other kept the queue and the schedules moving each tick).
    by_runner = Counter(
        int(e.data["owner"].split(":")[1])
        for e in LedgerEntry.objects.filter(event_type__in=("orchestrator.cycle_idle", "orchestrator.cycle_completed"))
        if e.data.get("owner")
    )
    assert by_runner and set(by_runner) <= loop_pids, f"cycles per runner pid: {dict(by_runner)}"
    assert len({c for _, _, c in cycles}) == len(cycles)  # one entry per cycle number
    for (start, duration, _), (next_start, _, _) in itertools.pairwise(cycles):
        assert start + timedelta(milliseconds=duration) <= next_start, "two cycles overlapped"
    print(
        f"{JOBS} jobs: {marked.filter(status=JobStatus.COMPLETED).count()} completed, 0 lost, 0 left processing, "
        f"0 side effects twice in one attempt; {len(cycles)} cycles from 2 runners, 0 overlapping; "
        f"{SCHEDULES} schedules, each fired once for its due time"
    )
