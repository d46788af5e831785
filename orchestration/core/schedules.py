"""django-q2 schedules the orchestrator owns, created idempotently by name.

django-q2 does not make schedule names unique, so every write goes through
``ensure_schedule`` (update_or_create by name) and duplicates are removed.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction


def ensure_schedule(name: str, func: str, **fields: Any):
    from django_q.models import Schedule

    with transaction.atomic():
        rows = list(Schedule.objects.select_for_update().filter(name=name).order_by("id"))
        for extra in rows[1:]:
            extra.delete()
        if rows:
            schedule = rows[0]
            changed = [k for k, v in {"func": func, **fields}.items() if getattr(schedule, k) != v]
            for key in changed:
                setattr(schedule, key, {"func": func, **fields}[key])
            if changed:
                schedule.save(update_fields=changed)
            return schedule
        return Schedule.objects.create(name=name, func=func, **fields)


def delete_schedule(name: str) -> int:
    from django_q.models import Schedule

    return Schedule.objects.filter(name=name).delete()[0]


def sync_builtin_schedules(**kwargs: Any) -> None:
    from django_q.models import Schedule

    # Last-resort fallback: one tick a minute while no `run_orchestrator` is alive, for
    # nodes without the standby loop (see loop.standby, loop.runner.loop_tick_task).
    ensure_schedule(
        "orchestrator.loop",
        "orchestration.loop.runner.loop_tick_task",
        schedule_type=Schedule.MINUTES,
        minutes=1,
        repeats=-1,
    )
    # The ledger is pruned by the fleet's built-in ledger-retention worker (scored,
    # alerting, visible in the fleet); this older schedule did the same work again.
    delete_schedule("orchestrator.ledger_retention")
