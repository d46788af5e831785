"""The job queue on the real database: claims, lanes, retries, leases."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from orchestration.core.choices import JobStatus
from orchestration.core.jobs import queue, statements
from orchestration.core.jobs.registry import PermanentJobError, RetryLater, UnknownJobKind, job_kind
from orchestration.core.models import Job, Lane, LedgerEntry

CALLS: list[dict] = []


@job_kind("test.record", description="Records its payload; fails while payload['fail_times'] > attempts so far.")
def record_call(payload: dict, ctx) -> dict:
    CALLS.append(payload)
    failures = sum(1 for c in CALLS if c.get("id") == payload.get("id"))
    if failures <= payload.get("fail_times", 0):
        raise RuntimeError(f"transient failure {failures}")
    if payload.get("permanent"):
        raise PermanentJobError("bad payload")
    return {"seen": len(CALLS)}


@job_kind("test.retry_later")
def retry_later(payload: dict, ctx) -> dict:
    raise RetryLater("moving on", payload["delay"])


@job_kind("test.hold", description="Runs until told to stop (or 5 s), reporting its lease as it goes.")
def hold(payload: dict, ctx) -> dict:
    leases = []
    deadline = time.monotonic() + payload.get("seconds", 5)
    while time.monotonic() < deadline and not ctx.should_stop():
        leases.append(Job.objects.get(pk=ctx.job.pk).lease_expires_at.isoformat())
        time.sleep(0.2)
    return {"leases": leases, "stopped": ctx.should_stop()}


@pytest.fixture(autouse=True)
def _clear_calls():
    CALLS.clear()


NODE = "test-host:1"


def make(kind="noop", **kw) -> Job:
    return queue.enqueue(kind, kw.pop("payload", {}), wake_nodes=False, **kw)


def _is_claim(sql: str) -> bool:
    # (On PostgreSQL the one-statement claim is prepared, and executed by name.)
    return "UPDATE" in sql or sql.startswith("EXECUTE orchestrator_claim")


def claim(limit: int = 200) -> list[int]:
    """What a node's broker does: claim a batch of due jobs; their ids."""
    return [pk for pk, _ in queue.claim(limit, owner=NODE)]


def dispatch_and_run() -> list[str]:
    """What the cluster does: claim, then execute each claimed (job, token)."""
    claimed = queue.claim(200, owner=NODE)
    return [queue.execute(pk, token, NODE) for pk, token in claimed]


@pytest.mark.django_db
class TestLifecycle:
    def test_it_runs_a_job_to_completion(self):
        job = make("test.record", payload={"id": 1})
        assert dispatch_and_run() == ["completed"]
        job.refresh_from_db()
        assert job.status == JobStatus.COMPLETED
        assert job.attempts == 1
        assert job.result == {"seen": 1}
        assert job.finished_at and job.started_at and not job.lease_token == ""
        assert job.lease_expires_at is None

    def test_unknown_kind_is_refused_before_writing(self):
        with pytest.raises(UnknownJobKind):
            queue.enqueue("nope", {})
        assert Job.objects.count() == 0

    def test_a_failure_is_retried_with_exponential_backoff_then_completes(self):
        job = make("test.record", payload={"id": 2, "fail_times": 2}, max_attempts=3)
        start = timezone.now()
        with time_machine.travel(start, tick=False) as clock:
            assert dispatch_and_run() == ["retry"]
            job.refresh_from_db()
            assert job.not_before == start + timedelta(seconds=1)
            assert dispatch_and_run() == []  # not due yet
            clock.shift(1)
            assert dispatch_and_run() == ["retry"]
            job.refresh_from_db()
            assert job.not_before == start + timedelta(seconds=1 + 2)
            clock.shift(2)
            assert dispatch_and_run() == ["completed"]
        job.refresh_from_db()
        assert job.attempts == 3 and job.status == JobStatus.COMPLETED

    def test_linear_backoff_waits_5_then_10_seconds(self):
        job = make("test.record", payload={"id": 3, "fail_times": 5}, max_attempts=3, backoff="linear")
        start = timezone.now()
        with time_machine.travel(start, tick=False) as clock:
            dispatch_and_run()
            job.refresh_from_db()
            assert job.not_before == start + timedelta(seconds=5)
            clock.shift(5)
            dispatch_and_run()
            job.refresh_from_db()
            assert job.not_before == start + timedelta(seconds=15)

    def test_it_fails_after_max_attempts_and_says_so_in_the_ledger(self):
        job = make("fail", payload={"message": "boom"}, max_attempts=1)
        assert dispatch_and_run() == ["failed"]
        job.refresh_from_db()
        assert job.status == JobStatus.FAILED and "boom" in job.error
        entry = LedgerEntry.objects.get(event_type="job.failed")
        assert entry.subject == f"job:{job.pk}"

    def test_a_permanent_error_is_not_retried(self):
        job = make("test.record", payload={"id": 4, "permanent": True}, max_attempts=5)
        assert dispatch_and_run() == ["failed"]
        job.refresh_from_db()
        assert job.attempts == 1

    def test_a_handler_may_choose_its_retry_delay(self):
        job = make("test.retry_later", payload={"delay": 0}, max_attempts=3, backoff="linear")
        start = timezone.now()
        with time_machine.travel(start, tick=False):
            assert dispatch_and_run() == ["retry"]
        job.refresh_from_db()
        assert job.not_before == start and job.attempts == 1  # at once, not after 5 s

    def test_not_before_holds_a_job_back(self):
        make(not_before=timezone.now() + timedelta(minutes=5))
        assert claim() == []


