"""The SQL of a worker run's hot path, written once per database.

A no-op run passes through a dozen statements (read the run, take the lock, claim
the run, close it, write the worker, insert the run and its report, find
downstreams). Built through the ORM, each cost more to construct and compile than
the database took to run it: Q objects, CASE expressions and select_related joins
were resolved again on every call. Here, as the queue does for its own hot path
(``orchestration/core/jobs/statements.py``), their text is made once per connection
vendor from the models' own table and column names, only the parameters change, and
rows become instances with converters worked out once. The SQL is the subset
PostgreSQL and SQLite both speak; the fleet's tests run it on both.

Every cross-process claim stays a conditional UPDATE with the WHERE the ORM wrote:
the lock is taken only while free or expired, a run is claimed only while queued and
closed only while running.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.db import connections, models

from orchestration.core import sqlrows
from orchestration.core.models import Anomaly
from orchestration.fleet.choices import FAILED_RUN_STATUSES, RunStatus
from orchestration.fleet.models import Worker, WorkerRun

_TEXT: dict[tuple[Any, ...], str] = {}


def _connection():
    return connections[WorkerRun.objects.db]


def _text(key: tuple[Any, ...], build: Callable[[Callable[[str], str]], str]) -> tuple[Any, str]:
    """The connection and the statement ``key`` for its vendor, built on first use (a
    race here only builds the same text twice)."""
    connection = _connection()
    full = (connection.vendor, *key)
    text = _TEXT.get(full)
    if text is None:
        text = _TEXT[full] = build(connection.ops.quote_name)
    return connection, text


def _columns(model: type[models.Model], quote: Callable[[str], str]) -> dict[str, str]:
    return {f.name: quote(f.column) for f in model._meta.concrete_fields}


def _breaker_model() -> type[models.Model]:
    # Through the app registry: health's models import the core ledger, which this
    # package's models import too (see Worker.ensure_circuit).
    return Worker._meta.get_field("circuit").related_model


# --- the run's read -------------------------------------------------------------------------
def _read_run_sql(quote: Callable[[str], str]) -> str:
    breaker = _breaker_model()
    parts = []
    for alias, model in (("r", WorkerRun), ("w", Worker), ("c", breaker)):
        parts += [f"{alias}.{quote(f.column)}" for f in model._meta.concrete_fields]
    r, w = _columns(WorkerRun, quote), _columns(Worker, quote)
    return (
        f"SELECT {', '.join(parts)} FROM {quote(WorkerRun._meta.db_table)} r "
        f"INNER JOIN {quote(Worker._meta.db_table)} w ON w.{w['id']} = r.{r['worker']} "
        f"LEFT OUTER JOIN {quote(breaker._meta.db_table)} c ON c.{quote(breaker._meta.pk.column)} = w.{w['circuit']} "
        f"WHERE r.{r['id']} = %s"
    )


def read_run(run_id: int) -> WorkerRun | None:
    """The run with its worker and the worker's breaker (None if it has none) in hand,
    as ``select_related("worker", "worker__circuit")`` reads them, in one statement."""
    connection, text = _text(("read_run",), _read_run_sql)
    with connection.cursor() as cursor:
        cursor.execute(text, [run_id])
        row = cursor.fetchone()
    if row is None:
        return None
    breaker = _breaker_model()
    n_run, n_worker = len(WorkerRun._meta.concrete_fields), len(Worker._meta.concrete_fields)
    run = sqlrows.instance(WorkerRun, row[:n_run], connection)
    worker = sqlrows.instance(Worker, row[n_run : n_run + n_worker], connection)
    circuit_row = row[n_run + n_worker :]
    circuit = sqlrows.instance(breaker, circuit_row, connection) if circuit_row[0] is not None else None
    link = Worker._meta.get_field("circuit")
    link.set_cached_value(worker, circuit)
    if circuit is not None:  # a one-to-one: select_related filled the breaker's side too
        link.remote_field.set_cached_value(circuit, worker)
    WorkerRun._meta.get_field("worker").set_cached_value(run, worker)
    return run


# --- conditional UPDATEs ---------------------------------------------------------------------
def _update_sql(model: type[models.Model], names: tuple[str, ...], where: str) -> Callable[[Callable], str]:
    def build(quote: Callable[[str], str]) -> str:
        c = _columns(model, quote)
        sets = ", ".join(f"{c[name]} = %s" for name in names)
        return f"UPDATE {quote(model._meta.db_table)} SET {sets} WHERE {c['id']} = %s AND {where.format(**c)}"

    return build


def take_lock(worker_id: int, fields: dict[str, Any], now: datetime) -> bool:
    """Write ``fields`` (the lock's columns) only while the lock is free or expired:
    the cross-process lock of a worker, as ``acquire_lock`` describes it."""
    names = tuple(fields)
    where = "({lock_owner} = '' OR {lock_expires_at} IS NULL OR {lock_expires_at} < %s)"
    connection, text = _text(("take_lock", names), _update_sql(Worker, names, where))
    params = [
        *sqlrows.prepared_values(Worker, fields, connection),
        worker_id,
        connection.ops.adapt_datetimefield_value(now),
    ]
    with connection.cursor() as cursor:
        cursor.execute(text, params)
        return cursor.rowcount == 1


def update_run_if(run_id: int, status: str, fields: dict[str, Any]) -> bool:
    """Write ``fields`` to the run only while its status is ``status`` (its claim while
    queued, its close while running): False when another process got there first."""
    names = tuple(fields)
    connection, text = _text(("update_run", names), _update_sql(WorkerRun, names, "{status} = %s"))
    with connection.cursor() as cursor:
        cursor.execute(text, [*sqlrows.prepared_values(WorkerRun, fields, connection), run_id, status])
        return cursor.rowcount == 1


def finish_worker(worker_id: int, fields: dict[str, Any], *, streak: str, owner: str) -> None:
    """A finished run's worker columns (``fields``), its failure streak (``"reset"``,
    ``"add"`` or ``""`` to leave it) and its lock, freed only if ``owner`` still holds
    it: every SET reads the row as it was, so the three lock columns agree."""
    names = tuple(fields)

    def build(quote: Callable[[str], str]) -> str:
        c = _columns(Worker, quote)
        sets = [f"{c[name]} = %s" for name in names]
        if streak:
            count = c["consecutive_failures"]
            sets.append(f"{count} = {count} + 1" if streak == "add" else f"{count} = 0")
        held = f"{c['lock_owner']} = %s"
        sets += [
            f"{c['lock_owner']} = CASE WHEN {held} THEN '' ELSE {c['lock_owner']} END",
            f"{c['lock_token']} = CASE WHEN {held} THEN '' ELSE {c['lock_token']} END",
            f"{c['lock_expires_at']} = CASE WHEN {held} THEN NULL ELSE {c['lock_expires_at']} END",
        ]
        return f"UPDATE {quote(Worker._meta.db_table)} SET {', '.join(sets)} WHERE {c['id']} = %s"

    connection, text = _text(("finish_worker", names, streak), build)
    with connection.cursor() as cursor:
        cursor.execute(text, [*sqlrows.prepared_values(Worker, fields, connection), owner, owner, owner, worker_id])


def set_job(run_id: int, job_id: int) -> None:
    """The queued run's job, known only once both rows exist."""

    def build(quote: Callable[[str], str]) -> str:
        c = _columns(WorkerRun, quote)
        return f"UPDATE {quote(WorkerRun._meta.db_table)} SET {c['job']} = %s WHERE {c['id']} = %s"

    connection, text = _text(("set_job",), build)
    with connection.cursor() as cursor:
        cursor.execute(text, [job_id, run_id])


