"""End to end: a real qcluster and a real loop runner, sharing the test database."""

from __future__ import annotations

import itertools

import pytest

from orchestration.core.choices import JobStatus
from orchestration.core.jobs import queue
from orchestration.core.models import Job, Lane, LedgerEntry
from orchestration.loop.models import LoopState
from tests.support.processes import manage, running, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_cluster_runs_jobs_and_the_loop_cycles_and_reclaims(tmp_path, broker_only):
    LoopState.get()
    Lane.objects.create(name="single", concurrency_limit=1)
    ok = [queue.enqueue("noop", {}, wake_nodes=False) for _ in range(20)]
    flaky = queue.enqueue("fail", {"message": "always"}, max_attempts=2, wake_nodes=False)
    single = [queue.enqueue("sleep", {"seconds": 0.3}, lane="single", wake_nodes=False) for _ in range(3)]
    # A job "held" by a worker that died: its lease is long expired.
    from datetime import timedelta

    from django.utils import timezone

    dead = Job.objects.create(
        kind="noop",
        status=JobStatus.PROCESSING,
        lease_token="dead",
        attempts=1,
        started_at=timezone.now() - timedelta(minutes=5),
        lease_expires_at=timezone.now() - timedelta(minutes=4),
    )
    with running(
        ("cluster", manage("qcluster")),
        ("loop", manage("run_orchestrator")),
        log_dir=tmp_path,
    ):
        all_ids = [j.pk for j in (*ok, flaky, *single, dead)]
        wait_for(
            lambda: (
                not Job.objects.filter(pk__in=all_ids)
                .exclude(status__in=(JobStatus.COMPLETED, JobStatus.FAILED))
                .exists()
                and Job.objects.get(pk=flaky.pk).auto_retries == 1
            ),
            timeout=60,
            message="every job to finish",
        )
        wait_for(lambda: LoopState.get().cycle_count >= 3, timeout=20, message="three loop cycles")

    assert Job.objects.filter(pk__in=[j.pk for j in ok], status=JobStatus.COMPLETED).count() == 20
    flaky.refresh_from_db()
    # Two attempts of its own, then the loop's recent-failures rule gave it one more.
    assert flaky.status == JobStatus.FAILED and flaky.attempts == 3 and flaky.auto_retries == 1
    dead.refresh_from_db()
    assert dead.status == JobStatus.COMPLETED and dead.attempts == 2
    # The single lane never ran two jobs at once.
    spans = sorted(Job.objects.filter(lane="single").values_list("started_at", "finished_at"))
    for (_, first_end), (second_start, _) in itertools.pairwise(spans):
        assert second_start >= first_end
    kinds = set(LedgerEntry.objects.values_list("event_type", flat=True))
    assert {"jobs.reclaimed", "job.failed", "orchestrator.action_executed"} <= kinds
    assert kinds & {"orchestrator.cycle_idle", "orchestrator.cycle_completed"}
    state = LoopState.get()
    assert state.runner_seen_at is None  # the runner said goodbye on SIGTERM
