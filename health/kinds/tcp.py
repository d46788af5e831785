"""TCP checks: the port accepts a connection within the timeout."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any

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
from orchestration.core import outbound


def socket_error(exc: OSError, timeout: float) -> str:
    """One wording for connection failures across the socket-based kinds."""
    if isinstance(exc, socket.timeout | TimeoutError):
        return f"timeout: no connection within {timeout:g}s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return f"connection error: {exc}"[:200]


@register_kind
class TcpKind(CheckKind):
    name = "tcp"

    def clean(self, config: Mapping[str, Any]) -> dict[str, Any]:
        unknown_keys(config, {"host", "port"})
        port = as_int(config, "port", None, 1, 65535)
        if port is None:
            raise CheckConfigError("port", "is required")
        return {"host": as_host(config), "port": port}

    def probe(self, item: Probe) -> ProbeResult:
        timer = Timer(item.key)
        try:
            with outbound.connect(item.config["host"], item.config["port"], timeout=item.timeout):
                return timer.result(True)
        except outbound.OutboundRefused as exc:
            return timer.result(False, None, str(exc))
        except OSError as exc:
            return timer.result(False, None, socket_error(exc, item.timeout))
