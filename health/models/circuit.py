from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from datetime import datetime
from typing import Any

from django.core.validators import MinValueValidator
from django.db import connections, models, transaction
from django.utils import timezone

from health import breaker
from health.choices import BreakerState
from orchestration.core import sqlrows
from orchestration.core.choices import Severity
from orchestration.core.models.ledger import record as ledger_record

_TRANSITION_SEVERITY = {
    breaker.OPENED: Severity.WARNING,
    breaker.HALF_OPENED: Severity.INFO,
    breaker.CLOSED_TRANSITION: Severity.INFO,
}

# Every lost swap is another writer's win, so the loop only runs out when far more
# writers pile onto one breaker than the sweep and the fleet ever put on it.
_SWAP_ATTEMPTS = 100


_SWAP_TEXT: dict[tuple[str, tuple[str, ...]], str] = {}


def _swap_row(model: type[models.Model], pk: int, version: int, fields: dict[str, Any]) -> bool:
    """The compare-and-swap UPDATE: ``fields`` written only while the row is still at
    ``version``. Plain SQL made once per database and set of columns: every worker run
    records its result, and building the UPDATE through the ORM cost more than running it."""
    connection = connections[model.objects.db]
    names = tuple(fields)
    text = _SWAP_TEXT.get((connection.vendor, names))
    if text is None:
        quote = connection.ops.quote_name
        c = {f.name: quote(f.column) for f in model._meta.concrete_fields}
        sets = ", ".join(f"{c[name]} = %s" for name in names)
        text = _SWAP_TEXT[(connection.vendor, names)] = (
            f"UPDATE {quote(model._meta.db_table)} SET {sets} WHERE {c['id']} = %s AND {c['version']} = %s"
        )
    values = sqlrows.prepared_values(model, fields, connection)
    with connection.cursor() as cursor:
        cursor.execute(text, [*values, pk, version])
        return cursor.rowcount == 1


