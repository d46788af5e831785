"""A claimed batch travels to the workers as one package per worker process: each
package's jobs run in turn, a long one gives the rest back to the queue, and the
unstarted jobs of a worker process that died go back at once."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from django_q.conf import Conf
from django_q.signing import SignedPackage

from orchestration.core.choices import JobStatus
from orchestration.core.jobs import broker, queue
from orchestration.core.jobs.broker import EXECUTE, EXECUTE_CHUNK, JobBroker, RunningJobs, node_identity
from orchestration.core.jobs.registry import job_kind
from orchestration.core.jobs.tasks import execute_jobs
from orchestration.core.models import Job

pytestmark = pytest.mark.usefixtures("broker_only")


@job_kind("test.stopped", description="Stopped by the cluster's time limit as it runs.")
def stopped(payload: dict, ctx) -> dict:
    raise SystemExit("time limit")


@pytest.fixture(autouse=True)
def _no_heartbeat_thread(monkeypatch):
    """These tests beat the heartbeat themselves."""
    monkeypatch.setattr(broker._Heartbeat, "start", lambda self: None)


def _jobs(n: int, kind: str = "noop", **kw) -> list[Job]:
    return [queue.enqueue(kind, kw.get("payload", {}), wake_nodes=False) for _ in range(n)]


def _claims(package: str) -> tuple[str, list[tuple[int, str]], str]:
    task = SignedPackage.loads(package)
    if task["func"] == EXECUTE:
        job_id, token, node = task["args"]
        return task["func"], [(job_id, token)], node
    claims, node = task["args"]
    return task["func"], list(claims), node


@pytest.mark.django_db
def test_a_batch_becomes_one_package_per_worker_interleaved_in_queue_order(monkeypatch):
    monkeypatch.setattr(Conf, "BULK", 5)
    monkeypatch.setattr(Conf, "WORKERS", 2)
    jobs = _jobs(5)
    packages = JobBroker().dequeue()
    assert len(packages) == 2
    unpacked = [_claims(p) for _, p in packages]
    assert [func for func, _, _ in unpacked] == [EXECUTE_CHUNK, EXECUTE_CHUNK]
    ids = [[job_id for job_id, _ in claims] for _, claims, _ in unpacked]
    # The first jobs in queue order start first, one on each worker.
    assert ids == [[jobs[0].pk, jobs[2].pk, jobs[4].pk], [jobs[1].pk, jobs[3].pk]]
    assert [ack for ack, _ in packages] == [jobs[0].pk, jobs[1].pk]
    assert {node for _, _, node in unpacked} == {node_identity()}


@pytest.mark.django_db
def test_one_claimed_job_is_a_package_of_its_own(monkeypatch):
    monkeypatch.setattr(Conf, "WORKERS", 2)
    (job,) = _jobs(1)
    ((ack, package),) = JobBroker().dequeue()
    func, claims, _ = _claims(package)
    assert (ack, func, [pk for pk, _ in claims]) == (job.pk, EXECUTE, [job.pk])


@pytest.mark.django_db
def test_a_chunk_runs_each_of_its_jobs_once(monkeypatch):
    monkeypatch.setattr(Conf, "BULK", 6)
    monkeypatch.setattr(Conf, "WORKERS", 2)
    jobs = _jobs(6)
    for _, package in JobBroker().dequeue():
        _, claims, node = _claims(package)
        assert execute_jobs(tuple(claims), node) == [JobStatus.COMPLETED] * len(claims)
    done = Job.objects.filter(pk__in=[j.pk for j in jobs])
    assert set(done.values_list("status", "attempts")) == {(JobStatus.COMPLETED, 1)}


@pytest.mark.django_db(transaction=True)
def test_the_rest_of_a_chunk_goes_back_to_the_queue_behind_a_long_job(monkeypatch):
    monkeypatch.setattr(broker, "CHUNK_WAIT_SECONDS", 0.2)
    monkeypatch.setattr(Conf, "BULK", 3)
    monkeypatch.setattr(Conf, "WORKERS", 1)
    slow = queue.enqueue("sleep", {"seconds": 0.8}, wake_nodes=False, priority="high")
    rest = _jobs(2)
    ((_, package),) = JobBroker().dequeue()
    _, claims, node = _claims(package)
    assert [pk for pk, _ in claims] == [slow.pk, rest[0].pk, rest[1].pk]
    began = time.monotonic()
    assert execute_jobs(tuple(claims), node) == [JobStatus.COMPLETED]
    assert time.monotonic() - began >= 0.8
    slow.refresh_from_db()
    assert slow.status == JobStatus.COMPLETED
    # The two waiting jobs were given back unstarted, no attempt used, for any worker.
    waiting = Job.objects.filter(pk__in=[j.pk for j in rest])
    assert set(waiting.values_list("status", "attempts", "lease_owner")) == {(JobStatus.PENDING, 0, "")}
    assert sorted(pk for pk, _ in queue.claim(5, owner="another-node:1")) == sorted(j.pk for j in rest)


@pytest.mark.django_db
def test_short_jobs_keep_their_chunk(monkeypatch):
    monkeypatch.setattr(broker, "CHUNK_WAIT_SECONDS", 5.0)
    monkeypatch.setattr(Conf, "BULK", 3)
    monkeypatch.setattr(Conf, "WORKERS", 1)
    jobs = _jobs(3)
    ((_, package),) = JobBroker().dequeue()
    _, claims, node = _claims(package)
    assert execute_jobs(tuple(claims), node) == [JobStatus.COMPLETED] * 3
    assert set(Job.objects.filter(pk__in=[j.pk for j in jobs]).values_list("status", flat=True)) == {
        JobStatus.COMPLETED
    }


@pytest.mark.django_db
def test_a_worker_stopped_mid_chunk_gives_the_rest_back(monkeypatch):
    """django-q2 stops a worker over its time limit with SystemExit: the job it ran is
    failed as stopped, and the jobs behind it do not wait out a lease."""
    monkeypatch.setattr(Conf, "BULK", 3)
    monkeypatch.setattr(Conf, "WORKERS", 1)
    jobs = [queue.enqueue("test.stopped", {}, wake_nodes=False, priority="high"), *_jobs(2)]
    ((_, package),) = JobBroker().dequeue()
    _, claims, node = _claims(package)
    with pytest.raises(SystemExit):
        execute_jobs(tuple(claims), node)
    first, *others = (Job.objects.get(pk=j.pk) for j in jobs)
    assert first.attempts == 1 and "stopped" in first.error
    assert [(j.status, j.attempts, j.lease_token) for j in others] == [(JobStatus.PENDING, 0, "")] * 2


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_gives_back_the_unstarted_jobs_of_a_dead_worker_process(monkeypatch):
    monkeypatch.setattr(Conf, "BULK", 3)
    monkeypatch.setattr(Conf, "WORKERS", 1)
    running = RunningJobs()
    monkeypatch.setattr(broker, "_running", running)
    jobs = _jobs(3)
    ((_, package),) = JobBroker().dequeue()
    _, claims, node = _claims(package)
    # A worker process took the chunk, started its first job, and died (kill -9).
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    started = queue._start(claims[0][0], claims[0][1], f"{node}/{dead.pid}")
    assert started is not None
    lease = started.lease_expires_at
    with running._slots.get_lock():
        for i, (job_id, _) in enumerate(claims):
            running._slots[2 * i], running._slots[2 * i + 1] = dead.pid, job_id
    live = RunningJobs.add(running, 999_999)  # a live process's job is not touched

    broker._Heartbeat(node).beat()

    first, *others = (Job.objects.get(pk=j.pk) for j in jobs)
    # The started job keeps its lease to run out (its attempt counted), then is reclaimed.
    assert first.status == JobStatus.PROCESSING and first.started_at is not None
    assert first.lease_expires_at == lease
    assert [(j.status, j.lease_owner) for j in others] == [(JobStatus.PENDING, "")] * 2
    alive, dead_ids = running.sweep()
    assert (alive, dead_ids) == ([999_999], [])  # the dead process's slots were freed
    running.remove(live)
