"""django-q2's broker on the Job table: what django-q2 queues becomes a job, and
dequeue claims jobs directly."""

from __future__ import annotations

import pytest
from django.core import signing
from django_q.conf import Conf
from django_q.signing import PickleSerializer, SignedPackage
from django_q.tasks import async_task

from orchestration.core.choices import JobStatus
from orchestration.core.jobs import queue
from orchestration.core.jobs.broker import EXECUTE, TASK_KIND, JobBroker, node_identity
from orchestration.core.models import Job

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("broker_only")]


@pytest.fixture(autouse=True)
def _no_heartbeat_thread(monkeypatch):
    """dequeue() starts the node's lease heartbeat, a thread that would outlive the test
    and reclaim leases in the tests after it; these tests drive the queue themselves."""
    from orchestration.core.jobs import broker

    monkeypatch.setattr(broker._Heartbeat, "start", lambda self: None)


def test_the_cluster_is_configured_with_this_broker():
    from django_q.brokers import get_broker

    assert isinstance(get_broker(), JobBroker)
    assert Conf.BROKER_CLASS == "orchestration.core.jobs.broker.JobBroker"


def test_an_async_task_becomes_a_durable_job_that_runs_its_function(settings, tmp_path):
    settings.RUNS_DIR = tmp_path
    async_task("orchestration.core.jobs.kinds.mark_schedule", "broker-test")
    job = Job.objects.get(kind=TASK_KIND)
    assert job.status == JobStatus.PENDING
    assert job.payload["func"] == "orchestration.core.jobs.kinds.mark_schedule"
    assert "broker-test" in job.payload["args"]
    broker = JobBroker()
    ((ack_id, package),) = broker.dequeue()
    assert ack_id == job.pk
    task = SignedPackage.loads(package)
    assert task["func"] == EXECUTE and task["args"][0] == job.pk and task["save"] is False
    job.refresh_from_db()
    assert job.status == JobStatus.PROCESSING and job.lease_owner == node_identity()
    # What a cluster worker does with the package.
    from orchestration.core.jobs.tasks import execute_job

    assert execute_job(*task["args"]) == JobStatus.COMPLETED
    job.refresh_from_db()
    assert job.result == {"result": "fired"}
    assert (tmp_path / "marks" / "broker-test").read_text() == "fired\n"


def test_dequeue_takes_a_batch_in_queue_order_and_nothing_twice(monkeypatch):
    monkeypatch.setattr(Conf, "BULK", 3)
    low = queue.enqueue("noop", priority="low", wake_nodes=False)
    normal = [queue.enqueue("noop", wake_nodes=False) for _ in range(3)]
    critical = queue.enqueue("noop", priority="critical", wake_nodes=False)
    broker = JobBroker()
    first, second = _job_ids(broker.dequeue()), _job_ids(broker.dequeue())
    assert sorted(first) == sorted([critical.pk, normal[0].pk, normal[1].pk])
    assert second == [normal[2].pk] or sorted(second) == sorted([normal[2].pk, low.pk])
    assert not set(first) & set(second)


def _job_ids(packages) -> list[int]:
    """The jobs a dequeue delivered: one per package, or a chunk of several."""
    ids = []
    for _, package in packages:
        task = SignedPackage.loads(package)
        ids += [task["args"][0]] if task["func"] == EXECUTE else [job_id for job_id, _ in task["args"][0]]
    return ids


def test_an_empty_queue_dequeues_nothing_after_a_short_wait(settings):
    settings.JOB_POLL_SECONDS = 0.01
    assert JobBroker().dequeue() is None