# --- INSERTs ---------------------------------------------------------------------------------
def insert(instance: models.Model) -> models.Model:
    """INSERT the unsaved ``instance`` (a run or a score report) as save() would
    (defaults, auto_now, JSON); it gets its id and is marked saved. A unique
    constraint's refusal is Django's IntegrityError, as with save()."""
    model = type(instance)
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]

    def build(quote: Callable[[str], str]) -> str:
        return (
            f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
            f"VALUES ({', '.join(['%s'] * len(fields))}) RETURNING {quote(model._meta.pk.column)}"
        )

    connection, text = _text(("insert", model), build)
    params = [field.get_db_prep_save(field.pre_save(instance, True), connection) for field in fields]
    with connection.cursor() as cursor:
        cursor.execute(text, params)
        instance.pk = cursor.fetchone()[0]
    instance._state.adding, instance._state.db = False, connection.alias
    return instance


# --- reads -----------------------------------------------------------------------------------
def downstream_candidates(worker_id: int) -> list[tuple[int, list[str], list[str]]]:
    """(id, depends_on, optional_depends_on) of every other enabled worker that runs
    after its upstreams; the caller picks those naming this one (JSON lists are read
    in Python to stay portable)."""

    def build(quote: Callable[[str], str]) -> str:
        c = _columns(Worker, quote)
        return (
            f"SELECT {c['id']}, {c['depends_on']}, {c['optional_depends_on']} FROM {quote(Worker._meta.db_table)} "
            f"WHERE {c['enabled']} = %s AND {c['run_after_upstream']} = %s AND {c['id']} <> %s"
        )

    connection, text = _text(("downstream",), build)
    with connection.cursor() as cursor:
        cursor.execute(text, [True, True, worker_id])
        rows = cursor.fetchall()
    if not rows:
        return []
    required, optional = Worker._meta.get_field("depends_on"), Worker._meta.get_field("optional_depends_on")
    read = [(required, required.get_col(Worker._meta.db_table)), (optional, optional.get_col(Worker._meta.db_table))]
    out = []
    for pk, *lists in rows:
        values = []
        for value, (field, col) in zip(lists, read, strict=True):
            for convert in connection.ops.get_db_converters(col) + field.get_db_converters(connection):
                value = convert(value, col, connection)
            values.append(value or [])
        out.append((pk, values[0], values[1]))
    return out