@pytest.mark.django_db
class TestOrderAndLanes:
    def test_priority_then_age(self):
        low = make(priority="low")
        normal_old = make(priority="normal")
        critical = make(priority="critical")
        normal_new = make(priority="normal")
        high = make(priority="high")
        Lane.objects.create(name="default", concurrency_limit=1)
        order = []
        claim()
        for _ in range(5):
            # Finishing a job frees the lane for the next claim.
            running = Job.objects.get(status=JobStatus.PROCESSING)
            order.append(running.pk)
            queue.execute(running.pk, running.lease_token)
            claim()
        assert order == [critical.pk, high.pk, normal_old.pk, normal_new.pk, low.pk]

    def test_a_lane_never_exceeds_its_limit(self):
        Lane.objects.create(name="narrow", concurrency_limit=2)
        for _ in range(5):
            make(lane="narrow")
        make(lane="wide")
        claimed = claim()
        lanes = list(Job.objects.filter(pk__in=claimed).values_list("lane", flat=True))
        assert sorted(lanes) == ["narrow", "narrow", "wide"]
        assert claim() == []  # narrow is full until one finishes
        first_narrow = next(pk for pk in claimed if Job.objects.get(pk=pk).lane == "narrow")
        queue.execute(first_narrow, Job.objects.get(pk=first_narrow).lease_token)
        assert len(claim()) == 1  # the freed place, and only that
        assert Job.objects.filter(lane="narrow", status=JobStatus.PROCESSING).count() == 2

    def test_a_limited_lane_without_waiting_jobs_costs_no_counting(self):
        """The pipeline's lane always has a limit: while none of its jobs is among the
        next candidates, the claim takes its batch without counting lanes (on
        PostgreSQL: one statement, no advisory lock)."""
        from django.test.utils import CaptureQueriesContext

        Lane.objects.create(name="single", concurrency_limit=1)
        jobs = [make(lane="other").pk for _ in range(3)]
        with CaptureQueriesContext(connection) as ctx:
            assert sorted(claim(limit=8)) == jobs
        sql = [q["sql"] for q in ctx.captured_queries]
        assert not any("ROW_NUMBER" in q or "pg_advisory" in q for q in sql), sql
        if connection.vendor == "postgresql":  # the look first (a plain read), then the claim
            assert len(sql) == 2 and sql[0].startswith("SELECT 1 "), sql

    @pytest.mark.parametrize("limited", [False, True], ids=["no-counting", "counting"])
    def test_a_batch_comes_back_in_queue_order(self, limited):
        """A node hands out the first ids first: the claim's answer is in queue order,
        whichever way the rows were written."""
        low, normal, critical, high = (make(priority=p) for p in ("low", "normal", "critical", "high"))
        expected = [critical.pk, high.pk, normal.pk, low.pk]
        if limited:
            Lane.objects.create(name="single", concurrency_limit=1)
            first = make(lane="single", priority="critical")
            expected.insert(1, first.pk)
        assert claim(limit=8) == expected

    def test_a_waiting_job_of_a_limited_lane_among_the_candidates_is_counted(self):
        Lane.objects.create(name="single", concurrency_limit=1)
        make(lane="single")
        make(lane="single")
        other = make(lane="other")
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as ctx:
            first = claim(limit=8)
        assert other.pk in first and len(first) == 2
        assert any("ROW_NUMBER" in q["sql"] for q in ctx.captured_queries)

    def test_a_full_lane_does_not_block_other_lanes(self):
        Lane.objects.create(name="single", concurrency_limit=1)
        make(lane="single", priority="critical")
        make(lane="single", priority="critical")
        other = make(lane="other", priority="low")
        first = claim()
        assert other.pk in first and len(first) == 2