def test_a_package_signed_with_another_key_does_not_run(tmp_path, settings):
    """A task package written into the queue by anyone without this install's key is
    a permanent failure: its function is never called."""
    settings.RUNS_DIR = tmp_path
    forged = signing.dumps(
        {"func": "orchestration.core.jobs.kinds.append_mark", "args": ("forged", "x"), "kwargs": {}},
        key="not-this-installation-s-key",
        salt=Conf.PREFIX,
        serializer=PickleSerializer,
    )
    job = queue.enqueue(TASK_KIND, {"func": "x", "package": forged}, wake_nodes=False)
    ((pk, token),) = queue.claim(1, owner="n:1")
    assert queue.execute(pk, token) == JobStatus.FAILED
    job.refresh_from_db()
    assert "signature" in job.error and job.attempts == 1
    assert not (tmp_path / "marks" / "forged").exists()


def test_clients_cannot_queue_django_q_tasks(staff_client):
    response = staff_client.post("/api/v1/jobs/", {"kind": TASK_KIND, "payload": {}}, format="json")
    assert response.status_code == 400 and "kind" in response.json()
    assert not Job.objects.filter(kind=TASK_KIND).exists()


@pytest.mark.django_db(transaction=True)
def test_a_scheduled_firing_is_a_job_committed_with_the_schedule(settings, tmp_path):
    from datetime import timedelta

    from django.utils import timezone
    from django_q.models import Schedule

    from orchestration.loop.runner import fire_due_schedules

    settings.RUNS_DIR = tmp_path
    Schedule.objects.create(
        name="broker-test",
        func="orchestration.core.jobs.kinds.mark_schedule",
        args="'sched'",
        schedule_type=Schedule.MINUTES,
        minutes=60,
        next_run=timezone.now() - timedelta(seconds=1),
    )
    fire_due_schedules()
    job = Job.objects.get(kind=TASK_KIND, payload__func="orchestration.core.jobs.kinds.mark_schedule")
    assert job.status == JobStatus.PENDING
    assert Schedule.objects.get(name="broker-test").next_run > timezone.now()
    fire_due_schedules()  # not due again: no second job
    assert Job.objects.filter(kind=TASK_KIND, payload__func="orchestration.core.jobs.kinds.mark_schedule").count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_schedule_naming_undeclared_code_fails_without_running_it(settings, tmp_path):
    """A schedule's function is editable in django-q2's admin: a path nobody declared
    runnable is a permanent failure of its job, and the code never runs."""
    from datetime import timedelta

    from django.utils import timezone
    from django_q.models import Schedule

    from orchestration.loop.runner import fire_due_schedules

    target = tmp_path / "should-not-exist"
    Schedule.objects.create(
        name="attack",
        func="orchestration.management.commands.bootstrap.call_command",
        args="'shell'",
        kwargs=f"command={f'open({str(target)!r}, chr(119)).write(chr(120))'!r}",
        schedule_type=Schedule.ONCE,
        next_run=timezone.now() - timedelta(seconds=1),
    )
    fire_due_schedules()
    job = Job.objects.get(kind=TASK_KIND, payload__func="orchestration.management.commands.bootstrap.call_command")
    ((pk, token),) = [(p, t) for p, t in queue.claim(50, owner="n:1") if p == job.pk]
    assert queue.execute(pk, token) == JobStatus.FAILED
    job.refresh_from_db()
    assert "runnable" in job.error or "declared" in job.error
    assert not target.exists()


@pytest.mark.django_db(transaction=True)
def test_a_new_job_wakes_listening_nodes_when_it_commits():
    """On PostgreSQL the enqueue's own INSERT sends the NOTIFY idle nodes LISTEN for,
    delivered at commit: not before, and not lost."""
    from django.db import connection, transaction

    if connection.vendor != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; SQLite nodes poll")
    import psycopg

    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True) as listener:
        listener.execute(f"LISTEN {queue.NOTIFY_CHANNEL}")

        def heard(timeout: float) -> int:
            return sum(1 for _ in listener.notifies(timeout=timeout, stop_after=1))

        with transaction.atomic():
            queue.enqueue("noop")
            assert heard(0.2) == 0  # not yet committed
        assert heard(2.0) == 1
        queue.enqueue("noop", wake_nodes=False)
        assert heard(0.2) == 0  # a caller queueing many wakes the nodes once itself
        queue.enqueue("noop")
        assert heard(2.0) == 1
