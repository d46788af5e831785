"""Job kinds: the registry that maps a job's ``kind`` to the code that runs it.

Contract for a handler::

    @job_kind("my.kind", description="…")
    def handle(payload: dict, ctx: JobContext) -> dict | None: ...

* It runs inside a django-q2 worker, possibly more than once for one job if a
  process dies mid-run (at-least-once): make side effects idempotent or record them.
* Return a JSON-serialisable dict (stored as ``Job.result``) or None.
* Raise ``PermanentJobError`` for a failure that retrying cannot fix; any other
  exception is retried with the job's backoff until ``max_attempts``
  (``RetryLater`` chooses the delay itself).
* Long handlers should check ``ctx.should_stop()`` and return early when a person
  cancelled the job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestration.core.jobs.queue import JobContext

Handler = Callable[[dict, "JobContext"], "dict | None"]


class UnknownJobKind(LookupError):
    pass


class PermanentJobError(Exception):
    """A failure that no retry will fix (bad payload, 4xx from a target…)."""


class RetryLater(Exception):
    """A failure to retry after ``delay_seconds`` instead of the job's own backoff
    (e.g. routing moving on to a fallback service at once). Still uses an attempt."""

    def __init__(self, message: str, delay_seconds: float):
        super().__init__(message)
        self.delay_seconds = max(0.0, float(delay_seconds))


@dataclass(frozen=True)
class JobKind:
    name: str
    handler: Handler
    description: str = ""
    payload_schema: dict[str, Any] = field(default_factory=dict)
    # Created by the orchestrator itself only (the API refuses it as a client's kind).
    internal: bool = False


_KINDS: dict[str, JobKind] = {}


def job_kind(name: str, *, description: str = "", payload_schema: dict[str, Any] | None = None, internal: bool = False):
    def register(func: Handler) -> Handler:
        _KINDS[name] = JobKind(name, func, description or (func.__doc__ or "").strip(), payload_schema or {}, internal)
        return func

    return register


def get_kind(name: str) -> JobKind:
    try:
        return _KINDS[name]
    except KeyError:
        raise UnknownJobKind(f"unknown job kind {name!r}; known kinds: {', '.join(sorted(_KINDS))}") from None


def kind_names(*, client: bool = False) -> list[str]:
    """Every kind's name; ``client=True``: only those a person or client may create."""
    return sorted(name for name, kind in _KINDS.items() if not (client and kind.internal))