@pytest.mark.django_db
class TestAtLeastOnceDelivery:
    def test_a_redelivered_task_does_nothing(self):
        job = make("test.record", payload={"id": 5})
        (pk,) = claim()
        token = Job.objects.get(pk=pk).lease_token
        assert queue.execute(pk, token) == "completed"
        assert queue.execute(pk, token) == "stale"
        assert len(CALLS) == 1
        job.refresh_from_db()
        assert job.attempts == 1

    def test_a_task_with_an_old_token_does_nothing(self):
        make("test.record", payload={"id": 6})
        (pk,) = claim()
        assert queue.execute(pk, "0" * 32) == "stale"
        assert CALLS == []


@pytest.mark.django_db
class TestLeases:
    def test_an_expired_lease_is_reclaimed_and_retried(self):
        job = make("noop")
        (pk,) = claim()
        # The worker picked it up, then its process died: no heartbeat, no finish.
        Job.objects.filter(pk=pk).update(started_at=timezone.now(), attempts=1)
        with time_machine.travel(timezone.now() + timedelta(minutes=10)):
            counts = queue.reclaim_expired()
        assert counts["retried"] == 1
        job.refresh_from_db()
        assert job.status == JobStatus.RETRY and "lease expired" in job.error
        assert LedgerEntry.objects.filter(event_type="jobs.reclaimed").exists()
        # The retry runs under a new token; the dead worker's token is now stale.
        assert dispatch_and_run() == ["completed"]

    def test_a_lost_task_that_never_started_goes_back_without_using_an_attempt(self):
        job = make("noop")
        claim()
        with time_machine.travel(timezone.now() + timedelta(minutes=10)):
            assert queue.reclaim_expired()["requeued"] == 1
        job.refresh_from_db()
        assert job.status == JobStatus.PENDING and job.attempts == 0

    def test_an_expired_last_attempt_fails(self):
        job = make("noop", max_attempts=1)
        (pk,) = claim()
        Job.objects.filter(pk=pk).update(started_at=timezone.now(), attempts=1)
        with time_machine.travel(timezone.now() + timedelta(minutes=10)):
            assert queue.reclaim_expired()["failed"] == 1
        job.refresh_from_db()
        assert job.status == JobStatus.FAILED

    def test_a_live_lease_is_left_alone(self):
        make("noop")
        claim()
        assert sum(queue.reclaim_expired().values()) == 0

    def test_a_late_finish_after_reclaim_is_dropped(self):
        job = make("noop")
        (pk,) = claim()
        old_token = Job.objects.get(pk=pk).lease_token
        Job.objects.filter(pk=pk).update(started_at=timezone.now(), attempts=1)
        with time_machine.travel(timezone.now() + timedelta(minutes=10)):
            queue.reclaim_expired()
        claim()
        job.refresh_from_db()
        assert queue._finish(job, old_token, ok=True, result={"late": True}) == "stale"
        job.refresh_from_db()
        assert job.result is None


@pytest.mark.django_db
class TestPeopleActions:
    def test_cancel_a_pending_job(self):
        job = make()
        queue.cancel(job, actor="ops")
        assert job.status == JobStatus.CANCELED
        assert LedgerEntry.objects.get(event_type="job.canceled").actor == "ops"

    def test_cancel_a_running_job_tells_it_to_stop(self):
        job = make("sleep", payload={"seconds": 30})
        ((pk, token),) = queue.claim(1, owner=NODE)
        statements.start(pk, "wrong", timezone.now(), owner="x")  # (no effect)
        Job.objects.filter(pk=pk).update(started_at=timezone.now())  # a worker has begun it
        queue.cancel(job, actor="ops")
        job.refresh_from_db()
        assert job.status == JobStatus.PROCESSING and job.cancel_requested
        # The job's own run ends canceled at its next look at the flag.
        ctx = queue.JobContext(job, threading.Event())
        assert ctx.should_stop()
        assert queue._finish(job, token, ok=True) == JobStatus.CANCELED

    def test_cancel_a_finished_job_is_a_conflict(self):
        job = make()
        dispatch_and_run()
        job.refresh_from_db()
        with pytest.raises(queue.JobStateError):
            queue.cancel(job)

    def test_retry_a_failed_job_gives_one_more_attempt(self):
        job = make("fail", max_attempts=1)
        dispatch_and_run()
        job.refresh_from_db()
        queue.retry(job, actor="ops")
        assert job.status == JobStatus.RETRY and job.max_attempts == 2
        with pytest.raises(queue.JobStateError):
            queue.retry(job)


