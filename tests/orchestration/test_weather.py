"""Transient database and cache errors are weather: a job they hit runs again without
losing an attempt, its start and outcome ride out the outage, a claim whose answer the
connection lost is given back, and an SSE stream waits the outage out."""

from __future__ import annotations

import time

import pytest
from django.db import OperationalError, ProgrammingError, connection

from orchestration.core import dbfaults
from orchestration.core.choices import JobStatus
from orchestration.core.jobs import broker, queue
from orchestration.core.jobs.registry import job_kind
from orchestration.core.models import Job, LedgerEntry

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("broker_only")]

NODE = "weather-host:1"
RUNS: list[int] = []


class RedisConnectionError(Exception):
    """What redis-py raises for a server that is down (matched by module and name)."""


RedisConnectionError.__module__ = "redis.exceptions"
RedisConnectionError.__name__ = "ConnectionError"


@job_kind("test.weather", description="Fails as an unreachable database or cache would, while told to.")
def weather(payload: dict, ctx) -> dict:
    RUNS.append(ctx.job.pk)
    if len(RUNS) <= payload.get("storms", 0):
        if payload.get("cache"):
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        raise OperationalError("FATAL:  terminating connection due to administrator command")
    if payload.get("bug") and len(RUNS) == 1:
        raise ProgrammingError("relation does not exist")
    return {"runs": len(RUNS)}


@pytest.fixture(autouse=True)
def _quick(monkeypatch):
    RUNS.clear()
    # Retry at once: the tests count retries, they do not wait them out.
    monkeypatch.setattr(dbfaults, "OUTAGE_POLICY", dbfaults.BackoffPolicy(initial=0.01, factor=1.0, cap=0.01))


def run_once(job: Job) -> str:
    Job.objects.filter(pk=job.pk).update(not_before=None)
    ((job_id, token),) = queue.claim(1, owner=NODE)
    assert job_id == job.pk
    return queue.execute(job_id, token, NODE)


def test_is_weather_knows_database_and_cache_outages_from_bugs():
    assert dbfaults.is_weather(OperationalError("the database system is starting up"))
    assert dbfaults.is_weather(RedisConnectionError("Connection refused"))
    assert not dbfaults.is_weather(ProgrammingError("no such table"))
    assert not dbfaults.is_weather(ConnectionError("a plain OSError from a handler's HTTP call"))
    assert not dbfaults.is_cache_outage(OperationalError("the database system is starting up"))
    # A handler's own connection elsewhere (the driver's error, never through Django).
    driver_error = type("OperationalError", (Exception,), {"__module__": "psycopg"})
    assert dbfaults.is_transient(driver_error("connection refused"))
    assert not dbfaults.is_weather(driver_error("connection refused"))


@pytest.mark.parametrize("cache", [False, True], ids=["database", "cache"])
def test_an_outage_in_the_handler_does_not_use_up_the_last_attempt(cache):
    job = queue.enqueue("test.weather", {"storms": 2, "cache": cache}, max_attempts=1, wake_nodes=False)
    assert run_once(job) == JobStatus.RETRY
    job.refresh_from_db()
    assert job.attempts == 0 and job.status == JobStatus.RETRY  # its only attempt is given back
    assert ("Connection refused" if cache else "terminating connection") in job.error
    assert run_once(job) == JobStatus.RETRY
    assert run_once(job) == JobStatus.COMPLETED
    job.refresh_from_db()
    assert job.attempts == 1 and RUNS == [job.pk] * 3
    assert not LedgerEntry.objects.filter(event_type="job.failed").exists()


def test_a_bug_in_the_handler_still_uses_its_attempt():
    job = queue.enqueue("test.weather", {"bug": True}, max_attempts=1, wake_nodes=False)
    assert run_once(job) == JobStatus.FAILED
    job.refresh_from_db()
    assert job.attempts == 1 and "relation does not exist" in job.error


class Outage:
    """Queries of this thread fail as a restarting server answers: those whose SQL
    matches ``sql``, ``count`` times; ``after=True`` lets the statement run first (the
    commit happened, the answer was lost)."""

    def __init__(self, sql: str | tuple[str, ...], count: int, *, after: bool = False):
        self.sql = (sql,) if isinstance(sql, str) else sql
        self.count, self.after, self.hits = count, after, 0

    def __call__(self, execute, sql, params, many, context):
        if self.count > 0 and any(part in sql for part in self.sql):
            self.count -= 1
            self.hits += 1
            if self.after:
                execute(sql, params, many, context)
            raise OperationalError("server closed the connection unexpectedly")
        return execute(sql, params, many, context)


