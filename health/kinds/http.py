"""HTTP checks: a request to the service's health URL, judged by status code, body
keyword, a JSON-path condition and response time."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

import requests

from health.kinds.base import (
    CheckConfigError,
    CheckKind,
    Probe,
    ProbeResult,
    Timer,
    as_int,
    register_kind,
    unknown_keys,
)
from health.status import classify_response
from orchestration.core import outbound

USER_AGENT = "orchestrator-health/1"
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
MAX_BODY_BYTES = 65536

_local = threading.local()
_MISSING = object()
# Shared by the pool threads (read-only once built; a race only builds one twice).
_templates: dict[tuple[str, tuple[tuple[str, str], ...]], requests.PreparedRequest] = {}
_prepared_urls: dict[str, str] = {}
MAX_CACHED = 100_000  # distinct health URLs remembered (about 0.2 KB each) before starting over
_PATH_PART = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


def _session() -> requests.Session:
    session = getattr(_local, "session", None)
    if session is None:
        # Proxies from the environment must never redirect a health check elsewhere; every
        # connection passes the outbound guard.
        session = outbound.session(trust_env=False)
        session.headers["User-Agent"] = USER_AGENT
        _local.session = session
    return session


def _prepared(session: requests.Session, method: str, url: str, headers: dict[str, str]) -> requests.PreparedRequest:
    """The request ``session.request`` would send, without its per-call cost: building
    it (settings merged, URL parsed and quoted) was a quarter of an HTTP probe's CPU.
    Everything but the URL comes from a template per method and headers; the URL is
    prepared once. Only while the session holds no cookies (they would be added per
    request) and the URL carries no credentials (they become a header)."""
    if len(session.cookies) or "@" in url:
        return session.prepare_request(requests.Request(method, url, headers=headers))
    prepared_url = _prepared_urls.get(url)
    if prepared_url is None:
        scratch = requests.PreparedRequest()
        scratch.prepare_url(url, None)  # (raises what session.request would: MissingSchema, InvalidURL…)
        if len(_prepared_urls) >= MAX_CACHED:
            _prepared_urls.clear()
        prepared_url = _prepared_urls[url] = scratch.url
    key = (method, tuple(headers.items()))
    template = _templates.get(key)
    if template is None:
        template = session.prepare_request(requests.Request(method, "http://template.invalid/", headers=headers))
        if len(_templates) >= 1000:
            _templates.clear()
        _templates[key] = template
    prepared = requests.PreparedRequest()
    prepared.method = template.method
    prepared.url = prepared_url
    prepared.headers = template.headers.copy()
    # Never written when redirects are not followed (a redirect's next request copies it).
    prepared._cookies = template._cookies
    prepared.body = template.body
    return prepared


def parse_json_path(path: str) -> list[str | int]:
    """``$.data.items[0].state`` (or without ``$.``) → ["data", "items", 0, "state"]."""
    text = path.strip()
    if text.startswith("$"):
        text = text[1:]
    parts: list[str | int] = []
    pos = 0
    while pos < len(text):
        match = _PATH_PART.match(text, pos)
        if match is None or match.end() == pos:
            raise ValueError(f"cannot read {path!r} at {text[pos:]!r} (use $.a.b[0].c)")
        parts.append(match[1] if match[1] is not None else int(match[2]))
        pos = match.end()
    if not parts:
        raise ValueError("empty path (use $.a.b[0].c)")
    return parts


def json_path_value(document: Any, parts: list[str | int]) -> Any:
    """The value at ``parts``, or ``_MISSING``."""
    node = document
    for part in parts:
        if isinstance(part, int) and isinstance(node, list) and -len(node) <= part < len(node):
            node = node[part]
        elif isinstance(part, str) and isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return _MISSING
    return node


def judge(
    config: Mapping[str, Any], status_code: int, content_type: str, body: bytes, elapsed_ms: float, complete: bool
) -> str | None:
    """None when the response passes this check's conditions, else why not. Pure."""
    expected = config.get("expected_status")
    if expected:
        if status_code not in expected:
            return f"HTTP {status_code} (expected {', '.join(map(str, expected))})"
    else:
        error = classify_response(status_code, content_type, body) if complete else None
        if error or not 200 <= status_code < 300:
            return error or f"HTTP {status_code}"
    keyword = config.get("keyword")
    if keyword and keyword.encode() not in body:
        return f"keyword {keyword!r} not found in the body"
    path = config.get("json_path")
    if path:
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return f"{path}: body is not valid JSON"
        value = json_path_value(document, parse_json_path(path))
        if value is _MISSING:
            return f"{path} not found in the body"
        if "json_equals" in config:
            if value != config["json_equals"]:
                return f"{path} is {json.dumps(value)[:80]}, expected {json.dumps(config['json_equals'])[:80]}"
        elif not value:
            return f"{path} is {json.dumps(value)[:80]}"
    limit = config.get("max_response_ms")
    if limit is not None and elapsed_ms > limit:
        return f"slow: answered in {elapsed_ms:.0f} ms (limit {limit} ms)"
    return None


