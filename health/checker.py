"""Concurrent HTTP probes: a bounded thread pool, one timeout per request.

No database here: the sweep hands in plain ``Probe`` values and persists the
``ProbeResult`` values it gets back, so threads never hold a database connection.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests

from health.status import classify_response
from orchestration.core import outbound

USER_AGENT = "orchestrator-health/1"

_local = threading.local()


@dataclass(frozen=True)
class Probe:
    key: int
    url: str
    timeout: float


@dataclass(frozen=True)
class ProbeResult:
    key: int
    success: bool
    status_code: int | None
    response_time_ms: float
    error_message: str


def _session() -> requests.Session:
    session = getattr(_local, "session", None)
    if session is None:
        # Proxies from the environment must never redirect a health check elsewhere; every
        # connection passes the outbound guard.
        session = outbound.session(trust_env=False)
        session.headers["User-Agent"] = USER_AGENT
        _local.session = session
    return session


def probe(item: Probe, *, max_body_bytes: int = 65536) -> ProbeResult:
    """GET the URL once. Refused, timed out, non-2xx and invalid bodies are failures
    with a message that says which."""
    started = time.perf_counter()

    def result(ok: bool, code: int | None, error: str) -> ProbeResult:
        return ProbeResult(item.key, ok, code, round((time.perf_counter() - started) * 1000, 2), error)

    deadline = started + item.timeout
    try:
        with _session().get(item.url, timeout=item.timeout, stream=True, allow_redirects=False) as response:
            body = bytearray()
            # The read timeout is per socket read; the deadline also bounds a server
            # that trickles its body out byte by byte.
            for chunk in response.iter_content(8192):
                body.extend(chunk)
                if len(body) >= max_body_bytes:
                    break
                if time.perf_counter() > deadline:
                    return result(False, response.status_code, f"timeout: body not complete after {item.timeout:g}s")
            error = classify_response(response.status_code, response.headers.get("Content-Type", ""), bytes(body))
            return result(error is None, response.status_code, error or "")
    except outbound.OutboundRefused as exc:
        return result(False, None, str(exc))
    except requests.exceptions.ConnectTimeout:
        return result(False, None, f"timeout: no connection within {item.timeout:g}s")
    except requests.exceptions.ReadTimeout:
        return result(False, None, f"timeout: no response within {item.timeout:g}s")
    except requests.exceptions.ConnectionError as exc:
        text = str(exc)
        if "refused" in text.lower():
            return result(False, None, "connection refused")
        if isinstance(exc.__context__, TimeoutError) or "timed out" in text.lower():
            return result(False, None, f"timeout: no response within {item.timeout:g}s")
        return result(False, None, f"connection error: {text[:200]}")
    except requests.exceptions.RequestException as exc:
        return result(False, None, f"request error: {type(exc).__name__}: {str(exc)[:200]}")


def run_probes(
    items: Sequence[Probe],
    *,
    max_workers: int = 64,
    max_body_bytes: int = 65536,
    on_result: Callable[[ProbeResult], None] | None = None,
) -> list[ProbeResult]:
    """Probe everything concurrently; results in the order of ``items``."""
    if not items:
        return []
    workers = max(1, min(max_workers, len(items)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="health-probe") as pool:
        futures = [pool.submit(probe, item, max_body_bytes=max_body_bytes) for item in items]
        results = []
        for future in futures:
            outcome = future.result()
            if on_result is not None:
                on_result(outcome)
            results.append(outcome)
    return results
