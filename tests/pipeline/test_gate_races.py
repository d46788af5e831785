"""A late decision racing the gate's timeout: one outcome, and the loser is told (409)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from pipeline import engine, gates
from pipeline import transitions as t
from pipeline.models import GateDecision, PipelineDefinition, PipelineJob

pytestmark = pytest.mark.django_db(transaction=True)


def _race(*targets) -> list:
    """Run each target in its own thread (own DB connection), all starting together."""
    barrier = threading.Barrier(len(targets))
    results: list = [None] * len(targets)

    def run(i):
        try:
            barrier.wait()
            results[i] = targets[i]()
        except Exception as exc:  # the loser's answer is part of what the test checks
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(targets))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_a_late_approval_and_the_reject_timeout_never_both_win(settings):
    settings.PIPELINE_PLACEHOLDER_SECONDS = 0
    definition = PipelineDefinition.objects.create(
        name="raced",
        stages=["draft", "review", "publish"],
        gates={"review": {"required": True, "timeout_minutes": 1, "on_timeout": "reject"}},
        stage_timeouts={"draft": 5, "review": 5, "publish": 5},
    )
    outcomes = set()
    for round_ in range(8):
        job = engine.create_job(f"race-{round_}", definition=definition, actor="starter")
        job.refresh_from_db()
        assert (job.status, job.stage) == (t.NEEDS_APPROVAL, "review")
        PipelineJob.objects.filter(pk=job.pk).update(gate_deadline=timezone.now() - timedelta(seconds=1))
        pk, run, ann = job.pk, job.stage_run, gates.Person("ann", can_approve=True)
        person, timeout = _race(
            lambda pk=pk, ann=ann: engine.decide(pk, "review", "approve", person=ann),
            lambda pk=pk, run=run: engine.settle_timeout(pk, "review", run, now=timezone.now()),
        )
        job.refresh_from_db()
        settled = GateDecision.objects.filter(job=job, settles=True)
        assert settled.count() == 1, (person, timeout)
        if isinstance(person, Exception):
            # The timeout went first: the person is told the job no longer waits.
            assert isinstance(person, t.TransitionError) and timeout == "reject"
            assert job.status == t.PAUSED and settled.get().automatic
            outcomes.add("timeout")
        else:
            assert timeout is None and settled.get().decided_by == "ann"
            assert job.status in (t.RUNNING, t.COMPLETED)
            outcomes.add("person")
    assert outcomes  # both orders are legal; each round had exactly one winner
