"""Cadence as django-q2 schedules: kept in sync with the worker row, fired once per due time."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from django_q.models import Schedule

from orchestration.core.models import Job
from orchestration.fleet.models import Worker, WorkerRun
from orchestration.fleet.runner import scheduled_run
from orchestration.fleet.sync import SCHEDULE_FUNC


def schedule_of(name: str) -> Schedule | None:
    rows = list(Schedule.objects.filter(name=f"worker:{name}"))
    assert len(rows) <= 1, "schedule names must stay unique"
    return rows[0] if rows else None


def test_the_schedule_follows_the_worker_row(make_worker):
    worker = make_worker(interval_seconds=900)
    schedule = schedule_of("collector")
    assert (schedule.schedule_type, schedule.minutes, schedule.func) == (
        "I",
        15,
        "orchestration.fleet.runner.scheduled_run",
    )
    assert schedule.intended_date_kwarg == "due_at" and schedule.args == "'collector'"
    assert schedule.next_run.minute % 15 == 0 and schedule.next_run > timezone.now()

    # Saving an unrelated field keeps the pending due time.
    due = schedule.next_run
    worker.description = "polls"
    worker.save()
    assert schedule_of("collector").next_run == due

    worker.interval_seconds, worker.cron = None, "5 * * * *"
    worker.save()
    schedule = schedule_of("collector")
    assert (schedule.schedule_type, schedule.cron, schedule.next_run.minute) == ("C", "5 * * * *", 5)

    worker.enabled = False
    worker.save()
    assert schedule_of("collector") is None
    worker.enabled = True
    worker.save()
    assert schedule_of("collector") is not None
    worker.delete()
    assert schedule_of("collector") is None


def test_on_demand_workers_have_no_schedule(make_worker):
    make_worker("generation", category="generation", execution_model="on_demand", interval_seconds=None)
    assert schedule_of("generation") is None


def test_a_due_time_fired_twice_makes_one_run(make_worker):
    worker = make_worker()
    due = "2026-03-10T10:15:00+00:00"
    scheduled_run("collector", due_at=due)
    scheduled_run("collector", due_at=due)
    runs = WorkerRun.objects.filter(worker=worker)
    assert runs.count() == 1 and runs.get().trigger == "schedule"
    scheduled_run("collector", due_at="2026-03-10T10:30:00+00:00")
    assert runs.count() == 2


@pytest.mark.django_db(transaction=True)
def test_two_schedulers_racing_fire_a_due_schedule_exactly_once(make_worker, broker_only):
    """Two cluster schedulers look at the same due row at the same moment: django-q2
    locks due rows, and the (worker, due_at) constraint backs it up."""
    from django_q.brokers import get_broker
    from django_q.scheduler import scheduler

    from orchestration.core.jobs.broker import TASK_KIND

    make_worker()
    due = timezone.now().replace(microsecond=0) - timedelta(seconds=1)
    Schedule.objects.filter(name="worker:collector").update(next_run=due)
    barrier = threading.Barrier(2)
    errors = []

    def fire() -> None:
        try:
            barrier.wait()
            scheduler(broker=get_broker())
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=fire) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert Schedule.objects.get(name="worker:collector").next_run > due
    # Exactly one run for that due time, committed with the schedule's new next_run,
    # with its job queued: the firing needs no second job of its own.
    fired = WorkerRun.objects.get(worker__name="collector", due_at=due)
    assert fired.trigger == "schedule" and fired.job is not None
    assert not Job.objects.filter(kind=TASK_KIND, payload__func=SCHEDULE_FUNC).exists()
    # A late second firing of the same due time yields no second run.
    for _ in range(2):
        scheduled_run("collector", due_at=due.isoformat())
    assert WorkerRun.objects.filter(worker__name="collector", due_at=due).count() == 1


def test_builtin_workers_exist_with_their_schedules(db):
    names = set(Worker.objects.filter(builtin=True).values_list("name", flat=True))
    assert names == {
        "ledger-retention",
        "job-retention",
        "check-history-retention",
        "stale-run-cleanup",
        "score-rollup-hourly",
        "score-rollup-daily",
    }
    assert all(schedule_of(n) is not None for n in names)


def test_a_retired_builtin_worker_is_removed_with_its_schedule(make_worker):
    """The health sweep was also a built-in worker; its trigger is the loop runner's tick now."""
    from orchestration.fleet.builtins import ensure_builtin_workers

    make_worker("health-sweep", builtin=True)
    make_worker("mine")
    assert schedule_of("health-sweep") is not None
    ensure_builtin_workers()  # as every migrate does
    assert not Worker.objects.filter(name="health-sweep").exists() and schedule_of("health-sweep") is None
    assert schedule_of("mine") is not None  # a person's own worker is never touched


def test_the_ledger_is_pruned_by_its_worker_only(db):
    """One owner per chore: the built-in worker, not also a schedule of its own."""
    from orchestration.core.schedules import ensure_schedule, sync_builtin_schedules

    ensure_schedule("orchestrator.ledger_retention", "orchestration.loop.maintenance.prune_ledger", schedule_type="H")
    sync_builtin_schedules()  # as every migrate does
    funcs = list(Schedule.objects.values_list("func", flat=True))
    assert "orchestration.loop.maintenance.prune_ledger" not in funcs
    assert schedule_of("ledger-retention") is not None
