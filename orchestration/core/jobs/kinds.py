"""Built-in job kinds."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings

from orchestration.core import outbound, runnables
from orchestration.core.jobs.broker import run_package
from orchestration.core.jobs.registry import PermanentJobError, job_kind


@job_kind("noop", description="Does nothing; for smoke tests and benchmarks.")
def noop(payload: dict, ctx) -> dict:
    return {"ok": True}


@job_kind("sleep", description='Sleeps payload["seconds"] (max 3600), stopping early when canceled.')
def sleep(payload: dict, ctx) -> dict:
    seconds = float(payload.get("seconds", 1))
    if not 0 <= seconds <= 3600:
        raise PermanentJobError("seconds must be between 0 and 3600")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ctx.should_stop():
            return {"slept": seconds - (deadline - time.monotonic()), "stopped": True}
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
    return {"slept": seconds}


@job_kind("fail", description='Always fails; payload {"permanent": true} fails without retry.')
def fail(payload: dict, ctx) -> dict:
    message = str(payload.get("message", "failed on purpose"))
    if payload.get("permanent"):
        raise PermanentJobError(message)
    raise RuntimeError(message)


@job_kind(
    "mark", description='Appends "<job id> <attempt> <lease owner>" to RUNS_DIR/marks/<name>: a countable side effect.'
)
def mark(payload: dict, ctx) -> dict:
    """A side effect that can be counted afterwards: fault tests use it to prove no job
    is lost, none runs more than once per attempt, and which node ran each."""
    owner = ctx.job.lease_owner or "-"
    line = append_mark(str(payload.get("name", "default")), f"{ctx.job.pk} {ctx.job.attempts} {owner}")
    if payload.get("sleep"):
        time.sleep(min(float(payload["sleep"]), 60))
    return {"marked": line}


def append_mark(name: str, text: str) -> str:
    if not name.replace("-", "").replace("_", "").isalnum():
        raise PermanentJobError("name may hold letters, digits, '-' and '_' only")
    folder = settings.RUNS_DIR / "marks"
    folder.mkdir(parents=True, exist_ok=True)
    # One small O_APPEND write: atomic, so concurrent workers never interleave lines.
    with open(folder / name, "a") as handle:
        handle.write(text + "\n")
    return text


@runnables.runnable
def mark_schedule(name: str) -> str:
    """A schedule target for fault tests: each firing leaves one line."""
    return append_mark(name, "fired")


def http_request_problems(payload: dict) -> dict[str, str]:
    """What is wrong with an http.request payload, by key: checked when the job is
    created (a 400) and again when it runs (DNS may have changed since)."""
    url = payload.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return {"url": "must be an http(s) URL"}
    refused = outbound.url_problem(url)
    return {"url": f"outbound call refused: {refused}"} if refused else {}


@job_kind("http.request", description="Makes one HTTP request; 2xx (or expected_status) is success.")
def http_request(payload: dict, ctx) -> dict:
    problems = http_request_problems(payload)
    if problems:
        raise PermanentJobError("; ".join(f"payload.{k}: {v}" for k, v in problems.items()))
    url = payload["url"]
    method = str(payload.get("method", "GET")).upper()
    timeout = float(payload.get("timeout", 10))
    expected = payload.get("expected_status")
    started = time.monotonic()
    try:
        response = outbound.request(
            method,
            url,
            headers=payload.get("headers") or {},
            json=payload.get("json"),
            data=payload.get("body"),
            timeout=timeout,
        )
    except outbound.OutboundRefused as exc:
        raise PermanentJobError(str(exc)) from None  # the address will not become allowed on a retry
    elapsed_ms = round((time.monotonic() - started) * 1000, 1)
    ok = response.status_code == int(expected) if expected else 200 <= response.status_code < 300
    if not ok:
        # 4xx will not change on retry, except 408/429 which say "try later".
        message = f"{method} {url} answered {response.status_code}"
        if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
            raise PermanentJobError(message)
        raise RuntimeError(message)
    body: Any
    try:
        body = response.json()
    except ValueError:
        body = response.text[:2000]
    return {"status_code": response.status_code, "elapsed_ms": elapsed_ms, "body": body}


def import_callable(path: str):
    """The callable declared runnable at exactly ``path`` (orchestration/core/runnables.py);
    anything else fails the job for good: the registry may have changed since it was queued."""
    try:
        return runnables.resolve(path)
    except runnables.NotRunnable as exc:
        raise PermanentJobError(str(exc)) from None


@job_kind("python.call", description='Calls payload["path"](*args, **kwargs), a function declared runnable.')
def python_call(payload: dict, ctx) -> dict:
    problems = python_call_problems(payload)
    if problems:
        raise PermanentJobError("; ".join(f"{k}: {v}" for k, v in problems.items()))
    func = import_callable(payload["path"])
    result = func(*payload.get("args", []), **payload.get("kwargs", {}))
    return result if isinstance(result, dict) else {"value": result}


def python_call_problems(payload: dict) -> dict[str, str]:
    """What is wrong with a python.call payload, by key: checked when the job is created
    and again when it runs."""
    problems = {}
    path_problem = runnables.problem(payload.get("path"))
    if path_problem:
        problems["path"] = path_problem
    if not isinstance(payload.get("args", []), list):
        problems["args"] = "must be a list"
    if not isinstance(payload.get("kwargs", {}), dict):
        problems["kwargs"] = "must be an object"
    return problems


@job_kind(
    "django_q.task",
    description="A task django-q2 queued (a schedule's firing, async_task): its function, run once per attempt.",
    internal=True,
)
def django_q_task(payload: dict, ctx) -> dict:
    import json

    result = run_package(payload)
    try:
        json.dumps(result)
    except (TypeError, ValueError):
        result = repr(result)
    return {"result": result}