@pytest.mark.parametrize("lost_answer", [False, True], ids=["refused", "answer-lost"])
def test_the_outcome_is_written_through_an_outage_exactly_once(lost_answer):
    job = queue.enqueue("test.weather", {}, max_attempts=1, wake_nodes=False)
    ((job_id, token),) = queue.claim(1, owner=NODE)
    finished = []
    queue.job_finished.connect(lambda sender, job, **kw: finished.append(job.pk), weak=False, dispatch_uid="w1")
    try:
        outage = Outage('"finished_at" = %s, "lease_expires_at"', 3 if not lost_answer else 1, after=lost_answer)
        with connection.execute_wrapper(outage):
            assert queue.execute(job_id, token, NODE) == JobStatus.COMPLETED
    finally:
        queue.job_finished.disconnect(dispatch_uid="w1")
    assert outage.hits == (3 if not lost_answer else 1)
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED and job.attempts == 1 and job.result == {"runs": 1}
    assert finished == [job.pk] and RUNS == [job.pk]


@pytest.mark.parametrize("lost_answer", [False, True], ids=["refused", "answer-lost"])
def test_the_start_rides_out_an_outage_and_runs_the_job_once(lost_answer):
    job = queue.enqueue("test.weather", {}, max_attempts=1, wake_nodes=False)
    ((job_id, token),) = queue.claim(1, owner=NODE)
    # (On PostgreSQL the start is a prepared statement, executed by name.)
    outage = Outage(
        ('SET "started_at"', "EXECUTE orchestrator_start_job"), 2 if not lost_answer else 1, after=lost_answer
    )
    with connection.execute_wrapper(outage):
        assert queue.execute(job_id, token, NODE) == JobStatus.COMPLETED
    assert outage.hits == (2 if not lost_answer else 1)
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED and job.attempts == 1 and RUNS == [job.pk]


def test_an_outage_longer_than_the_retry_window_is_raised(monkeypatch):
    monkeypatch.setattr(dbfaults, "RETRY_FOR_SECONDS", 0.05)
    job = queue.enqueue("test.weather", {}, wake_nodes=False)
    ((job_id, token),) = queue.claim(1, owner=NODE)
    with (
        connection.execute_wrapper(Outage('"finished_at" = %s, "lease_expires_at"', 10_000)),
        pytest.raises(OperationalError),
    ):
        queue.execute(job_id, token, NODE)
    job.refresh_from_db()
    assert job.status == JobStatus.PROCESSING  # its lease decides: reclaimed, not lost


def test_a_claim_whose_answer_was_lost_is_given_back(monkeypatch):
    job = queue.enqueue("noop", {}, wake_nodes=False)
    monkeypatch.setattr(broker, "node_identity", lambda: NODE)
    monkeypatch.setattr(broker.time, "sleep", lambda seconds: None)
    real_claim = queue.claim

    def claim_then_break(*args, **kwargs):
        real_claim(*args, **kwargs)  # committed…
        raise OperationalError("server closed the connection unexpectedly")  # …answer lost

    node = broker.JobBroker()
    node._heartbeat = type("Beat", (), {"is_alive": lambda self: True})()  # no thread in this test
    monkeypatch.setattr(queue, "claim", claim_then_break)
    assert node.dequeue() is None
    job.refresh_from_db()
    assert job.status == JobStatus.PROCESSING and job.lease_owner == NODE  # held by nobody that knows
    monkeypatch.setattr(queue, "claim", real_claim)
    delivered = node.dequeue()
    assert [job_id for job_id, _ in delivered] == [job.pk]
    assert not node._lost_claims
    job.refresh_from_db()
    assert job.status == JobStatus.PROCESSING and job.attempts == 0


def test_an_event_stream_waits_out_an_outage(settings):
    from pipeline.api.sse import stream
    from pipeline.engine import create_job
    from pipeline.models import PipelineEvent, PipelineJob

    settings.PIPELINE_SSE_POLL_SECONDS = 0.05
    pipeline_job = create_job("weather", "rides out a restart", start=False)
    PipelineEvent.objects.create(job=pipeline_job, type="job_started", stage="")
    PipelineJob.objects.filter(pk=pipeline_job.pk).update(status="completed")
    outage = Outage("pipeline_pipelinejob", 3)
    started = time.monotonic()
    with connection.execute_wrapper(outage):
        chunks = list(stream(pipeline_job.pk, max_seconds=10))
    assert outage.hits == 3 and time.monotonic() - started < 5
    assert any(c.startswith("id: ") and "event: job_started" in c for c in chunks)
    assert chunks[-1].startswith("event: end")


def test_a_request_that_meets_an_outage_answers_503_to_retry_and_writes_nothing(staff_client):
    outage = Outage(('INSERT INTO "orchestration_job"', "EXECUTE orchestrator_insert_job"), 1)
    with connection.execute_wrapper(outage):
        response = staff_client.post("/api/v1/jobs/", {"kind": "noop"}, format="json", HTTP_IDEMPOTENCY_KEY="outage-1")
    assert outage.hits == 1
    assert response.status_code == 503 and response["Retry-After"] == "1"
    assert "retry" in response.json()["detail"]
    assert not Job.objects.exists()
    retried = staff_client.post("/api/v1/jobs/", {"kind": "noop"}, format="json", HTTP_IDEMPOTENCY_KEY="outage-1")
    assert retried.status_code == 201 and Job.objects.count() == 1
