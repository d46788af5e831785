"""Which database errors are weather (a restart, a failover, a busy SQLite file) and how
long they lasted. No ORM: callers close connections and write the ledger.

A long-running loop that meets a transient error closes its connection, backs off and
tries again, instead of dying; anything else (a missing table, bad SQL) is a bug and
still raises.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from django.db import Error as DjangoDatabaseError
from django.db import InterfaceError, OperationalError

from orchestration.core.supervision import Backoff, BackoffPolicy

log = logging.getLogger("orchestration.core.dbfaults")
T = TypeVar("T")

# SQLSTATE classes and codes PostgreSQL answers while restarting or failing over:
# 08 connection exceptions, 57P01-03 admin/crash shutdown and "starting up",
# 40001/40P01 serialization failure and deadlock (retrying is the documented answer),
# 53300 too many connections.
TRANSIENT_SQLSTATE_PREFIXES = ("08", "57P01", "57P02", "57P03", "40001", "40P01", "53300")
TRANSIENT_MESSAGES = (
    "database is locked",
    "database table is locked",
    "connection refused",
    "could not connect",
    "connection failed",
    "server closed the connection",
    "connection already closed",
    "connection is closed",
    "connection is lost",
    "connection timed out",
    "no connection to the server",
    "ssl connection has been closed",
    "could not receive data",
    "could not send data",
    "consuming input failed",
    "terminating connection",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
)


def is_transient(exc: BaseException) -> bool:
    """True for an error a database restart or a busy database causes."""
    seen = 0
    current: BaseException | None = exc
    # An error raised while handling another (a cycle writing its cycle_error entry to
    # the database that just failed it) carries the first one as its context.
    while current is not None and seen < 8:
        if isinstance(current, InterfaceError):
            return True  # the connection object is closed or unusable
        sqlstate = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(TRANSIENT_SQLSTATE_PREFIXES):
            return True
        if isinstance(current, OperationalError) or type(current).__name__ == "OperationalError":
            text = str(current).lower()
            if any(message in text for message in TRANSIENT_MESSAGES):
                return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


def describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


OUTAGE_POLICY = BackoffPolicy(initial=0.5, factor=2.0, cap=5.0)


@dataclass
class Outage:
    """One stretch of an unreachable database, as one loop saw it."""

    policy: BackoffPolicy = OUTAGE_POLICY
    began_at: datetime | None = None
    error: str = ""
    retries: int = 0
    retry_at: float = 0.0  # monotonic
    _backoff: Backoff = field(init=False)

    def __post_init__(self) -> None:
        self._backoff = Backoff(self.policy)

    @property
    def active(self) -> bool:
        return self.began_at is not None

    def failed(self, error: str, *, now: datetime, monotonic: float) -> bool:
        """Count a failed try; True when it starts a new outage."""
        new = not self.active
        if new:
            self.began_at, self.error, self.retries = now, error, 0
            self._backoff.reset()
        else:
            self.retries += 1
        self.retry_at = monotonic + self._backoff.failed()
        return new

    def seconds_until_retry(self, monotonic: float) -> float:
        return max(0.0, self.retry_at - monotonic) if self.active else 0.0

    def duration(self, now: datetime) -> float:
        return (now - self.began_at).total_seconds() if self.began_at else 0.0

    def clear(self) -> None:
        self.began_at, self.error, self.retries, self.retry_at = None, "", 0, 0.0
        self._backoff.reset()


# --- the cache (Redis) is weather too -----------------------------------------------
# redis-py's errors for a server that is down, restarting or unreachable. Matched by
# name and module so this module needs no redis import on the embedded profile.
CACHE_OUTAGE_ERRORS = ("ConnectionError", "TimeoutError", "BusyLoadingError", "ReadOnlyError")


def is_cache_outage(exc: BaseException) -> bool:
    """True for an error the cache server's absence causes (refused, reset, timed out)."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        module = type(current).__module__ or ""
        if module.startswith("redis") and type(current).__name__ in CACHE_OUTAGE_ERRORS:
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


def _through_django(exc: BaseException) -> bool:
    """Raised by one of Django's database connections (its errors wrap the driver's)."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if isinstance(current, DjangoDatabaseError):
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


def is_weather(exc: BaseException) -> bool:
    """An error the database or the cache going away causes: what a job may run again for.
    A handler's own connection to some other server failing (a driver error Django never
    saw) is the handler's failure, and uses its attempt."""
    return (is_transient(exc) and _through_django(exc)) or is_cache_outage(exc)


def close_connections() -> None:
    """Close every open database connection of this thread, so the next query opens a
    fresh one (a broken connection is never reused)."""
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        try:
            conn.close()
        except Exception:  # closing a dead connection may raise; it is gone either way
            pass


# How long a one-off write (a job's start or outcome) keeps retrying through an outage.
# Past it the error is raised; the job's lease then decides (it is reclaimed, not lost).
RETRY_FOR_SECONDS = 300.0


def retry_transient(
    call: Callable[[], T],
    *,
    what: str,
    retry_for: float | None = None,
    policy: BackoffPolicy | None = None,
    sleep: Callable[[float], object] = time.sleep,
    on_retry: Callable[[BaseException], object] | None = None,
) -> T:
    """``call()``, retried with backoff while it fails with a transient database error
    (the connection closed between tries); other errors, and the last one once
    ``retry_for`` seconds have passed, are raised."""
    deadline = time.monotonic() + (RETRY_FOR_SECONDS if retry_for is None else retry_for)
    backoff = Backoff(policy or OUTAGE_POLICY)
    while True:
        try:
            return call()
        except Exception as exc:
            if not is_transient(exc) or time.monotonic() >= deadline:
                raise
            delay = min(backoff.failed(), max(0.0, deadline - time.monotonic()))
            if backoff.failures == 1:
                log.warning("%s: database unreachable (%s); retrying with backoff", what, describe(exc))
            close_connections()
            if on_retry is not None:
                on_retry(exc)
            sleep(delay)
