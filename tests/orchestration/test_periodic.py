"""Every periodic task has exactly one trigger (README: "What runs periodically")."""

from __future__ import annotations

import pytest
from django_q.models import Schedule

from orchestration.fleet.models import Worker
from orchestration.loop import runner

pytestmark = pytest.mark.django_db

# task → its one trigger: ("schedule", name), ("worker", built-in worker name) or
# ("tick", loop runner hook name). A second trigger for any task fails the test below.
TRIGGERS = {
    "loop cycle, last-resort fallback": ("schedule", "orchestrator.loop"),
    "routing analysis": ("schedule", "routing.analyze"),
    "health sweep": ("tick", "health_tick"),
    "fleet sweep": ("tick", "fleet_sweep"),
    "worker schedules (due workers fired)": ("tick", "fire_due_tick"),
    "anomaly escalation": ("tick", "anomaly_escalation"),
    "routing ejection verification": ("tick", "routing_verify_ejections"),
    "ledger retention": ("worker", "ledger-retention"),
    "job retention": ("worker", "job-retention"),
    "check-history retention": ("worker", "check-history-retention"),
    "worker-history retention": ("worker", "stale-run-cleanup"),
    "hourly score rollup": ("worker", "score-rollup-hourly"),
    "daily score rollup": ("worker", "score-rollup-daily"),
}


def triggers_installed() -> list[tuple[str, str]]:
    schedules = Schedule.objects.exclude(name__startswith="worker:").values_list("name", flat=True)
    found = [("schedule", n) for n in schedules]
    found += [("worker", n) for n in Worker.objects.filter(builtin=True).values_list("name", flat=True)]
    found += [("tick", getattr(hook, "__name__", repr(hook))) for hook in runner._TICK_HOOKS]
    return found


def test_it_installs_one_trigger_per_periodic_task_and_nothing_else():
    installed = triggers_installed()
    assert sorted(installed) == sorted(TRIGGERS.values())


def test_each_builtin_worker_is_due_through_the_fleet_scheduler_only():
    for name, due in Worker.objects.filter(builtin=True).values_list("name", "next_due_at"):
        assert due is not None and not Schedule.objects.filter(name=f"worker:{name}").exists(), name


def test_no_two_triggers_run_the_same_function():
    targets = list(Schedule.objects.exclude(name__startswith="worker:").values_list("func", flat=True))
    targets += [w.target["path"] for w in Worker.objects.filter(builtin=True)]
    targets += [f"{hook.__module__}.{getattr(hook, '__name__', '')}" for hook in runner._TICK_HOOKS]
    assert len(targets) == len(set(targets))