class CircuitBreaker(models.Model):
    """A persisted circuit breaker, shared by every process through the database.

    Each service and each worker reaches its own through a one-to-one ``circuit``;
    the unique ``name`` (``service:<name>``, ``worker:<name>``) is what the ledger
    calls it. The rules are in ``health.breaker``; this model stores the status and
    applies changes with one compare-and-swap UPDATE on ``version``, so two processes
    recording at once neither lose a count nor both perform the same transition.
    """

    name = models.CharField(max_length=200, unique=True)
    state = models.CharField(max_length=10, choices=BreakerState.choices, default=BreakerState.CLOSED)
    consecutive_failures = models.PositiveIntegerField(default=0)
    consecutive_successes = models.PositiveIntegerField(default=0)
    opened_at = models.DateTimeField(null=True, blank=True)
    trial_started_at = models.DateTimeField(
        null=True, blank=True, help_text="Set while the single half-open trial request is in flight."
    )
    failure_threshold = models.PositiveIntegerField(
        default=breaker.DEFAULT_FAILURE_THRESHOLD, validators=[MinValueValidator(1)]
    )
    success_threshold = models.PositiveIntegerField(
        default=breaker.DEFAULT_SUCCESS_THRESHOLD, validators=[MinValueValidator(1)]
    )
    open_timeout_seconds = models.FloatField(
        default=breaker.DEFAULT_OPEN_TIMEOUT_SECONDS, validators=[MinValueValidator(0)]
    )
    last_failure_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    version = models.PositiveBigIntegerField(default=0, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        # The few open breakers, found without reading them all (the services page's counts).
        indexes = [models.Index(fields=["state"], name="breaker_state_idx")]

    def __str__(self) -> str:
        return f"{self.name} ({self.state})"

    # --- construction ---------------------------------------------------------------
    @classmethod
    def for_name(cls, name: str, **defaults: Any) -> CircuitBreaker:
        """The breaker called ``name``, created with ``defaults`` if it does not exist."""
        obj, _ = cls.objects.get_or_create(name=name, defaults=defaults)
        return obj

    # --- pure views -----------------------------------------------------------------
    @property
    def config(self) -> breaker.BreakerConfig:
        return breaker.BreakerConfig(
            failure_threshold=self.failure_threshold,
            success_threshold=self.success_threshold,
            open_timeout_seconds=self.open_timeout_seconds,
        )

    @property
    def status(self) -> breaker.BreakerStatus:
        return breaker.BreakerStatus(
            state=self.state,
            consecutive_failures=self.consecutive_failures,
            consecutive_successes=self.consecutive_successes,
            opened_at=self.opened_at,
            trial_started_at=self.trial_started_at,
        )

    @property
    def retry_at(self) -> datetime | None:
        return breaker.retry_at(self.status, self.config)

    def is_open(self) -> bool:
        return self.state == BreakerState.OPEN

    # --- operations -----------------------------------------------------------------
    def allow(self, now: datetime | None = None) -> bool:
        """False while open. Once the open timeout has passed, the first caller moves
        the breaker to half-open and is let through for the single trial; everyone
        else is refused until that trial is recorded. Decided on the row as this
        instance holds it: a closed breaker answers True with no query at all, and
        only a transition writes."""
        now = now or timezone.now()
        outcome: dict[str, Any] = {}

        def compute(row: CircuitBreaker) -> tuple[breaker.BreakerStatus, str | None, dict[str, Any]]:
            decision = breaker.allow(row.status, row.config, now)
            outcome["allowed"] = decision.allowed
            return decision.status, decision.transition, {}

        self._swap(compute, now, actor="system")
        return bool(outcome["allowed"])

    def record(
        self,
        success: bool,
        now: datetime | None = None,
        *,
        actor: str = "system",
        context: dict[str, Any] | None = None,
    ) -> str | None:
        """Apply one result atomically; returns "opened", "half_opened", "closed" or None.

        ``context`` is merged into the ledger entry of a transition (e.g. the root
        cause of a dependent's failure) and may lower its severity with a
        ``"severity"`` key.
        """
        now = now or timezone.now()

        def compute(row: CircuitBreaker) -> tuple[breaker.BreakerStatus, str | None, dict[str, Any]]:
            status, transition = breaker.apply_result(row.status, row.config, success, now)
            stamp = {"last_success_at": now} if success else {"last_failure_at": now}
            return status, transition, stamp

        return self._swap(compute, now, actor=actor, context=context)

    def trip(self, *, actor: str, reason: str) -> str | None:
        """Open now whatever the counts; returns "opened", or None if it already was.
        The ledger entry names the actor and the reason."""
        now = timezone.now()

        def compute(row: CircuitBreaker) -> tuple[breaker.BreakerStatus, str | None, dict[str, Any]]:
            status, transition = breaker.trip(row.status, now)
            return status, transition, {}

        return self._swap(compute, now, actor=actor, context={"reason": reason})

    def reset(self, *, actor: str) -> None:
        """Back to closed with clean counters, whatever the state; ledgered with the actor."""
        now = timezone.now()
        previous = {}

        def compute(row: CircuitBreaker) -> tuple[breaker.BreakerStatus, str | None, dict[str, Any]]:
            previous["state"] = row.state
            return breaker.reset(), None, {}

        self._swap(compute, now, actor=actor, force=True)
        ledger_record(
            "health.circuit_reset",
            f"Circuit {self.name} reset to closed by {actor} (was {previous['state']})",
            subject=self.name,
            actor=actor,
            data={"previous_state": previous["state"]},
        )

    # --- internals ------------------------------------------------------------------
    def _swap(
        self,
        compute: Callable[[CircuitBreaker], tuple[breaker.BreakerStatus, str | None, dict[str, Any]]],
        now: datetime,
        *,
        actor: str,
        context: dict[str, Any] | None = None,
        force: bool = False,
    ) -> str | None:
        """Compute the next status from the row as this instance holds it and write it
        with one conditional UPDATE on ``version`` (compare-and-swap). A lost swap means
        another process wrote first: re-read, recompute, swap again. Nothing changed
        means nothing written; only the winner of a transition ledgers it, in the same
        transaction as its UPDATE, so the entry exists exactly once."""
        model = type(self)
        row = self
        for _attempt in range(_SWAP_ATTEMPTS):
            status, transition, extra = compute(row)
            if not force and not extra and status == row.status:
                self._copy_from(row)
                return None
            fields: dict[str, Any] = {
                "state": status.state,
                "consecutive_failures": status.consecutive_failures,
                "consecutive_successes": status.consecutive_successes,
                "opened_at": status.opened_at,
                "trial_started_at": status.trial_started_at,
                **extra,
                "version": row.version + 1,
                "updated_at": now,
            }
            # A lone UPDATE is atomic by itself; a transaction is only needed to tie a
            # transition to its ledger entry.
            with transaction.atomic() if transition else nullcontext():
                won = _swap_row(model, self.pk, row.version, fields)
                if won:
                    self._copy_from(row)
                    for key, value in fields.items():
                        setattr(self, key, value)
                    if transition:
                        self._ledger_transition(transition, actor, context)
            if won:
                return transition
            row = model.objects.get(pk=self.pk)
        raise RuntimeError(f"circuit breaker {self.name}: too much contention")

    def _copy_from(self, row: CircuitBreaker) -> None:
        for field in self._meta.concrete_fields:
            setattr(self, field.attname, getattr(row, field.attname))

    def _ledger_transition(self, transition: str, actor: str, context: dict[str, Any] | None) -> None:
        data: dict[str, Any] = {
            "state": self.state,
            "consecutive_failures": self.consecutive_failures,
            "consecutive_successes": self.consecutive_successes,
            "failure_threshold": self.failure_threshold,
            "success_threshold": self.success_threshold,
            "open_timeout_seconds": self.open_timeout_seconds,
        }
        context = dict(context or {})
        severity = context.pop("severity", None) or _TRANSITION_SEVERITY[transition]
        data.update(context)
        messages = {
            breaker.OPENED: f"Circuit {self.name} opened after {self.consecutive_failures} consecutive failures",
            breaker.HALF_OPENED: f"Circuit {self.name} half-open: one trial request allowed",
            breaker.CLOSED_TRANSITION: f"Circuit {self.name} closed after {self.consecutive_successes} successes",
        }
        message = messages[transition]
        if context.get("reason"):
            message = f"Circuit {self.name} {transition.replace('_', '-')} by {actor}: {context['reason']}"
        if context.get("root_cause"):
            message += f" (root cause: {context['root_cause']})"
        ledger_record(
            f"health.circuit_{transition}", message, severity=severity, subject=self.name, actor=actor, data=data
        )
