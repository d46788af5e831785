"""TLS certificate checks: days left before the certificate the server presents
expires, failing under the warning threshold, and (unless told not to) whether the
system trusts it for that host name."""

from __future__ import annotations

import functools
import ssl
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from cryptography import x509

from health.kinds.base import (
    CheckConfigError,
    CheckKind,
    Probe,
    ProbeResult,
    Timer,
    as_host,
    as_int,
    register_kind,
    unknown_keys,
)
from health.kinds.tcp import socket_error
from orchestration.core import outbound


def days_left(not_after: datetime, now: datetime) -> float:
    return (not_after - now).total_seconds() / 86400


def judge_expiry(not_after: datetime, now: datetime, warn_days: int) -> str | None:
    """None while the certificate has more than ``warn_days`` left, else why not. Pure."""
    left = days_left(not_after, now)
    if left <= 0:
        return f"certificate expired on {not_after:%Y-%m-%d %H:%M} UTC"
    if left < warn_days:
        return f"certificate expires in {left:.1f} days ({not_after:%Y-%m-%d}), under the {warn_days}-day threshold"
    return None


@functools.cache
def _context(verify: bool) -> ssl.SSLContext:
    """One context per process and setting: loading the system's CA store took 33 ms of
    CPU per probe. A context is safe to share between the probe threads."""
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _peer_certificate(host: str, port: int, timeout: float, verify: bool) -> bytes:
    context = _context(verify)
    with outbound.connect(host, port, timeout=timeout) as raw:
        raw.settimeout(timeout)
        with context.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError("the server presented no certificate")
    return der


@register_kind
class TlsKind(CheckKind):
    name = "tls"

    def clean(self, config: Mapping[str, Any]) -> dict[str, Any]:
        unknown_keys(config, {"host", "port", "warn_days", "verify"})
        verify = config.get("verify", True)
        if not isinstance(verify, bool):
            raise CheckConfigError("verify", "true or false")
        return {
            "host": as_host(config),
            "port": as_int(config, "port", 443, 1, 65535),
            "warn_days": as_int(config, "warn_days", 14, 0, 3650),
            "verify": verify,
        }

    def probe(self, item: Probe) -> ProbeResult:
        timer = Timer(item.key)
        config = item.config
        host, port = config["host"], config.get("port", 443)
        try:
            der = _peer_certificate(host, port, item.timeout, config.get("verify", True))
        except outbound.OutboundRefused as exc:
            return timer.result(False, None, str(exc))
        except ssl.SSLCertVerificationError as exc:
            return timer.result(False, None, f"certificate not trusted: {exc.verify_message or exc}"[:200])
        except ssl.SSLError as exc:
            return timer.result(False, None, f"TLS error: {exc}"[:200])
        except OSError as exc:
            return timer.result(False, None, socket_error(exc, item.timeout))
        try:
            not_after = x509.load_der_x509_certificate(der).not_valid_after_utc
        except ValueError as exc:
            return timer.result(False, None, f"unreadable certificate: {exc}"[:200])
        error = judge_expiry(not_after, datetime.now(UTC), config.get("warn_days", 14))
        return timer.result(error is None, None, error or "")
