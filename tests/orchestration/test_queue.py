"""The job queue on the real database: claims, lanes, retries, leases."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from orchestration.choices import JobStatus
from orchestration.jobs import queue, statements
from orchestration.jobs.registry import PermanentJobError, RetryLater, UnknownJobKind, job_kind
from orchestration.models import Job, Lane, LedgerEntry

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


def make(kind="noop", **kw) -> Job:
    return queue.enqueue(kind, kw.pop("payload", {}), dispatch_now=False, **kw)


def dispatch_and_run() -> list[str]:
    """What the cluster does: dispatch, then execute each delivered (job, token)."""
    ids = queue.dispatch()
    return [queue.execute(pk, Job.objects.get(pk=pk).lease_token) for pk in ids]


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
        assert queue.dispatch() == []


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
        queue.dispatch()
        for _ in range(5):
            # Finishing a job frees the lane, and execute() dispatches the next one.
            running = Job.objects.get(status=JobStatus.PROCESSING)
            order.append(running.pk)
            queue.execute(running.pk, running.lease_token)
        assert order == [critical.pk, high.pk, normal_old.pk, normal_new.pk, low.pk]

    def test_a_lane_never_exceeds_its_limit(self):
        Lane.objects.create(name="narrow", concurrency_limit=2)
        for _ in range(5):
            make(lane="narrow")
        make(lane="wide")
        claimed = queue.dispatch()
        lanes = list(Job.objects.filter(pk__in=claimed).values_list("lane", flat=True))
        assert sorted(lanes) == ["narrow", "narrow", "wide"]
        assert queue.dispatch() == []  # narrow is full until one finishes
        first_narrow = next(pk for pk in claimed if Job.objects.get(pk=pk).lane == "narrow")
        queue.execute(first_narrow, Job.objects.get(pk=first_narrow).lease_token)
        assert Job.objects.filter(lane="narrow", status=JobStatus.PROCESSING).count() == 2

    def test_a_full_lane_does_not_block_other_lanes(self):
        Lane.objects.create(name="single", concurrency_limit=1)
        make(lane="single", priority="critical")
        make(lane="single", priority="critical")
        other = make(lane="other", priority="low")
        first = queue.dispatch()
        assert other.pk in first and len(first) == 2

    def test_the_broker_backlog_is_capped(self, settings):
        # Jobs handed over but not started count against the cap; started ones do not.
        settings.JOB_DISPATCH_BACKLOG = 5
        for _ in range(20):
            make()
        first = queue.dispatch()
        assert len(first) == 5
        assert queue.dispatch() == []
        # Refilled in batches: nothing while at least half the backlog still waits...
        Job.objects.filter(pk__in=first[:2]).update(started_at=timezone.now())
        assert queue.dispatch() == []
        # ...then up to the cap again.
        Job.objects.filter(pk=first[2]).update(started_at=timezone.now())
        assert len(queue.dispatch()) == 3
        settings.JOB_DISPATCH_BACKLOG = 0  # no cap
        assert len(queue.dispatch()) == 12


@pytest.mark.django_db
class TestAtLeastOnceDelivery:
    def test_a_redelivered_task_does_nothing(self):
        job = make("test.record", payload={"id": 5})
        (pk,) = queue.dispatch()
        token = Job.objects.get(pk=pk).lease_token
        assert queue.execute(pk, token) == "completed"
        assert queue.execute(pk, token) == "stale"
        assert len(CALLS) == 1
        job.refresh_from_db()
        assert job.attempts == 1

    def test_a_task_with_an_old_token_does_nothing(self):
        make("test.record", payload={"id": 6})
        (pk,) = queue.dispatch()
        assert queue.execute(pk, "0" * 32) == "stale"
        assert CALLS == []


@pytest.mark.django_db
class TestLeases:
    def test_an_expired_lease_is_reclaimed_and_retried(self):
        job = make("noop")
        (pk,) = queue.dispatch()
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
        queue.dispatch()
        with time_machine.travel(timezone.now() + timedelta(minutes=10)):
            assert queue.reclaim_expired()["requeued"] == 1
        job.refresh_from_db()
        assert job.status == JobStatus.PENDING and job.attempts == 0

    def test_an_expired_last_attempt_fails(self):
        job = make("noop", max_attempts=1)
        (pk,) = queue.dispatch()
        Job.objects.filter(pk=pk).update(started_at=timezone.now(), attempts=1)
        with time_machine.travel(timezone.now() + timedelta(minutes=10)):
            assert queue.reclaim_expired()["failed"] == 1
        job.refresh_from_db()
        assert job.status == JobStatus.FAILED

    def test_a_live_lease_is_left_alone(self):
        make("noop")
        queue.dispatch()
        assert sum(queue.reclaim_expired().values()) == 0

    def test_a_late_finish_after_reclaim_is_dropped(self):
        job = make("noop")
        (pk,) = queue.dispatch()
        old_token = Job.objects.get(pk=pk).lease_token
        Job.objects.filter(pk=pk).update(started_at=timezone.now(), attempts=1)
        with time_machine.travel(timezone.now() + timedelta(minutes=10)):
            queue.reclaim_expired()
        queue.dispatch()
        job.refresh_from_db()
        assert queue._finish(job, old_token, ok=True, result={"late": True}) == ("stale", None)
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
        (pk,) = queue.dispatch()
        queue.cancel(job, actor="ops")
        job.refresh_from_db()
        assert job.status == JobStatus.PROCESSING and job.cancel_requested
        # The handler sees the flag at once and the job ends canceled.
        assert queue.execute(pk, job.lease_token) == JobStatus.CANCELED

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
        results = _race(4, lambda: queue.dispatch(limit=30))
        claimed = [pk for ids in results for pk in ids]
        assert len(claimed) == 30 and len(set(claimed)) == 30

    def test_a_single_lane_holds_one_job_however_many_dispatchers(self):
        Lane.objects.create(name="single", concurrency_limit=1)
        for _ in range(10):
            make(lane="single")
        results = _race(4, queue.dispatch)
        assert sum(len(ids) for ids in results) == 1
        assert Job.objects.filter(lane="single", status=JobStatus.PROCESSING).count() == 1

    def test_two_claims_at_birth_of_one_job_one_wins(self):
        job = make()
        results = _race(4, lambda: queue._claim_at_birth(job, timezone.now()))
        assert sorted(results) == [False, False, False, True]
        assert Job.objects.get(pk=job.pk).status == JobStatus.PROCESSING

    def test_two_deliveries_of_one_task_run_it_once(self):
        make("test.record", payload={"id": 7})
        (pk,) = queue.dispatch()
        token = Job.objects.get(pk=pk).lease_token
        results = _race(2, lambda: queue.execute(pk, token))
        assert sorted(results) == ["completed", "stale"]
        assert len(CALLS) == 1


@pytest.mark.django_db
class TestStartAndBirthClaim:
    """The one-statement paths: the start claim that reads the row back, and the
    claim of a job at its creation when nothing should go before it."""

    def test_the_start_claim_returns_the_row_as_updated(self):
        job = make("test.record", payload={"id": 11, "nested": {"a": [1, 2]}}, priority="high")
        (pk,) = queue.dispatch()
        token = Job.objects.get(pk=pk).lease_token
        started = queue._start(pk, token, timezone.now())
        stored = Job.objects.get(pk=job.pk)
        assert started is not None and started.pk == job.pk
        # Every field converted as a normal read converts it (JSON, datetimes, choices).
        for field in Job._meta.concrete_fields:
            assert getattr(started, field.attname) == getattr(stored, field.attname), field.name
        assert started.payload == {"id": 11, "nested": {"a": [1, 2]}}
        assert started.attempts == 1 and started.started_at is not None
        assert started.lease_expires_at > timezone.now()
        # A second delivery of the same (job, token) is not a start.
        assert queue._start(pk, token, timezone.now()) is None
        assert Job.objects.get(pk=job.pk).attempts == 1

    @pytest.mark.usefixtures("broker_only")
    def test_a_new_job_with_nothing_before_it_is_claimed_at_birth(self):
        job = make()
        assert queue._claim_at_birth(job, timezone.now())
        job.refresh_from_db()
        assert job.status == JobStatus.PROCESSING and job.lease_token and job.started_at is None
        assert not queue._claim_at_birth(job, timezone.now())  # claimed once only

    @pytest.mark.usefixtures("broker_only")
    def test_an_older_due_job_of_the_same_or_higher_priority_goes_first(self):
        make(priority="high")
        same = make(priority="high")
        assert not queue._claim_at_birth(same, timezone.now())
        # A more urgent newcomer does not wait behind it.
        urgent = make(priority="critical")
        assert queue._claim_at_birth(urgent, timezone.now())
        # An older job held back by not_before is not due, so it is not ahead.
        Job.objects.exclude(pk=urgent.pk).update(not_before=timezone.now() + timedelta(minutes=5))
        assert queue._claim_at_birth(same, timezone.now()) is False  # itself not due now
        later = make(priority="low")
        assert queue._claim_at_birth(later, timezone.now())

    @pytest.mark.usefixtures("broker_only")
    def test_limited_lanes_and_a_full_backlog_are_left_to_dispatch(self, settings):
        Lane.objects.create(name="single", concurrency_limit=1)
        assert not queue._claim_at_birth(make(lane="single"), timezone.now())
        settings.JOB_DISPATCH_BACKLOG = 2
        first, second, third = make(lane="a"), make(lane="b"), make(lane="c")
        Job.objects.filter(lane="single").delete()
        assert queue._claim_at_birth(first, timezone.now())
        assert not queue._claim_at_birth(third, timezone.now())  # second is older and due
        assert queue._claim_at_birth(second, timezone.now())
        assert not queue._claim_at_birth(third, timezone.now())  # two wait in the broker
        Job.objects.filter(pk=first.pk).update(started_at=timezone.now())
        assert queue._claim_at_birth(third, timezone.now())
        settings.JOB_DEFAULT_LANE_LIMIT = 5  # every lane limited: always dispatch()'s job
        assert not queue._claim_at_birth(make(lane="d"), timezone.now())

    def test_a_job_inserted_claimed_only_when_nothing_goes_before_it(self, settings):
        def claimed_job(**fields) -> Job | None:
            """The job inserted, if it was inserted claimed; a pending one must be
            stored as any pending job is."""
            now = timezone.now()
            job = Job(kind="noop", payload={"n": 1}, **fields)
            job.set_priority_rank()
            claim = {k: v for k, v in queue._claimed_fields("t" * 32, now).items() if k in statements.CLAIM_COLUMNS}
            claimed, _ = statements.insert(job, claim, backlog=settings.JOB_DISPATCH_BACKLOG)
            stored = Job.objects.get(pk=job.pk)
            assert (stored.payload, stored.priority_rank, stored.created_at) == (
                {"n": 1},
                job.priority_rank,
                job.created_at,
            )
            if claimed:
                assert (stored.status, stored.lease_token, stored.lease_expires_at, stored.dispatched_at) == (
                    JobStatus.PROCESSING,
                    "t" * 32,
                    claim["lease_expires_at"],
                    now,
                )
                return job
            assert (stored.status, stored.lease_token, stored.lease_expires_at, stored.dispatched_at) == (
                JobStatus.PENDING,
                "",
                None,
                None,
            )
            Job.objects.filter(pk=job.pk).delete()  # (so it does not go before the next)
            return None

        assert claimed_job() is not None
        older = make(priority="high")  # pending and due
        assert claimed_job(priority="high") is None and claimed_job() is None
        assert claimed_job(priority="critical") is not None
        Job.objects.filter(pk=older.pk).update(not_before=timezone.now() + timedelta(minutes=1))
        assert claimed_job(priority="high") is not None
        Lane.objects.create(name="single", concurrency_limit=1)
        assert claimed_job(lane="single") is None
        settings.JOB_DISPATCH_BACKLOG = Job.objects.filter(status=JobStatus.PROCESSING).count()
        assert claimed_job() is None  # the broker backlog is full

    def test_the_dispatch_outlook_is_one_query(self, django_assert_num_queries, settings):
        settings.JOB_DISPATCH_BACKLOG = 10
        with django_assert_num_queries(1):
            assert statements.outlook(timezone.now()) == (False, 0)
        make()
        make(not_before=timezone.now() + timedelta(minutes=1))
        queue.dispatch(limit=1)
        make()
        with django_assert_num_queries(1):
            assert statements.outlook(timezone.now()) == (True, 1)


@pytest.mark.django_db
def test_the_waiting_count_stops_at_the_backlog_and_reads_its_own_index(settings):
    """dispatch() needs the count of jobs in the broker only up to its backlog. On
    PostgreSQL it is read from the partial index job_waiting_idx in id order: a bitmap
    scan of the status index visited every dead row version since the last vacuum."""
    settings.JOB_DISPATCH_BACKLOG = 3
    now = timezone.now()
    Job.objects.bulk_create(
        Job(kind="noop", status=JobStatus.PROCESSING, lease_token="t", dispatched_at=now) for _ in range(5)
    )
    Job.objects.bulk_create([Job(kind="noop", status=JobStatus.PROCESSING, lease_token="t", started_at=now)])
    assert statements.waiting(connection) == 3
    settings.JOB_DISPATCH_BACKLOG = 0  # no backlog: counted in full (up to a large bound)
    assert statements.waiting(connection) == 5
    _, sql = statements._prepared()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET enable_seqscan = off")  # (a tiny table would be scanned whole)
            cursor.execute(f"EXPLAIN SELECT {sql.waiting}", list(statements._waiting_params()))
            plan = "\n".join(row[0] for row in cursor.fetchall())
            cursor.execute("RESET enable_seqscan")
            assert "job_waiting_idx" in plan and "Bitmap" not in plan, plan
        else:  # SQLite keeps no dead row versions: no such index to maintain
            cursor.execute("SELECT count(*) FROM sqlite_master WHERE name = 'job_waiting_idx'")
            assert cursor.fetchone()[0] == 0


@pytest.mark.django_db
def test_the_finishing_statement_answers_dispatch_s_question(settings):
    """The outcome and the queue's outlook in one round trip: the job's own row as
    written (JSON result, timestamps) and what dispatch() would have read after it."""
    settings.JOB_DISPATCH_BACKLOG = 10
    running = make("noop")
    waiting = make("noop")
    queue.dispatch(limit=2)
    Job.objects.filter(pk=running.pk).update(started_at=timezone.now(), attempts=1)
    make("noop")  # due, not dispatched
    job = Job.objects.get(pk=running.pk)
    status, outlook = queue._finish(job, job.lease_token, ok=True, result={"rows": [1, 2], "ok": True})
    assert (status, outlook) == (JobStatus.COMPLETED, (True, 1))
    stored = Job.objects.get(pk=running.pk)
    assert stored.result == {"rows": [1, 2], "ok": True} and stored.finished_at is not None
    assert (stored.status, stored.lease_owner, stored.lease_expires_at) == (JobStatus.COMPLETED, "", None)
    assert Job.objects.get(pk=waiting.pk).status == JobStatus.PROCESSING


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("broker_only")
class TestHeartbeats:
    """One thread per process beats for every job the process runs."""

    def test_a_long_job_keeps_its_lease_and_hears_a_cancel(self, settings):
        settings.JOB_LEASE_SECONDS = 1  # a beat every 0.5 s
        long = make("test.hold", payload={"seconds": 2})
        cancelled = make("test.hold", payload={"seconds": 5})
        ids = queue.dispatch()
        tokens = dict(Job.objects.filter(pk__in=ids).values_list("pk", "lease_token"))
        outcomes = {}

        def run(pk):
            try:
                outcomes[pk] = queue.execute(pk, tokens[pk])
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
        long.refresh_from_db()
        leases = [datetime.fromisoformat(x) for x in long.result["leases"]]
        # Extended several times while it ran, though it ran twice its lease.
        assert len(set(leases)) >= 3 and leases[-1] > leases[0] + timedelta(seconds=1)
        stopped = Job.objects.get(pk=cancelled.pk)
        assert stopped.finished_at - stopped.started_at < timedelta(seconds=3)


@pytest.mark.django_db(transaction=True)
class TestEnqueueOnItsOwn:
    """enqueue() outside a transaction with a broker outside the database (Redis; the
    test suite's inline mode takes the same path): claimed in the statement that
    creates it, or queued pending behind what goes first."""

    def test_with_nothing_before_it_a_job_runs_at_once(self):
        job = queue.enqueue("test.record", {"id": 21})
        stored = Job.objects.get(pk=job.pk)
        assert (stored.status, stored.attempts, stored.result) == (JobStatus.COMPLETED, 1, {"seen": 1})

    def test_behind_an_older_job_it_waits_its_turn(self):
        older = make("test.record", payload={"id": 22})  # pending, never dispatched
        newer = queue.enqueue("test.record", {"id": 23})
        assert [c["id"] for c in CALLS] == [22, 23]  # dispatch() took them in order
        assert set(Job.objects.filter(pk__in=[older.pk, newer.pk]).values_list("status", flat=True)) == {
            JobStatus.COMPLETED
        }
