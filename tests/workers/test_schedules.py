"""The fleet's own scheduler: the cursor follows the worker row, each due time fires once."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from django_q.models import Schedule

from orchestration.fleet.firing import fire_due
from orchestration.fleet.models import Worker, WorkerRun
from orchestration.fleet.runner import scheduled_run


def schedule_of(name: str) -> Schedule | None:
    rows = list(Schedule.objects.filter(name=f"worker:{name}"))
    assert len(rows) <= 1, "schedule names must stay unique"
    return rows[0] if rows else None


def due_of(name: str):
    return Worker.objects.get(name=name).next_due_at


def test_the_schedule_follows_the_worker_row(make_worker):
    worker = make_worker(interval_seconds=900)
    due = due_of("collector")
    assert due.minute % 15 == 0 and due > timezone.now()
    assert schedule_of("collector") is None  # the fleet schedules itself, not through django-q2

    # Saving an unrelated field keeps the pending due time.
    worker.description = "polls"
    worker.save()
    assert due_of("collector") == due

    worker.interval_seconds, worker.cron = None, "5 * * * *"
    worker.save()
    assert due_of("collector").minute == 5

    worker.timezone = "Asia/Kolkata"  # UTC+05:30: :05 local is :35 UTC
    worker.save()
    assert due_of("collector").minute == 35

    worker.enabled = False
    worker.save()
    assert due_of("collector") is None
    worker.enabled = True
    worker.save()
    assert due_of("collector") is not None


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
@pytest.mark.parametrize("overlap", ["skip", "buffer_one", "buffer_all", "cancel_other", "allow_all"])
def test_four_schedulers_racing_fire_each_due_time_exactly_once(make_worker, overlap):
    """Two loop runners and two clusters look at the same overdue worker at the same
    moment, with catch-up: each due time becomes one run, whoever wins the claim."""
    make_worker(overlap=overlap, catch_up_seconds=3600)
    first = (timezone.now() - timedelta(minutes=21)).replace(second=0, microsecond=0)
    first -= timedelta(minutes=first.minute % 5)
    Worker.objects.filter(name="collector").update(next_due_at=first)
    barrier = threading.Barrier(4)
    errors, won = [], []

    def fire() -> None:
        try:
            barrier.wait()
            won.append(fire_due())
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=fire) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    # One scheduler claimed the collector's due times, the others saw them taken (a
    # built-in worker that fell due meanwhile may go to any of them).
    assert sum(1 for w in won if "collector" in w) == 1
    runs = WorkerRun.objects.filter(worker__name="collector").order_by("due_at")
    dues = list(runs.values_list("due_at", flat=True))
    assert dues == sorted(set(dues)) and len(dues) >= 5
    assert dues[0] == first and all(r.job_id for r in runs)
    assert due_of("collector") > timezone.now()
    # Firing again, or replaying a due time, adds nothing.
    fire_due()
    scheduled_run("collector", due_at=first.isoformat())
    assert WorkerRun.objects.filter(worker__name="collector").count() == len(dues)


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
    assert all(due_of(n) is not None for n in names)


def test_a_retired_builtin_worker_is_removed_with_its_schedule(make_worker):
    """The health sweep was also a built-in worker; its trigger is the loop runner's tick now."""
    from orchestration.fleet.builtins import ensure_builtin_workers

    make_worker("health-sweep", builtin=True)
    make_worker("mine")
    ensure_builtin_workers()  # as every migrate does
    assert not Worker.objects.filter(name="health-sweep").exists()
    assert due_of("mine") is not None  # a person's own worker is never touched


def test_the_ledger_is_pruned_by_its_worker_only(db):
    """One owner per chore: the built-in worker, not also a schedule of its own."""
    from orchestration.core.schedules import ensure_schedule, sync_builtin_schedules

    ensure_schedule("orchestrator.ledger_retention", "orchestration.loop.maintenance.prune_ledger", schedule_type="H")
    sync_builtin_schedules()  # as every migrate does
    funcs = list(Schedule.objects.values_list("func", flat=True))
    assert "orchestration.loop.maintenance.prune_ledger" not in funcs
    assert due_of("ledger-retention") is not None