def hour_and_open(worker_id: int, since: datetime, subject: str, codes: list[str]) -> tuple[int, int, set[str]]:
    """(runs, failures) of one worker that ended since ``since`` (skipped and
    interrupted runs are not runs here), and which of ``codes`` are open about
    ``subject``: the two reads after every run, in one round trip (UNION ALL; the
    counts' row is the one whose code is empty, which no anomaly's is)."""

    def build(quote: Callable[[str], str]) -> str:
        r, a = _columns(WorkerRun, quote), _columns(Anomaly, quote)
        return (
            f"SELECT '', COALESCE(SUM(CASE WHEN {r['status']} NOT IN (%s, %s) THEN 1 ELSE 0 END), 0), "
            f"COALESCE(SUM(CASE WHEN {r['status']} IN (%s, %s, %s) THEN 1 ELSE 0 END), 0) "
            f"FROM {quote(WorkerRun._meta.db_table)} WHERE {r['worker']} = %s AND {r['completed_at']} >= %s "
            f"UNION ALL SELECT {a['code']}, 0, 0 FROM {quote(Anomaly._meta.db_table)} WHERE {a['subject']} = %s "
            f"AND {a['code']} IN ({', '.join(['%s'] * len(codes))}) AND {a['resolved_at']} IS NULL"
        )

    connection, text = _text(("hour_and_open", len(codes)), build)
    params = [
        RunStatus.SKIPPED.value,
        RunStatus.INTERRUPTED.value,
        *(str(s) for s in FAILED_RUN_STATUSES),
        worker_id,
        connection.ops.adapt_datetimefield_value(since),
        subject,
        *codes,
    ]
    with connection.cursor() as cursor:
        cursor.execute(text, params)
        rows = cursor.fetchall()
    runs = failures = 0
    open_now = set()
    for code, first, second in rows:
        if code:
            open_now.add(code)
        else:
            runs, failures = int(first), int(second)
    return runs, failures, open_now
