"""Django's Tasks API end to end: @task functions enqueued here run on a real cluster,
and a task whose node is killed (SIGKILL) mid-run runs again on another node, not lost."""

from __future__ import annotations

import pytest
from django.conf import settings
from django_tasks import TaskResultStatus, default_task_backend

from examples.tasks_demo.tasks import build_report, send_welcome
from orchestration.core.choices import JobStatus
from orchestration.core.models import Job
from tests.support.processes import manage, running, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_tasks_run_on_the_cluster_and_survive_a_killed_node(tmp_path, broker_only):
    slow = build_report.enqueue("e2e-slow", seconds=4)
    quick = [send_welcome.enqueue(f"user{i}@example.org") for i in range(5)]
    slow_job = Job.objects.filter(pk=int(slow.id))
    env = {"JOB_LEASE_SECONDS": "3", "Q_WORKERS": "2"}
    with running(("node-a", manage("qcluster")), log_dir=tmp_path, **env) as (node_a,):
        wait_for(
            lambda: slow_job.filter(status=JobStatus.PROCESSING, started_at__isnull=False).exists(),
            timeout=60,
            message="the slow task to start on node-a",
            alive=[node_a],
        )
        node_a_pids = node_a.descendants()
        owner = slow_job.values_list("lease_owner", flat=True).get()
        node_a.kill_group()
    # The slow task was running on the node that was killed, in its first attempt.
    assert int(owner.split(":")[1].split("/")[0]) in node_a_pids
    assert slow_job.get().attempts == 1
    with running(("node-b", manage("qcluster")), log_dir=tmp_path, **env) as (node_b,):
        wait_for(
            lambda: slow_job.filter(status=JobStatus.COMPLETED).exists(),
            timeout=60,
            message="the slow task to run again on node-b",
            alive=[node_b],
        )
        for result in quick:
            wait_for(lambda r=result: Job.objects.filter(pk=int(r.id), status=JobStatus.COMPLETED).exists(), 30)
    slow.refresh()
    assert slow.status == TaskResultStatus.SUCCESSFUL and slow.return_value == "report e2e-slow built"
    assert slow.attempts == 2
    # The killed attempt never got as far as its side effect; the second did, once.
    assert (settings.RUNS_DIR / "reports" / "e2e-slow").read_text() == "attempt 2\n"
    for i, result in enumerate(quick):
        got = default_task_backend.get_result(result.id)
        assert got.status == TaskResultStatus.SUCCESSFUL
        assert got.return_value.startswith(f"welcome sent to user{i}@example.org")