def _race(n: int, target) -> list:
    """Run target in n threads that start together; each has its own DB connection."""
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def run(i):
        try:
            barrier.wait()
            results[i] = target()
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("broker_only")
class TestRaces:
    def test_two_dispatchers_never_claim_the_same_job(self):
        for _ in range(30):
            make()
        results = _race(4, lambda: claim(30))
        claimed = [pk for ids in results for pk in ids]
        assert len(claimed) == 30 and len(set(claimed)) == 30

    def test_a_single_lane_holds_one_job_however_many_dispatchers(self):
        Lane.objects.create(name="single", concurrency_limit=1)
        for _ in range(10):
            make(lane="single")
        results = _race(4, claim)
        assert sum(len(ids) for ids in results) == 1
        assert Job.objects.filter(lane="single", status=JobStatus.PROCESSING).count() == 1

    def test_two_deliveries_of_one_task_run_it_once(self):
        make("test.record", payload={"id": 7})
        (pk,) = claim()
        token = Job.objects.get(pk=pk).lease_token
        results = _race(2, lambda: queue.execute(pk, token))
        assert sorted(results) == ["completed", "stale"]
        assert len(CALLS) == 1


@pytest.mark.django_db
class TestStart:
    def test_the_start_returns_the_row_as_updated(self):
        job = make("test.record", payload={"id": 11, "nested": {"a": [1, 2]}}, priority="high")
        ((pk, token),) = queue.claim(1, owner=NODE)
        started = statements.start(pk, token, timezone.now(), owner=f"{NODE}/7")
        stored = Job.objects.get(pk=job.pk)
        assert started is not None and started.pk == job.pk
        # Every field converted as a normal read converts it (JSON, datetimes, choices).
        for field in Job._meta.concrete_fields:
            assert getattr(started, field.attname) == getattr(stored, field.attname), field.name
        assert started.payload == {"id": 11, "nested": {"a": [1, 2]}}
        assert started.attempts == 1 and started.started_at is not None and started.lease_owner == f"{NODE}/7"
        # A second delivery of the same (job, token) is not a start.
        assert statements.start(pk, token, timezone.now(), owner="x") is None
        assert Job.objects.get(pk=job.pk).attempts == 1

    def test_a_claim_is_one_statement_and_an_empty_queue_costs_one_read(self, django_assert_num_queries):
        with django_assert_num_queries(1):
            assert claim() == []
        for _ in range(5):
            make()
        # The due check, then whether any lane has a limit (none here, so no lane
        # counting) and the claim itself: one statement for the whole batch. On
        # PostgreSQL the limit check is part of that statement.
        Lane.objects.all().delete()  # (the seeded lanes may have limits)
        postgresql = connection.vendor == "postgresql"
        with django_assert_num_queries(2 if postgresql else 3) as captured:
            assert len(claim(3)) == 3
        assert sum(_is_claim(q["sql"]) for q in captured.captured_queries) == 1
        # With a job of a limited lane among the candidates the claim counts lanes,
        # still in one statement; on PostgreSQL the first statement finds the limit
        # instead of claiming, and claimers take one advisory lock so the counts are exact.
        Lane.objects.create(name="single", concurrency_limit=1)
        make(lane="single", priority="critical")
        make(lane="single", priority="critical")
        with django_assert_num_queries(4 if postgresql else 3) as captured:
            assert len(claim(2)) == 2
        claims = [q["sql"] for q in captured.captured_queries if _is_claim(q["sql"])]
        assert len(claims) == (2 if postgresql else 1)  # on PostgreSQL: the one that found the limit, then the claim
        assert Job.objects.filter(status=JobStatus.PROCESSING, lease_owner=NODE, started_at=None).count() == 5
        assert Job.objects.filter(status=JobStatus.PROCESSING, lane="single").count() == 1


