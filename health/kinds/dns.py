"""DNS checks: a name resolves (to the expected answers, when given), asked of the
system's resolvers or of one named server."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from health.kinds.base import CheckConfigError, CheckKind, Probe, ProbeResult, Timer, register_kind, unknown_keys
from orchestration.core import outbound

RECORD_TYPES = ("A", "AAAA", "CNAME", "MX", "NS", "TXT", "SRV", "PTR", "CAA", "SOA")


def parse_server(value: str) -> tuple[str, int]:
    """``"127.0.0.1"``, ``"127.0.0.1:5353"`` or ``"[::1]:53"`` → (address, port)."""
    text = value.strip()
    host, port = text, 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port = int(rest.lstrip(":"))
    elif text.count(":") == 1:
        host, _, tail = text.partition(":")
        port = int(tail)
    ipaddress.ip_address(host)
    if not 1 <= port <= 65535:
        raise ValueError("port out of range")
    return host, port


def answer_text(rdata: Any) -> str:
    """How an answer compares with ``expected``: names without the final dot, TXT unquoted."""
    if rdata.rdtype == dns.rdatatype.TXT:
        return b"".join(rdata.strings).decode(errors="replace")
    return rdata.to_text().rstrip(".")


@register_kind
class DnsKind(CheckKind):
    name = "dns"

    def clean(self, config: Mapping[str, Any]) -> dict[str, Any]:
        unknown_keys(config, {"name", "record_type", "expected", "server"})
        name = config.get("name")
        if not isinstance(name, str) or not name.strip():
            raise CheckConfigError("name", "the name to resolve is required")
        try:
            dns.name.from_text(name.strip())
        except dns.exception.DNSException as exc:
            raise CheckConfigError("name", f"not a DNS name ({exc})") from None
        record_type = str(config.get("record_type") or "A").upper()
        if record_type not in RECORD_TYPES:
            raise CheckConfigError("record_type", f"one of {', '.join(RECORD_TYPES)}")
        out: dict[str, Any] = {"name": name.strip(), "record_type": record_type}
        expected = config.get("expected") or []
        if not isinstance(expected, list) or not all(isinstance(e, str) and e.strip() for e in expected):
            raise CheckConfigError("expected", "a list of answers (strings)")
        if expected:
            out["expected"] = [e.strip().rstrip(".") if record_type != "TXT" else e for e in expected]
        server = config.get("server")
        if server:
            try:
                parse_server(str(server))
            except ValueError:
                raise CheckConfigError("server", "an IP address, optionally with :port") from None
            out["server"] = str(server).strip()
        return out

    def probe(self, item: Probe) -> ProbeResult:
        timer = Timer(item.key)
        config = item.config
        resolver = dns.resolver.Resolver(configure=not config.get("server"))
        if config.get("server"):
            address, port = parse_server(config["server"])
            resolver.nameservers = [address]
            resolver.port = port
        try:
            for nameserver in resolver.nameservers:
                outbound.check_address(str(nameserver))
            answer = resolver.resolve(
                config["name"], config.get("record_type", "A"), lifetime=item.timeout, search=False
            )
        except outbound.OutboundRefused as exc:
            return timer.result(False, None, str(exc))
        except dns.resolver.NXDOMAIN:
            return timer.result(False, None, f"{config['name']} does not exist (NXDOMAIN)")
        except dns.resolver.NoAnswer:
            return timer.result(False, None, f"no {config.get('record_type', 'A')} record for {config['name']}")
        except dns.exception.Timeout:
            return timer.result(False, None, f"timeout: no DNS answer within {item.timeout:g}s")
        except dns.exception.DNSException as exc:
            return timer.result(False, None, f"DNS error: {exc}"[:200])
        got = sorted(answer_text(r) for r in answer)
        missing = [e for e in config.get("expected", []) if e not in got]
        if missing:
            return timer.result(False, None, f"expected {', '.join(missing)}; got {', '.join(got) or 'nothing'}")
        return timer.result(True)
