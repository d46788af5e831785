"""System checks for misconfiguration (`manage.py check`)."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, register

from orchestration.core import runnables
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
    if q.get("broker_class") != "orchestration.core.jobs.broker.JobBroker" and not settings.BASELINE_BROKER:
        problems.append(
            Error(
                "Q_CLUSTER must use the Job-table broker",
                hint="Set Q_CLUSTER['broker_class'] = 'orchestration.core.jobs.broker.JobBroker'.",
                id="orchestration.E002",
            )
        )
    if settings.JOB_LEASE_SECONDS >= q.get("retry", 10**9):
        problems.append(Error("JOB_LEASE_SECONDS must be below Q_CLUSTER retry", id="orchestration.E003"))

    for path in settings.RUNNABLE_PATHS:
        if problem := runnables.problem(path):
            problems.append(Error(f"RUNNABLE_PATHS: {problem}", id="orchestration.E005"))
    try:
        private_dir(settings.RUNS_DIR)
    except OSError as exc:
        problems.append(Error(f"RUNS_DIR {settings.RUNS_DIR} is not writable: {exc}", id="orchestration.E004"))
    problems.extend(database_version())
    return problems


# The queue's statements need UPDATE … RETURNING (SQLite 3.35) and FOR UPDATE SKIP
# LOCKED with NOTIFY (PostgreSQL; 14 is the oldest release still supported upstream).
MIN_SQLITE = (3, 35, 0)
MIN_POSTGRESQL = 140000


def supported_database(vendor: str, version: tuple[int, ...] | int) -> str | None:
    """Why this database cannot hold the queue, or None when it can."""
    if vendor == "sqlite":
        if tuple(version) < MIN_SQLITE:  # type: ignore[arg-type]
            return f"SQLite {'.'.join(map(str, version))} is older than 3.35"  # type: ignore[arg-type]
        return None
    if vendor == "postgresql":
        if int(version) < MIN_POSTGRESQL:  # type: ignore[arg-type]
            return f"PostgreSQL {int(version) // 10000} is older than 14"  # type: ignore[arg-type]
        return None
    return f"{vendor} is not supported (SQLite 3.35+ or PostgreSQL 14+)"


def database_version() -> list[Error]:
    from django.db import connection

    if connection.vendor == "sqlite":
        import sqlite3

        version: tuple[int, ...] | int = sqlite3.sqlite_version_info
    elif connection.vendor == "postgresql":
        try:
            connection.ensure_connection()
        except Exception:  # no database yet: nothing to say about its version
            return []
        version = connection.pg_version
    else:
        version = 0
    why = supported_database(connection.vendor, version)
    if why is None:
        return []
    return [Error(f"The database cannot hold the job queue: {why}", id="orchestration.E006")]
