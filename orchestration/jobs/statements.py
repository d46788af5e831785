"""The SQL of the queue's per-job hot path, written once per database.

Every job passes through three statements on its way: its insert (claimed at birth
when nothing goes before it), the start claim of its delivery, and its finish, which
also looks at the queue for dispatch(). Built
through the ORM, each cost more to construct and compile than the database took to
run it (2-7 ms against 1-2 ms on PostgreSQL): expressions with subqueries are cloned
and resolved on every call. Here their text is made once per connection vendor from
the model's own table and column names; only the parameters change between calls.
The SQL is the common subset PostgreSQL and SQLite (3.35+, for RETURNING) both
speak (bar one cast PostgreSQL needs), and the queue's tests run it on both. Rows
read back are converted as the ORM converts them, by converters worked out once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
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


def _sql(quote: Any, vendor: str) -> _Sql:
    j = {f.name: quote(f.column) for f in Job._meta.concrete_fields}
    job, lane = quote(Job._meta.db_table), quote(Lane._meta.db_table)
    claimable = ", ".join(["%s"] * len(CLAIMABLE_STATUSES))
    due = "({c} IS NULL OR {c} <= %s)"
    # Counted up to a cap (dispatch() needs no more than the backlog). On PostgreSQL in
    # id order, so it is read from job_waiting_idx by an ordered scan (migration 0006
    # says why that matters there).
    newest_first = f"ORDER BY w.{j['id']} DESC " if vendor == "postgresql" else ""
    waiting = (
        f"(SELECT COUNT(*) FROM (SELECT 1 FROM {job} w WHERE w.{j['status']} = %s AND w.{j['started_at']} IS NULL "
        f"{newest_first}LIMIT %s) w)"
    )
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
        sql = _BY_VENDOR[connection.vendor] = _sql(connection.ops.quote_name, connection.vendor)
    return connection, sql


def _at(connection, value: datetime) -> Any:
    return connection.ops.adapt_datetimefield_value(value)


def waiting_cap() -> int:
    """How far the waiting count goes: the backlog (a larger count changes nothing in
    dispatch()), or a generous bound where there is no backlog."""
    return settings.JOB_DISPATCH_BACKLOG or 10_000


def _waiting_params() -> tuple[Any, ...]:
    return (JobStatus.PROCESSING, waiting_cap())


def _outlook_params(connection, now: datetime) -> tuple[Any, ...]:
    return (*CLAIMABLE_STATUSES, _at(connection, now), *_waiting_params())


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
        params += [*_waiting_params(), backlog]
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.rowcount == 1


_INSERT_TEXT: dict[tuple[str, bool], str] = {}

# What a job inserted already claimed has in place of its pending values.
CLAIM_COLUMNS = ("status", "lease_token", "lease_expires_at", "dispatched_at")


def _insert_text(connection, backlog: bool) -> str:
    quote = connection.ops.quote_name
    c = {f.name: quote(f.column) for f in Job._meta.concrete_fields}
    fields = [f for f in Job._meta.concrete_fields if not f.primary_key]

    def value(field) -> str:
        if field.name not in CLAIM_COLUMNS:
            return "%s"
        # PostgreSQL types a CASE of two bare parameters as text; name the column's type.
        typed = f"CAST(%s AS {field.db_type(connection)})" if connection.vendor == "postgresql" else "%s"
        return f"CASE WHEN c.ok THEN {typed} ELSE {typed} END"

    _, sql = _prepared()
    job, lane = quote(Job._meta.db_table), quote(Lane._meta.db_table)
    ok = (
        f"NOT EXISTS (SELECT 1 FROM {job} a WHERE a.{c['status']} IN ({', '.join(['%s'] * len(CLAIMABLE_STATUSES))}) "
        f"AND (a.{c['not_before']} IS NULL OR a.{c['not_before']} <= %s) AND a.{c['priority_rank']} >= %s) "
        f"AND NOT EXISTS (SELECT 1 FROM {lane} l WHERE l.{quote('name')} = %s AND l.{quote('concurrency_limit')} > 0)"
        + (f" AND {sql.waiting} < %s" if backlog else "")
    )
    return (
        f"INSERT INTO {job} ({', '.join(quote(f.column) for f in fields)}) "
        f"SELECT {', '.join(value(f) for f in fields)} FROM (SELECT ({ok}) AS ok) c "
        f"RETURNING {c['id']}, {c['status']}, {sql.waiting}"
    )


def insert(job: Job, claim: dict[str, Any], *, backlog: int) -> tuple[bool, int]:
    """INSERT the unsaved pending ``job`` in one statement, already claimed (with the
    values of ``claim``) when nothing should go before it: no due job of its priority
    or a higher one waits (all of them are older), its lane has no limit, and
    (``backlog`` > 0) fewer than ``backlog`` jobs wait in the broker. ``job`` gets its
    id and the values it was stored with. Returns (claimed, jobs waiting in the broker).
    A claimed row is never visible unclaimed.
    """
    connection, _ = _prepared()
    key = (connection.vendor, bool(backlog))
    text = _INSERT_TEXT.get(key)
    if text is None:
        text = _INSERT_TEXT[key] = _insert_text(connection, bool(backlog))
    params: list[Any] = []
    for field in Job._meta.concrete_fields:
        if field.primary_key:
            continue
        # Each value prepared as a save() prepares it (defaults, JSON, datetimes).
        pending = field.get_db_prep_save(field.pre_save(job, True), connection)
        if field.name in CLAIM_COLUMNS:
            params += [field.get_db_prep_save(claim[field.name], connection), pending]
        else:
            params.append(pending)
    params += [*CLAIMABLE_STATUSES, _at(connection, claim["dispatched_at"]), job.priority_rank, job.lane]
    if backlog:
        params += [*_waiting_params(), backlog]
    params += _waiting_params()
    with connection.cursor() as cursor:
        cursor.execute(text, params)
        job_id, status, waiting = cursor.fetchone()
    job.pk = job_id
    job._state.adding, job._state.db = False, connection.alias
    claimed = status == JobStatus.PROCESSING
    if claimed:
        for name, value in claim.items():
            setattr(job, name, value)
    return claimed, int(waiting or 0)


def waiting(connection) -> int:
    """How many jobs wait in the broker unstarted (dispatch()'s backlog)."""
    _, sql = _prepared()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {sql.waiting}", _waiting_params())
        return int(cursor.fetchone()[0] or 0)


def _converters(connection) -> list[tuple[int, list[Any], Any]]:
    """(column position, converters, expression) of every Job column that has any, as a
    normal read applies them (datetimes and JSON on SQLite, JSON on PostgreSQL): worked
    out once per connection instead of on every row, as raw() did."""
    cached = connection.__dict__.get("_job_row_converters")
    if cached is None:
        cached = []
        for position, field in enumerate(Job._meta.concrete_fields):
            col = field.get_col(Job._meta.db_table)
            found = connection.ops.get_db_converters(col) + field.get_db_converters(connection)
            if found:
                cached.append((position, found, col))
        connection.__dict__["_job_row_converters"] = cached
    return cached


def start(job_id: int, token: str, now: datetime, *, owner: str, lease_expires_at: datetime) -> Job | None:
    """The start claim of a delivery, returning the row as it now is (UPDATE … RETURNING);
    None when this (job, token) was already started or is no longer the job's."""
    connection, sql = _prepared()
    params = [_at(connection, now), owner, _at(connection, lease_expires_at), job_id, token, JobStatus.PROCESSING]
    with connection.cursor() as cursor:
        cursor.execute(sql.start, params)
        row = cursor.fetchone()
    if row is None:
        return None
    values = list(row)
    for position, converters, expression in _converters(connection):
        for convert in converters:
            values[position] = convert(values[position], expression, connection)
    return Job.from_db(connection.alias, [f.attname for f in Job._meta.concrete_fields], values)
