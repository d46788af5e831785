"""Django's Tasks API on the orchestrator's queue: the API's documented behaviours
against OrchestratorBackend, on the real database."""

from __future__ import annotations

from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from django_tasks import TaskResultStatus, default_task_backend, task_backends
from django_tasks.exceptions import InvalidTaskError, TaskResultDoesNotExist

from examples.tasks_demo.tasks import build_report, count_ledger_events, send_welcome
from orchestration.core.choices import JobStatus
from orchestration.core.jobs import queue
from orchestration.core.jobs.django_tasks import KIND, OrchestratorBackend, queue_priority
from orchestration.core.models import Job

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("broker_only")]
TASKS = "examples.tasks_demo.tasks"


def run_all() -> list[str]:
    """What a cluster node does: claim what is due and run it."""
    return [queue.execute(pk, token) for pk, token in queue.claim(50, owner="test:1")]


def test_the_default_backend_is_the_orchestrator():
    assert isinstance(task_backends["default"], OrchestratorBackend)
    assert default_task_backend.supports_defer and default_task_backend.supports_get_result


def test_enqueue_creates_a_durable_job_with_the_task_s_path_and_arguments():
    result = send_welcome.enqueue("ada@example.org")
    job = Job.objects.get(pk=int(result.id))
    assert job.kind == KIND and job.status == JobStatus.PENDING
    assert job.payload["path"] == "examples.tasks_demo.tasks.send_welcome"
    assert job.payload["args"] == ["ada@example.org"] and job.payload["kwargs"] == {}
    assert job.lane == "emails" and job.priority == "high"  # @task(priority=50, queue_name="emails")
    assert result.status == TaskResultStatus.READY and not result.is_finished


@pytest.mark.parametrize(
    "task_priority,expected",
    [(-100, "low"), (-1, "low"), (0, "normal"), (49, "normal"), (50, "high"), (89, "high"), (90, "critical")],
)
def test_priorities_map_onto_the_four_queue_priorities(task_priority, expected):
    assert queue_priority(task_priority) == expected
    result = count_ledger_events.using(priority=task_priority).enqueue()
    assert Job.objects.get(pk=int(result.id)).priority == expected


def test_priority_order_is_kept_by_the_queue():
    low = count_ledger_events.using(priority=-10).enqueue()
    urgent = count_ledger_events.using(priority=95).enqueue()
    first = queue.claim(1, owner="test:1")
    assert first[0][0] == int(urgent.id) != int(low.id)


def test_run_after_holds_the_job_back():
    later = timezone.now() + timedelta(minutes=5)
    result = count_ledger_events.using(run_after=later).enqueue()
    assert Job.objects.get(pk=int(result.id)).not_before == later
    assert run_all() == []
    assert default_task_backend.get_result(result.id).task.run_after == later


def test_queues_are_lanes_and_an_unknown_queue_is_refused():
    result = count_ledger_events.using(queue_name="default").enqueue(hours=1)
    assert Job.objects.get(pk=int(result.id)).lane == "default"
    with pytest.raises(InvalidTaskError):
        count_ledger_events.using(queue_name="nowhere").enqueue()
    assert Job.objects.filter(kind=KIND).count() == 1


def test_arguments_must_be_json():
    with pytest.raises((InvalidTaskError, TypeError)):
        send_welcome.enqueue(object())
    assert not Job.objects.filter(kind=KIND).exists()


def test_a_result_carries_the_return_value_and_the_context_s_attempt():
    result = send_welcome.enqueue("ada@example.org")
    assert run_all() == [JobStatus.COMPLETED]
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.is_finished
    assert result.return_value == "welcome sent to ada@example.org (attempt 1)"
    assert result.attempts == 1 and result.started_at and result.finished_at
    again = default_task_backend.get_result(result.id)
    assert again.return_value == result.return_value and again.args == ["ada@example.org"]


def test_an_exception_is_retried_then_reported_with_its_class():
    result = send_welcome.enqueue("not-an-address")
    start = timezone.now()
    with pytest.MonkeyPatch.context():
        import time_machine

        with time_machine.travel(start, tick=False) as clock:
            assert run_all() == [JobStatus.RETRY]
            result.refresh()
            assert result.status == TaskResultStatus.READY  # to be run again
            assert result.errors[-1].exception_class is ValueError
            for _ in range(2):
                clock.shift(60)
                run_all()
    result.refresh()
    assert result.status == TaskResultStatus.FAILED and result.attempts == 3
    assert result.errors[-1].exception_class_path == "builtins.ValueError"
    assert "not an e-mail address" in result.errors[-1].traceback
    with pytest.raises(ValueError):
        result.return_value  # noqa: B018