@pytest.mark.django_db
class TestClaimOrder:
    """statements.CLAIM_ORDER is the queue's documented order; the claim's SQL is
    written from it and must agree with it on real rows."""

    def test_the_sql_order_is_the_documented_order(self):
        import random

        rng = random.Random(7)
        start = timezone.now() - timedelta(hours=1)
        jobs = []
        for _ in range(40):
            job = make(priority=rng.choice(["critical", "high", "normal", "low"]))
            # Ages collide on purpose, so the id decides between equals.
            Job.objects.filter(pk=job.pk).update(created_at=start + timedelta(seconds=rng.randrange(5)))
            jobs.append(job.pk)
        documented = list(
            Job.objects.filter(pk__in=jobs).order_by(*statements.CLAIM_ORDER).values_list("pk", flat=True)
        )
        assert statements.CLAIM_ORDER == ("-priority_rank", "created_at", "id")
        claimed = []
        for _ in range(40):
            claimed += claim(1)
        assert claimed == documented

    def test_not_yet_due_and_finished_jobs_are_not_claimed(self):
        make(not_before=timezone.now() + timedelta(minutes=1))
        done = make()
        Job.objects.filter(pk=done.pk).update(status=JobStatus.COMPLETED)
        assert claim() == []


@pytest.mark.django_db
class TestNodeLeases:
    """A node renews every lease it holds in one statement: the jobs it claimed and
    has not started, and those its live worker processes run."""

    def test_one_statement_renews_the_claimed_and_the_running(self, django_assert_num_queries):
        claimed, running, orphan, other = (make() for _ in range(4))
        ids = dict(queue.claim(4, owner=NODE))
        now = timezone.now()
        for pk, owner in ((running.pk, f"{NODE}/11"), (orphan.pk, f"{NODE}/12")):
            statements.start(pk, ids[pk], now, owner=owner)
        Job.objects.filter(pk=other.pk).update(lease_owner="elsewhere:9")
        Job.objects.update(lease_expires_at=now)
        later = now + timedelta(minutes=5)
        with django_assert_num_queries(1):
            renewed = statements.renew(NODE, [running.pk], later)
        assert renewed == 2
        leases = dict(Job.objects.values_list("pk", "lease_expires_at"))
        assert leases[claimed.pk] == later and leases[running.pk] == later
        # The job of a dead worker process and another node's job are left to expire.
        assert leases[orphan.pk] == now and leases[other.pk] == now

    def test_the_running_set_forgets_dead_processes(self):
        import subprocess
        import sys

        from orchestration.core.jobs.broker import RunningJobs

        running = RunningJobs()
        mine = running.add(41)
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        with running._slots.get_lock():
            running._slots[10], running._slots[11] = dead.pid, 42
        assert sorted(running.sweep()[0]) == [41]
        assert running._slots[10] == 0  # freed
        running.remove(mine)
        assert running.sweep()[0] == []

    def test_a_claimed_job_not_yet_started_is_canceled_at_once(self):
        job = make("test.record", payload={"id": 31})
        ((pk, token),) = queue.claim(1, owner=NODE)
        queue.cancel(job, actor="ops")
        assert job.status == JobStatus.CANCELED
        assert queue.execute(pk, token, NODE) == "stale" and CALLS == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("broker_only")
class TestCancelWhileRunning:
    def test_a_long_job_hears_a_cancel(self):
        long = make("test.hold", payload={"seconds": 2})
        cancelled = make("test.hold", payload={"seconds": 5})
        tokens = dict(queue.claim(2, owner=NODE))
        outcomes = {}

        def run(pk):
            try:
                outcomes[pk] = queue.execute(pk, tokens[pk], NODE)
            finally:
                connection.close()

        threads = [threading.Thread(target=run, args=(pk,)) for pk in (long.pk, cancelled.pk)]
        for t in threads:
            t.start()
        time.sleep(0.6)
        queue.cancel(Job.objects.get(pk=cancelled.pk), actor="tester")
        for t in threads:
            t.join(timeout=15)
        assert outcomes == {long.pk: JobStatus.COMPLETED, cancelled.pk: JobStatus.CANCELED}
        stopped = Job.objects.get(pk=cancelled.pk)
        assert stopped.finished_at - stopped.started_at < timedelta(seconds=3)