@register_kind
class HttpKind(CheckKind):
    name = "http"
    needs_url = True
    allowed = {"method", "headers", "expected_status", "keyword", "json_path", "json_equals", "max_response_ms"}

    def clean(self, config: Mapping[str, Any]) -> dict[str, Any]:
        unknown_keys(config, self.allowed)
        out: dict[str, Any] = {}
        method = str(config.get("method") or "GET").upper()
        if method not in METHODS:
            raise CheckConfigError("method", f"one of {', '.join(METHODS)}")
        out["method"] = method
        headers = config.get("headers") or {}
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and k.strip() and "\n" not in k + v for k, v in headers.items()
        ):
            raise CheckConfigError("headers", "an object of header names to string values")
        if headers:
            out["headers"] = headers
        expected = config.get("expected_status")
        if expected not in (None, []):
            if not isinstance(expected, list) or not all(
                isinstance(c, int) and not isinstance(c, bool) and 100 <= c <= 599 for c in expected
            ):
                raise CheckConfigError("expected_status", "a list of HTTP status codes (100-599)")
            out["expected_status"] = sorted(set(expected))
        for key in ("keyword", "json_path"):
            value = config.get(key)
            if value in (None, ""):
                continue
            if not isinstance(value, str) or len(value) > 500:
                raise CheckConfigError(key, "a string of at most 500 characters")
            out[key] = value
        if "json_path" in out:
            try:
                parse_json_path(out["json_path"])
            except ValueError as exc:
                raise CheckConfigError("json_path", str(exc)) from None
        if "json_equals" in config:
            if "json_path" not in out:
                raise CheckConfigError("json_equals", "needs json_path")
            out["json_equals"] = config["json_equals"]
        limit = as_int(config, "max_response_ms", None, 1, 600_000)
        if limit is not None:
            out["max_response_ms"] = limit
        return out

    def probe(self, item: Probe) -> ProbeResult:
        return http_probe(item)


def http_probe(item: Probe, *, max_body_bytes: int = MAX_BODY_BYTES) -> ProbeResult:
    """Request the URL once. Refused, timed out, unexpected status and bodies that fail
    the conditions are failures with a message that says which."""
    timer = Timer(item.key)
    config = item.config
    deadline = timer.started + item.timeout
    try:
        session = _session()
        request = _prepared(session, config.get("method", "GET"), item.url, dict(config.get("headers") or {}))
        # What session.request merges in: no proxies (trust_env is off), the session's TLS settings.
        with session.send(
            request,
            timeout=item.timeout,
            allow_redirects=False,
            proxies={},
            stream=True,
            verify=session.verify,
            cert=session.cert,
        ) as response:
            body = bytearray()
            complete = True
            # The read timeout is per socket read; the deadline also bounds a server
            # that trickles its body out byte by byte.
            for chunk in response.iter_content(8192):
                body.extend(chunk)
                if len(body) >= max_body_bytes:
                    complete = False
                    break
                if time.perf_counter() > deadline:
                    return timer.result(
                        False, response.status_code, f"timeout: body not complete after {item.timeout:g}s"
                    )
            content_type = response.headers.get("Content-Type", "")
            error = judge(config, response.status_code, content_type, bytes(body), timer.elapsed_ms(), complete)
            return timer.result(error is None, response.status_code, error or "")
    except outbound.OutboundRefused as exc:
        return timer.result(False, None, str(exc))
    except requests.exceptions.ConnectTimeout:
        return timer.result(False, None, f"timeout: no connection within {item.timeout:g}s")
    except requests.exceptions.ReadTimeout:
        return timer.result(False, None, f"timeout: no response within {item.timeout:g}s")
    except requests.exceptions.ConnectionError as exc:
        text = str(exc)
        if "refused" in text.lower():
            return timer.result(False, None, "connection refused")
        if isinstance(exc.__context__, TimeoutError) or "timed out" in text.lower():
            return timer.result(False, None, f"timeout: no response within {item.timeout:g}s")
        return timer.result(False, None, f"connection error: {text[:200]}")
    except requests.exceptions.RequestException as exc:
        return timer.result(False, None, f"request error: {type(exc).__name__}: {str(exc)[:200]}")