def test_a_canceled_job_reads_as_failed():
    result = count_ledger_events.enqueue()
    queue.cancel(Job.objects.get(pk=int(result.id)), actor="ops")
    assert default_task_backend.get_result(result.id).status == TaskResultStatus.FAILED


def test_unknown_results_do_not_exist():
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result("999999")
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result("not-a-number")
    other = queue.enqueue("noop", wake_nodes=False)
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(str(other.pk))


@pytest.mark.django_db(transaction=True)
def test_enqueue_commits_or_rolls_back_with_the_caller_s_transaction():
    user_model = get_user_model()
    with pytest.raises(RuntimeError), transaction.atomic():
        user_model.objects.create_user("temporary")
        send_welcome.enqueue("temporary@example.org")
        raise RuntimeError("the caller's work failed")
    assert not user_model.objects.filter(username="temporary").exists()
    assert not Job.objects.filter(kind=KIND).exists()  # the task never saw uncommitted data
    with transaction.atomic():
        user_model.objects.create_user("kept")
        result = send_welcome.enqueue("kept@example.org")
    assert Job.objects.filter(pk=int(result.id)).exists()


@pytest.mark.django_db(transaction=True)
def test_aenqueue_and_aget_result():
    async def go():
        result = await send_welcome.aenqueue("async@example.org")
        fetched = await default_task_backend.aget_result(result.id)
        return result, fetched

    result, fetched = async_to_sync(go)()
    assert fetched.id == result.id and fetched.status == TaskResultStatus.READY
    assert run_all() == [JobStatus.COMPLETED]
    assert task_backends["default"].get_result(result.id).return_value.startswith("welcome sent to async@")


def test_a_path_that_is_no_longer_a_task_fails_without_running(settings, tmp_path):
    settings.RUNS_DIR = tmp_path
    result = build_report.enqueue("kept")
    Job.objects.filter(pk=int(result.id)).update(
        payload={"path": "orchestration.management.commands.bootstrap.call_command", "args": ["shell"]}
    )
    assert run_all() == [JobStatus.FAILED]
    job = Job.objects.get(pk=int(result.id))
    assert "not a function decorated with @task" in job.error and job.attempts == 1
    assert not (tmp_path / "reports").exists()


class TestThroughTheApi:
    def test_only_registered_tasks_are_accepted(self, staff_user):
        from rest_framework.test import APIClient

        staff_user.is_superuser = True
        staff_user.save()
        client = APIClient()
        client.force_authenticate(staff_user)
        bad = client.post(
            "/api/v1/jobs/",
            {"kind": KIND, "payload": {"path": "builtins.print", "args": ["x"]}},
            format="json",
        )
        assert bad.status_code == 400 and "path" in bad.json()["payload"]
        good = client.post(
            "/api/v1/jobs/",
            {
                "kind": KIND,
                "payload": {"path": "examples.tasks_demo.tasks.count_ledger_events", "kwargs": {"hours": 2}},
            },
            format="json",
        )
        assert good.status_code == 201, good.content
        assert default_task_backend.get_result(str(good.json()["id"])).kwargs == {"hours": 2}

    def test_queuing_a_task_needs_the_run_code_permission(self, staff_client):
        response = staff_client.post(
            "/api/v1/jobs/",
            {"kind": KIND, "payload": {"path": "examples.tasks_demo.tasks.count_ledger_events"}},
            format="json",
        )
        assert response.status_code == 403
        assert not Job.objects.filter(kind=KIND).exists()


def test_task_jobs_are_seen_like_any_job_by_the_loop_the_admin_and_the_ledger(admin_client):
    """The snapshot the loop's rules and the health score read counts them, the admin
    shows them, and a failure is in the ledger like any job's."""
    from orchestration.core.models import LedgerEntry
    from orchestration.loop.monitor import build_snapshot

    before = build_snapshot()["jobs"]["pending"]
    result = count_ledger_events.enqueue()
    assert build_snapshot()["jobs"]["pending"] == before + 1
    page = admin_client.get(f"/admin/orchestration/job/{result.id}/change/")
    assert page.status_code == 200 and "examples.tasks_demo.tasks.count_ledger_events" in page.content.decode()
    failing = send_welcome.using(priority=0).enqueue("nope")
    Job.objects.filter(pk=int(failing.id)).update(max_attempts=1)
    run_all()
    assert LedgerEntry.objects.filter(event_type="job.failed", subject=f"job:{failing.id}").exists()
