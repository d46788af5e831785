"""The SQL of the queue's per-job hot path, written once per database.

Every job passes through three statements on its way: the claim at its birth, the
start claim of its delivery, and the look at the queue after it finishes. Built
through the ORM, each cost more to construct and compile than the database took to
run it (2-7 ms against 1-2 ms on PostgreSQL): expressions with subqueries are cloned
and resolved on every call. Here their text is made once per connection vendor from
the model's own table and column names; only the parameters change between calls.
The SQL is the common subset PostgreSQL and SQLite (3.35+, for RETURNING) both
speak, and the queue's tests run it on both.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connections

from orchestration.choices import CLAIMABLE_STATUSES, JobStatus
from orchestration.models import Job, Lane


@dataclass(frozen=True)
class _Sql:
    outlook: str
    outlook_columns: str  # the outlook as two columns a statement can return
    waiting: str  # how many jobs wait in the broker unstarted (a scalar subquery)
    birth_claim: str
    birth_claim_backlog: str
    start: str


_BY_VENDOR: dict[str, _Sql] = {}


def _sql(quote: Any) -> _Sql:
    j = {f.name: quote(f.column) for f in Job._meta.concrete_fields}
    job, lane = quote(Job._meta.db_table), quote(Lane._meta.db_table)
    claimable = ", ".join(["%s"] * len(CLAIMABLE_STATUSES))
    due = "({c} IS NULL OR {c} <= %s)"
    waiting = f"(SELECT COUNT(*) FROM {job} w WHERE w.{j['status']} = %s AND w.{j['started_at']} IS NULL)"
    birth_claim = (
        f"UPDATE {job} SET {j['status']} = %s, {j['lease_token']} = %s, {j['lease_owner']} = '', "
        f"{j['lease_expires_at']} = %s, {j['dispatched_at']} = %s, {j['started_at']} = NULL "
        f"WHERE {j['id']} = %s AND {j['status']} = %s AND {due.format(c=j['not_before'])} "
        # Nothing that dispatch() would take first: a higher priority, or the same and older.
        f"AND NOT EXISTS (SELECT 1 FROM {job} a WHERE a.{j['status']} IN ({claimable}) "
        f"AND {due.format(c='a.' + j['not_before'])} "
        f"AND (a.{j['priority_rank']} > %s OR (a.{j['priority_rank']} = %s AND a.{j['created_at']} <= %s)) "
        f"AND a.{j['id']} <> %s) "
        f"AND NOT EXISTS (SELECT 1 FROM {lane} l WHERE l.{quote('name')} = %s AND l.{quote('concurrency_limit')} > 0)"
    )
    columns = ", ".join(j.values())
    outlook_columns = (
        f"EXISTS (SELECT 1 FROM {job} d WHERE d.{j['status']} IN ({claimable}) "
        f"AND {due.format(c='d.' + j['not_before'])}), {waiting}"
    )
    return _Sql(
        outlook=f"SELECT {outlook_columns}",
        outlook_columns=outlook_columns,
        waiting=waiting,
        birth_claim=birth_claim,
        birth_claim_backlog=f"{birth_claim} AND {waiting} < %s",
        start=(
            f"UPDATE {job} SET {j['started_at']} = %s, {j['attempts']} = {j['attempts']} + 1, "
            f"{j['lease_owner']} = %s, {j['lease_expires_at']} = %s "
            f"WHERE {j['id']} = %s AND {j['lease_token']} = %s AND {j['status']} = %s "
            f"AND {j['started_at']} IS NULL RETURNING {columns}"
        ),
    )


def _prepared() -> tuple[Any, _Sql]:
    connection = connections[Job.objects.db]
    sql = _BY_VENDOR.get(connection.vendor)
    if sql is None:  # (a race here only builds the same text twice)
        sql = _BY_VENDOR[connection.vendor] = _sql(connection.ops.quote_name)
    return connection, sql


def _at(connection, value: datetime) -> Any:
    return connection.ops.adapt_datetimefield_value(value)


def _outlook_params(connection, now: datetime) -> tuple[Any, ...]:
    return (*CLAIMABLE_STATUSES, _at(connection, now), JobStatus.PROCESSING)


def outlook(now: datetime) -> tuple[bool, int]:
    """(is any job due, how many jobs wait in the broker unstarted): one round trip."""
    connection, sql = _prepared()
    with connection.cursor() as cursor:
        cursor.execute(sql.outlook, _outlook_params(connection, now))
        due, waiting = cursor.fetchone()
    return bool(due), int(waiting or 0)


_FINISH_TEXT: dict[tuple[str, tuple[str, ...]], str] = {}


def finish(job_id: int, token: str, now: datetime, fields: dict[str, Any]) -> tuple[bool, int] | None:
    """Write a running job's outcome (``fields``, by model field name) if this run
    still holds it and no cancel was asked for, and return the queue's outlook as of
    that moment in the same round trip; None when nothing was written."""
    connection, sql = _prepared()
    names = tuple(sorted(fields))
    text = _FINISH_TEXT.get((connection.vendor, names))
    if text is None:
        quote = connection.ops.quote_name
        column = {f.name: quote(f.column) for f in Job._meta.concrete_fields}
        sets = ", ".join(f"{column[name]} = %s" for name in names)
        text = _FINISH_TEXT[(connection.vendor, names)] = (
            f"UPDATE {quote(Job._meta.db_table)} SET {sets} WHERE {column['id']} = %s "
            f"AND {column['lease_token']} = %s AND {column['status']} = %s AND {column['cancel_requested']} = %s "
            f"RETURNING {sql.outlook_columns}"
        )
    # Each value prepared as the field itself prepares it for a save (JSON, datetimes).
    values = [Job._meta.get_field(name).get_db_prep_save(fields[name], connection) for name in names]
    params = [*values, job_id, token, JobStatus.PROCESSING, False, *_outlook_params(connection, now)]
    with connection.cursor() as cursor:
        cursor.execute(text, params)
        row = cursor.fetchone()
    return (bool(row[0]), int(row[1] or 0)) if row else None


def birth_claim(job: Job, now: datetime, *, token: str, lease_expires_at: datetime, backlog: int) -> bool:
    """Claim ``job`` if it is still pending and due, nothing goes before it, its lane
    has no limit and (``backlog`` > 0) fewer than ``backlog`` jobs wait in the broker."""
    connection, sql = _prepared()
    at = _at(connection, now)
    params: list[Any] = [JobStatus.PROCESSING, token, _at(connection, lease_expires_at), at]
    params += [job.pk, JobStatus.PENDING, at]
    params += [*CLAIMABLE_STATUSES, at, job.priority_rank, job.priority_rank, _at(connection, job.created_at), job.pk]
    params += [job.lane]
    statement = sql.birth_claim
    if backlog:
        statement = sql.birth_claim_backlog
        params += [JobStatus.PROCESSING, backlog]
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.rowcount == 1


_INSERT_TEXT: dict[tuple[str, bool], str] = {}


def insert_claimed(job: Job, *, backlog: int) -> bool:
    """INSERT the unsaved ``job`` (its claim fields already set by the caller) only if
    nothing should go before it: no due job of its priority or a higher one waits (all
    of them are older), its lane has no limit, and (``backlog`` > 0) fewer than
    ``backlog`` jobs wait in the broker. True, and ``job`` is saved with its id; False,
    and nothing was written. The row is never visible unclaimed.
    """
    connection, sql = _prepared()
    fields = [f for f in Job._meta.concrete_fields if not f.primary_key]
    text = _INSERT_TEXT.get((connection.vendor, bool(backlog)))
    if text is None:
        quote = connection.ops.quote_name
        columns = ", ".join(quote(f.column) for f in fields)
        placeholders = ", ".join(["%s"] * len(fields))
        c = {f.name: quote(f.column) for f in Job._meta.concrete_fields}
        text = (
            f"INSERT INTO {quote(Job._meta.db_table)} ({columns}) SELECT {placeholders} "
            f"WHERE NOT EXISTS (SELECT 1 FROM {quote(Job._meta.db_table)} a "
            f"WHERE a.{c['status']} IN ({', '.join(['%s'] * len(CLAIMABLE_STATUSES))}) "
            f"AND (a.{c['not_before']} IS NULL OR a.{c['not_before']} <= %s) AND a.{c['priority_rank']} >= %s) "
            f"AND NOT EXISTS (SELECT 1 FROM {quote(Lane._meta.db_table)} l "
            f"WHERE l.{quote('name')} = %s AND l.{quote('concurrency_limit')} > 0)"
            + (f" AND {sql.waiting} < %s" if backlog else "")
            + f" RETURNING {c['id']}"
        )
        _INSERT_TEXT[(connection.vendor, bool(backlog))] = text
    # Each value prepared as a save() prepares it (defaults, JSON, datetimes).
    params = [f.get_db_prep_save(f.pre_save(job, True), connection) for f in fields]
    params += [*CLAIMABLE_STATUSES, _at(connection, job.dispatched_at), job.priority_rank, job.lane]
    if backlog:
        params += [JobStatus.PROCESSING, backlog]
    with connection.cursor() as cursor:
        cursor.execute(text, params)
        row = cursor.fetchone()
    if row is None:
        return False
    job.pk = row[0]
    job._state.adding, job._state.db = False, connection.alias
    return True


def start(job_id: int, token: str, now: datetime, *, owner: str, lease_expires_at: datetime) -> Job | None:
    """The start claim of a delivery, returning the row as it now is (UPDATE … RETURNING);
    None when this (job, token) was already started or is no longer the job's."""
    connection, sql = _prepared()
    params = [_at(connection, now), owner, _at(connection, lease_expires_at), job_id, token, JobStatus.PROCESSING]
    # raw() applies each field's converters, as a normal read would.
    rows = list(Job.objects.db_manager(Job.objects.db).raw(sql.start, params))
    return rows[0] if rows else None
