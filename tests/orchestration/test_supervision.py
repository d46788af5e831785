"""Restart backoff and transient database errors: pure logic, no database."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from django.db import DatabaseError, IntegrityError, InterfaceError, OperationalError, ProgrammingError

from orchestration.core.dbfaults import Outage, is_transient
from orchestration.core.supervision import Backoff, BackoffPolicy


def test_restart_delays_double_from_one_second_up_to_thirty():
    backoff = Backoff()
    assert [backoff.failed(ran_for=0.5) for _ in range(8)] == [1, 2, 4, 8, 16, 30, 30, 30]


def test_a_healthy_minute_starts_the_delays_over():
    backoff = Backoff()
    for _ in range(4):
        backoff.failed(ran_for=2)
    assert backoff.failed(ran_for=59.9) == 16
    assert backoff.failed(ran_for=60) == 1
    assert backoff.failed(ran_for=3) == 2


def test_a_child_that_never_came_up_keeps_backing_off():
    backoff = Backoff()
    backoff.failed(ran_for=None)
    assert backoff.failed(ran_for=None) == 2


def test_the_policy_refuses_a_zeroth_failure_and_never_overflows():
    policy = BackoffPolicy(initial=0.5, cap=5)
    with pytest.raises(ValueError):
        policy.delay(0)
    assert policy.delay(1) == 0.5 and policy.delay(10_000) == 5


@pytest.mark.parametrize(
    "exc",
    [
        OperationalError("database is locked"),
        OperationalError('connection to server at "127.0.0.1", port 5432 failed: Connection refused'),
        OperationalError("FATAL:  the database system is starting up"),
        OperationalError("server closed the connection unexpectedly"),
        OperationalError("the connection is closed"),
        InterfaceError("connection already closed"),
    ],
)
def test_what_a_database_restart_raises_is_transient(exc):
    assert is_transient(exc)


def test_sqlstate_of_a_serialization_failure_or_shutdown_is_transient():
    class PgError(Exception):
        def __init__(self, sqlstate):
            self.sqlstate = sqlstate

    for code in ("40001", "40P01", "57P01", "57P03", "08006"):
        wrapped = OperationalError("whatever the server said")
        wrapped.__cause__ = PgError(code)
        assert is_transient(wrapped), code
    wrapped = DatabaseError("unique violation")
    wrapped.__cause__ = PgError("23505")
    assert not is_transient(wrapped)


def test_an_error_raised_while_handling_a_transient_one_is_transient():
    try:
        try:
            raise sqlite3.OperationalError("database is locked")
        except sqlite3.OperationalError:
            raise ValueError("writing the error entry failed too")
    except ValueError as exc:
        assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        OperationalError("no such table: orchestration_loopstate"),
        ProgrammingError('relation "x" does not exist'),
        IntegrityError("UNIQUE constraint failed"),
        ValueError("database is locked"),  # not a database error at all
    ],
)
def test_bugs_are_not_transient(exc):
    assert not is_transient(exc)


def test_an_outage_starts_once_backs_off_and_measures_its_duration():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    outage = Outage()
    assert not outage.active and outage.seconds_until_retry(0) == 0
    assert outage.failed("OperationalError: refused", now=t0, monotonic=100.0) is True
    assert outage.seconds_until_retry(100.0) == 0.5
    assert outage.failed("OperationalError: starting up", now=t0 + timedelta(seconds=1), monotonic=101.0) is False
    assert outage.seconds_until_retry(101.0) == 1.0
    outage.failed("again", now=t0 + timedelta(seconds=2), monotonic=102.0)
    assert outage.retries == 2 and outage.error == "OperationalError: refused"
    assert outage.duration(t0 + timedelta(seconds=7.5)) == 7.5
    outage.clear()
    assert not outage.active
    assert outage.failed("next one", now=t0, monotonic=200.0) is True
    assert outage.seconds_until_retry(200.0) == 0.5