@pytest.mark.django_db(transaction=True)
class TestEnqueueInline:
    """Where jobs run inline (Q_SYNC: the demo loader, and this suite by default),
    enqueue() runs what is due once its transaction commits, in queue order."""

    def test_with_nothing_before_it_a_job_runs_at_once(self):
        job = queue.enqueue("test.record", {"id": 21})
        stored = Job.objects.get(pk=job.pk)
        assert (stored.status, stored.attempts, stored.result) == (JobStatus.COMPLETED, 1, {"seen": 1})

    def test_behind_an_older_job_it_waits_its_turn(self):
        older = make("test.record", payload={"id": 22})  # pending, never dispatched
        newer = queue.enqueue("test.record", {"id": 23})
        assert [c["id"] for c in CALLS] == [22, 23]  # claimed in queue order
        assert set(Job.objects.filter(pk__in=[older.pk, newer.pk]).values_list("status", flat=True)) == {
            JobStatus.COMPLETED
        }


CLAIMER = """
import json, os, sys, time, django
django.setup()
from orchestration.core.jobs import queue
queue.claim(0, owner="warm-up")  # connect first
open(sys.argv[1] + f".{os.getpid()}", "w").close()
while not os.path.exists(sys.argv[1]):  # start together
    time.sleep(0.005)
mine = []
while True:
    got = queue.claim(7, owner=f"proc:{os.getpid()}")
    if not got:
        break
    mine += [pk for pk, _ in got]
    time.sleep(0.002)  # a node hands its batch to its workers between claims
print(json.dumps(mine))
"""


@pytest.mark.django_db(transaction=True)
def test_two_claiming_processes_never_get_the_same_job(tmp_path):
    """Two brokers in two processes (each its own connection, as two cluster nodes)
    race over one table: every job is claimed exactly once, and a single lane's limit
    holds across them."""
    import json
    import subprocess
    import sys

    from tests.support.processes import ROOT, subprocess_env

    Lane.objects.create(name="single", concurrency_limit=1)
    free = {make().pk for _ in range(300)}
    single = {make(lane="single").pk for _ in range(5)}
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, str(go)], cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE
        )
        for _ in range(2)
    ]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("go.*"))) < 2:
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "a claimer did not start"
        time.sleep(0.01)
    go.touch()
    claimed = [json.loads(proc.communicate(timeout=120)[0]) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    assert all(claimed), "each process should have claimed some jobs"
    first, second = set(claimed[0]), set(claimed[1])
    assert not first & second
    assert len(claimed[0]) + len(claimed[1]) == len(first | second) == len(free) + 1
    assert (first | second) - free <= single and len((first | second) & single) == 1


@pytest.mark.parametrize(
    "vendor,version,refused",
    [
        ("sqlite", (3, 35, 0), False),
        ("sqlite", (3, 34, 1), True),
        ("postgresql", 140000, False),
        ("postgresql", 130011, True),
        ("mysql", (8, 0), True),
    ],
)
def test_only_databases_that_can_hold_the_queue_are_accepted(vendor, version, refused):
    from orchestration.core.checks import supported_database

    assert (supported_database(vendor, version) is not None) == refused


def test_this_database_passes_the_check(db):
    from orchestration.core.checks import database_version

    assert database_version() == []


@pytest.mark.django_db
def test_the_claim_reads_waiting_jobs_in_queue_order_from_its_index():
    """No sort of the whole backlog per claim: the claim walks job_claim_idx (a partial
    index on the waiting statuses, in CLAIM_ORDER) and stops after its batch."""
    for _ in range(20):
        make()
    connection_, sql = statements._prepared()
    now = connection_.ops.adapt_datetimefield_value(timezone.now())
    params = [JobStatus.PROCESSING, "t", "o", now, now, now, now, 8]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET enable_seqscan = off")  # (a tiny table would be scanned whole)
            cursor.execute("SET enable_sort = off")
            cursor.execute(f"EXPLAIN {sql.claim_unlimited}", params)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            cursor.execute("RESET enable_seqscan")
            cursor.execute("RESET enable_sort")
            assert "job_claim_idx" in plan, plan
            cursor.execute("SET enable_seqscan = off")
            cursor.execute("SET enable_sort = off")
            cursor.execute(f"EXPLAIN {sql.claim_unless_limited}", [now, 8, *params[:6]])
            plan = "\n".join(row[0] for row in cursor.fetchall())
            cursor.execute("RESET enable_seqscan")
            cursor.execute("RESET enable_sort")
            assert "job_claim_idx" in plan, plan
        else:
            cursor.execute(f"EXPLAIN QUERY PLAN {sql.claim_unlimited}", params)
            plan = "\n".join(row[-1] for row in cursor.fetchall())
            assert "job_claim_idx" in plan and "TEMP B-TREE" not in plan, plan
