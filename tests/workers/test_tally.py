"""The workers section's last-hour figures come from per-minute counts written as runs
end (not from counting the runs table): every way a run ends is counted once."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from orchestration.fleet import tally
from orchestration.fleet.loop import workers_section
from orchestration.fleet.models import RunTally, Worker
from orchestration.fleet.runner import acquire_lock, detect_crashed_runs, execute_run, request_run
from tests.workers.conftest import target


def last_hour() -> tuple[int, int, int]:
    section = workers_section(timezone.now())
    return section["runs_last_hour"], section["failed_last_hour"], section["skipped_last_hour"]


def test_every_way_a_run_ends_is_counted_once(make_worker, settings):
    ok, bad = make_worker("ok"), make_worker("bad", target=target("boom"))
    assert last_hour() == (0, 0, 0)
    execute_run(request_run(ok).pk)
    execute_run(request_run(bad).pk)
    assert last_hour() == (2, 1, 0)
    acquire_lock(ok, "other-node:run")  # the next run of ok is skipped (lock held)
    skipped = request_run(ok)
    assert execute_run(skipped.pk)["reason"] == "lock_held"
    execute_run(skipped.pk)  # a second delivery ends nothing more
    assert last_hour() == (2, 1, 1)
    Worker.objects.filter(pk=ok.pk).update(lock_owner="", lock_expires_at=None)
    # A run that stopped answering is crashed by the sweep: a failed run.
    settings.FLEET_CRASH_AFTER_SECONDS = 10
    crashing = request_run(ok)
    crashing.__class__.objects.filter(pk=crashing.pk).update(
        status="running", heartbeat_at=timezone.now() - timedelta(minutes=5)
    )
    assert detect_crashed_runs() == [crashing.pk]
    assert last_hour() == (3, 2, 1)


def test_the_last_hour_starts_at_the_minute_an_hour_ago_and_old_minutes_are_pruned(db):
    now = timezone.now()
    tally.count("succeeded", now - timedelta(minutes=30))
    tally.count("failed", now - timedelta(minutes=30))
    tally.count("succeeded", tally.hour_start(now))  # the first minute of the hour is in
    tally.count("succeeded", tally.hour_start(now) - timedelta(seconds=1))  # the minute before is not
    tally.count("skipped", now - timedelta(hours=3))
    assert RunTally.objects.get(minute=tally.minute_of(now - timedelta(minutes=30))).runs == 2
    section = workers_section(now)
    assert (section["runs_last_hour"], section["failed_last_hour"], section["skipped_last_hour"]) == (3, 1, 0)
    assert tally.prune(now) == 1 and RunTally.objects.count() == 3
