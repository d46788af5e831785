"""System checks for misconfiguration (`manage.py check`)."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Warning, register

from orchestrator_site.private import private_dir


@register()
def orchestrator_settings(app_configs, **kwargs):
    problems = []
    q = settings.Q_CLUSTER
    if q.get("timeout") and q.get("retry") and q["retry"] <= q["timeout"]:
        problems.append(
            Error(
                "Q_CLUSTER retry must be greater than timeout",
                hint="django-q2 would redeliver tasks that are still running.",
                id="orchestration.E001",
            )
        )
    if "orm" not in q and "redis" not in q:
        problems.append(Error("Q_CLUSTER has no broker", hint="Set Q_BROKER.", id="orchestration.E002"))
    engine = settings.DATABASES["default"]["ENGINE"]
    if engine.endswith("sqlite3") and "redis" in q:
        problems.append(
            Warning(
                "Redis broker with a SQLite database",
                hint="The scale profile pairs Q_BROKER=redis://… with DATABASE_URL=postgres://….",
                id="orchestration.W002",
            )
        )
    if settings.JOB_LEASE_SECONDS >= q.get("retry", 10**9):
        problems.append(Error("JOB_LEASE_SECONDS must be below Q_CLUSTER retry", id="orchestration.E003"))
    from orchestration import runnables

    for path in settings.RUNNABLE_PATHS:
        if problem := runnables.problem(path):
            problems.append(Error(f"RUNNABLE_PATHS: {problem}", id="orchestration.E005"))
    try:
        private_dir(settings.RUNS_DIR)
    except OSError as exc:
        problems.append(Error(f"RUNS_DIR {settings.RUNS_DIR} is not writable: {exc}", id="orchestration.E004"))
    return problems
