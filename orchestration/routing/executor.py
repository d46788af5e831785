"""Executing routed tasks through the job queue: POST {base_url}/process with the task
data; retries with the priority's backoff, then the next fallback; every attempt is
remembered and feeds the service's circuit breaker."""

from __future__ import annotations

import time
from typing import Any

import requests
from django.db import transaction

from health.models import Service
from orchestration.core import outbound
from orchestration.core.jobs import queue
from orchestration.core.jobs.backoff import retry_delay
from orchestration.core.jobs.registry import PermanentJobError, RetryLater, job_kind
from orchestration.core.models import Job
from orchestration.routing.models import RouteStat, TaskOutcome
from orchestration.routing.router import REFERENCE_PREFIX, ROUTED_KIND, RouteDecision, route


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
                "backoff": retry["backoff"],
                "timeout": retry["timeout"],
                "context": context,
                "cursor": 0,
                "tries": 0,
            },
            priority=priority,
            # One attempt per try on each service; skipping an open circuit costs none.
            max_attempts=(retry["max_retries"] + 1) * len(services),
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
        context=context,
    )
    RouteStat.learn(task_type, service, success, execution_ms)
    return outcome


def _post(service, data: dict, timeout: float) -> tuple[bool, int | None, Any, str, float]:
    """(success, status code, body, error, elapsed ms). 4xx raises PermanentJobError."""
    url = service.base_url.rstrip("/") + "/process"
    started = time.monotonic()
    try:
        response = outbound.post(url, json=data, timeout=timeout)
    except outbound.OutboundRefused as exc:
        return False, None, None, str(exc), (time.monotonic() - started) * 1000
    except requests.Timeout:
        return False, None, None, f"timed out after {timeout:g}s", (time.monotonic() - started) * 1000
    except requests.RequestException as exc:
        return False, None, None, f"{type(exc).__name__}: {exc}", (time.monotonic() - started) * 1000
    elapsed = (time.monotonic() - started) * 1000
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text[:2000]
    if 200 <= response.status_code < 300:
        return True, response.status_code, body, "", elapsed
    return False, response.status_code, body, f"{url} answered {response.status_code}", elapsed


@job_kind("routing.task", description="A routed task: POST {base_url}/process on the chosen service, then fallbacks.")
def run_routed_task(payload: dict, ctx) -> dict:
    job = ctx.job
    services = payload["services"]
    cursor, tries = payload.get("cursor", 0), payload.get("tries", 0)
    by_name = {s.name: s for s in Service.objects.filter(name__in=services).select_related("circuit")}
    failures: list[str] = list(payload.get("failures", []))

    def save_progress() -> None:
        current = services[cursor] if cursor < len(services) else services[-1]
        Job.objects.filter(pk=job.pk).update(
            payload={**payload, "cursor": cursor, "tries": tries, "failures": failures[-20:]},
            reference=f"{REFERENCE_PREFIX}{current}",
        )

    while cursor < len(services):
        name = services[cursor]
        service = by_name.get(name)
        breaker = service.ensure_circuit() if service else None
        if service is None or not service.enabled or (breaker and not breaker.allow()):
            reason = "gone" if service is None else ("disabled" if not service.enabled else "circuit open")
            failures.append(f"{name}: skipped ({reason})")
            cursor, tries = cursor + 1, 0
            continue
        ok, code, body, error, elapsed = _post(service, payload.get("data", {}), float(payload.get("timeout", 30)))
        remember(
            task_type=payload["task_type"],
            service=name,
            success=ok,
            execution_ms=round(elapsed, 1),
            job_id=job.pk,
            priority=payload.get("priority", "normal"),
            strategy=payload.get("strategy", ""),
            attempt=tries + 1,
            status_code=code,
            error=error,
            context=payload.get("context", ""),
        )
        client_error = code is not None and 400 <= code < 500 and code not in (408, 429)
        if breaker and not client_error:  # a rejected request is not the service's fault
            breaker.record(ok)
        if ok:
            save_progress()
            return {
                "service": name,
                "status_code": code,
                "response": body,
                "execution_ms": round(elapsed, 1),
                "tries_on_service": tries + 1,
                "fallbacks_used": cursor,
            }
        failures.append(f"{name}: {error}")
        if client_error:
            save_progress()
            raise PermanentJobError(f"{name} rejected the task: {error}")
        tries += 1
        if tries > int(payload.get("max_retries", 3)):
            cursor, tries = cursor + 1, 0
            if cursor < len(services):
                save_progress()
                raise RetryLater(f"{name} failed {failures[-1]}; moving to {services[cursor]}", 0)
            break
        save_progress()
        raise RetryLater(f"{name} failed: {error}", retry_delay(tries, payload.get("backoff", "exponential")))
    save_progress()
    raise PermanentJobError("every service failed: " + "; ".join(failures[-6:]))


def wait_for_job(job: Job, timeout: float = 60.0) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        job.refresh_from_db()
        if job.is_final or time.monotonic() >= deadline:
            return job
        time.sleep(0.1)
