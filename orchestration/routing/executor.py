"""Executing routed tasks through the job queue: POST {base_url}/process with the task
data. Failover first: a failed try goes at once to the next capable service, and the
priority's backoff only applies between rounds, once every candidate has failed. A
task's tries are bounded (``max_tries``) and every retry is taken from its task type's
retry budget. Every try is remembered, feeds outlier detection for its (service, task
type), and a 429/503 with ``Retry-After`` cools the service down. A service whose
ejection's time is up gets one probe: the task that claims it tries that service first.

The active health check's circuit breaker is not fed from here: ``/process`` failures
fill outlier detection, which a passing ``/health`` cannot reset."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import requests
from django.db import transaction
from django.utils import timezone

from health.models import Service
from orchestration.core import outbound
from orchestration.core.jobs import queue
from orchestration.core.jobs.backoff import retry_delay
from orchestration.core.jobs.registry import PermanentJobError, RetryLater, job_kind
from orchestration.core.models import Job
from orchestration.routing import outliers
from orchestration.routing.models import PROBE_CLAIM_SECONDS, OutlierState, RetryBudget, RouteStat, TaskOutcome
from orchestration.routing.router import REFERENCE_PREFIX, ROUTED_KIND, RouteDecision, capable_count, route

# At most this many tries per task, whatever the number of services and rounds.
MAX_TRIES_PER_TASK = 8
# A retry the budget refused waits this long for first tries to refill it; each wait
# uses one of the job's attempts, so a budget that stays spent ends the task.
BUDGET_WAIT_SECONDS = 0.1
BUDGET_WAITS = 40


def max_tries(max_retries: int, services: int) -> int:
    """Rounds (one plus the priority's retries) over every service, capped."""
    return min(MAX_TRIES_PER_TASK, (max_retries + 1) * max(1, services))


def submit(
    task_type: str,
    priority: str,
    data: dict[str, Any],
    *,
    strategy: str | None = None,
    context: str = "",
    actor: str | None = None,
) -> tuple[Job, RouteDecision]:
    decision = route(task_type, priority, strategy=strategy, advance=True)
    services = [decision.primary_service, *decision.fallback_services]
    retry = decision.retry_strategy
    tries = max_tries(retry["max_retries"], len(services))
    with transaction.atomic():
        job = queue.enqueue(
            ROUTED_KIND,
            {
                "task_type": task_type,
                "priority": priority,
                "data": data,
                "services": services,
                "strategy": decision.strategy,
                "max_retries": retry["max_retries"],
                "max_tries": tries,
                "backoff": retry["backoff"],
                "timeout": retry["timeout"],
                "context": context,
                "round": 0,
                "tries": 0,
                "tried": [],
            },
            priority=priority,
            # Failover happens within one attempt; attempts are spent by rounds and by
            # waits for the retry budget.
            max_attempts=retry["max_retries"] + 1 + BUDGET_WAITS,
            backoff=retry["backoff"],
            reference=f"{REFERENCE_PREFIX}{decision.primary_service}",
            actor=actor,
        )
    return job, decision


def remember(
    *,
    task_type: str,
    service: str,
    success: bool,
    execution_ms: float | None,
    job_id: int | None = None,
    priority: str = "normal",
    strategy: str = "",
    attempt: int = 1,
    status_code: int | None = None,
    error: str = "",
    error_class: str = "",
    context: str = "",
) -> TaskOutcome:
    """Store one outcome (short-term memory) and fold it into the learned stats."""
    outcome = TaskOutcome.objects.create(
        task_type=task_type,
        service_name=service,
        job_id=job_id,
        priority=priority,
        strategy=strategy,
        attempt=attempt,
        success=success,
        execution_ms=execution_ms,
        status_code=status_code,
        error=error[:2000],
        error_class=error_class or ("" if success else outliers.error_class(status_code, error)),
        context=context,
    )
    RouteStat.learn(task_type, service, success, execution_ms)
    return outcome


@dataclass(frozen=True)
class Try:
    ok: bool
    status_code: int | None
    body: Any
    error: str
    elapsed_ms: float
    retry_after: str | None = None

    @property
    def client_error(self) -> bool:
        """Rejected as a bad request: not the service's fault, not worth another try."""
        return self.status_code is not None and 400 <= self.status_code < 500 and self.status_code not in (408, 429)


def _post(service, data: dict, timeout: float) -> Try:
    url = service.base_url.rstrip("/") + "/process"
    started = time.monotonic()

    def elapsed() -> float:
        return round((time.monotonic() - started) * 1000, 1)

    try:
        response = outbound.post(url, json=data, timeout=timeout)
    except outbound.OutboundRefused as exc:
        return Try(False, None, None, f"outbound refused: {exc}", elapsed())
    except requests.Timeout:
        return Try(False, None, None, f"timed out after {timeout:g}s", elapsed())
    except requests.RequestException as exc:
        return Try(False, None, None, f"{type(exc).__name__}: {exc}", elapsed())
    took = elapsed()
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text[:2000]
    if 200 <= response.status_code < 300:
        return Try(True, response.status_code, body, "", took)
    retry_after = response.headers.get("Retry-After") if response.status_code in (429, 503) else None
    return Try(False, response.status_code, body, f"{url} answered {response.status_code}", took, retry_after)


@job_kind("routing.task", description="A routed task: POST {base_url}/process on the chosen service, then fallbacks.")
def run_routed_task(payload: dict, ctx) -> dict:
    job = ctx.job
    task_type = payload["task_type"]
    services: list[str] = payload["services"]
    round_no, tries = int(payload.get("round", 0)), int(payload.get("tries", 0))
    tried: list[str] = list(payload.get("tried", []))
    limit = int(payload.get("max_tries") or max_tries(int(payload.get("max_retries", 3)), len(services)))
    by_name = {s.name: s for s in Service.objects.filter(name__in=services).select_related("circuit")}
    failures: list[str] = list(payload.get("failures", []))
    reference = job.reference
    capable: int | None = None

    def save_progress(current: str | None = None) -> None:
        nonlocal reference
        fields: dict[str, Any] = {
            "payload": {**payload, "round": round_no, "tries": tries, "tried": tried, "failures": failures[-20:]}
        }
        if current and f"{REFERENCE_PREFIX}{current}" != reference:
            reference = fields["reference"] = f"{REFERENCE_PREFIX}{current}"
        Job.objects.filter(pk=job.pk).update(**fields)

    while True:
        live = OutlierState.live(task_type)
        # The decision's order, but whoever was ejected since goes last.
        pending = sorted((n for n in services if n not in tried), key=lambda n: n in live)
        probe = _claim_probe(pending, live, by_name, task_type, owner=f"job {job.pk}")
        if probe:
            pending.remove(probe)
            pending.insert(0, probe)
        if not pending:
            round_no += 1
            tried = []
            if round_no > int(payload.get("max_retries", 3)):
                save_progress()
                raise PermanentJobError(f"every service failed in {round_no} round(s): " + "; ".join(failures[-6:]))
            save_progress()
            delay = retry_delay(round_no, payload.get("backoff", "exponential"))
            raise RetryLater(f"every service failed; round {round_no + 1} in {delay:g}s", delay)
        name = pending[0]
        service = by_name.get(name)
        if service is None or not service.enabled or (service.circuit_id and service.circuit.state == "open"):
            why = "gone" if service is None else ("disabled" if not service.enabled else "health circuit open")
            failures.append(f"{name}: skipped ({why})")
            tried.append(name)
            continue
        if tries >= limit:
            save_progress()
            raise PermanentJobError(f"gave up after {tries} tries: " + "; ".join(failures[-6:]))
        if tries == 0:
            RetryBudget.note_first_try(task_type)
        elif not RetryBudget.take_retry(task_type):
            save_progress()
            raise RetryLater(f"retry budget of {task_type} spent; waiting to try {name}", BUDGET_WAIT_SECONDS)
        if tries:
            save_progress(current=name)  # in-flight counts follow the task to its fallback
        result = _post(service, payload.get("data", {}), float(payload.get("timeout", 30)))
        tries += 1
        tried.append(name)
        remember(
            task_type=task_type,
            service=name,
            success=result.ok,
            execution_ms=result.elapsed_ms,
            job_id=job.pk,
            priority=payload.get("priority", "normal"),
            strategy=payload.get("strategy", ""),
            attempt=tries,
            status_code=result.status_code,
            error=result.error,
            context=payload.get("context", ""),
        )
        if not result.client_error:
            if capable is None:
                capable = capable_count(task_type)
            OutlierState.observe(
                name,
                task_type,
                result.ok,
                capable=capable,
                what=result.error or "",
                retry_after=outliers.parse_retry_after(result.retry_after, timezone.now()),
            )
        if result.ok:
            save_progress(current=name)
            return {
                "service": name,
                "status_code": result.status_code,
                "response": result.body,
                "execution_ms": result.elapsed_ms,
                "tries": tries,
                "fallbacks_used": tries - 1,
            }
        failures.append(f"{name}: {result.error}")
        if result.client_error:
            save_progress()
            raise PermanentJobError(f"{name} rejected the task: {result.error}")


def _claim_probe(pending: list[str], live: dict[str, OutlierState], by_name: dict, task_type: str, *, owner: str):
    """The first service among ``pending`` whose ejection's time is up and whose one
    probe this task won: it gets this try first (its failure costs one failover)."""
    now = timezone.now()
    for name in pending:
        row, service = live.get(name), by_name.get(name)
        if row is None or service is None or not service.enabled or not row.awaiting_probe(now):
            continue
        if row.probe_claimed_at and (now - row.probe_claimed_at).total_seconds() < PROBE_CLAIM_SECONDS:
            continue  # someone else's probe is out; skip the UPDATE that would lose
        if OutlierState.claim_probe(name, task_type, owner=owner, now=now):
            return name
    return None


def wait_for_job(job: Job, timeout: float = 60.0) -> Job:
    """Poll until the job is final; quickly at first (most routed tasks take
    milliseconds), then every 100 ms."""
    deadline = time.monotonic() + timeout
    pause = 0.01
    while True:
        job.refresh_from_db()
        if job.is_final or time.monotonic() >= deadline:
            return job
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(0.1, pause * 1.5)
