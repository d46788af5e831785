"""The outbound guard: one check before every request the orchestrator makes (health
checks, worker HTTP targets, ``http.request`` jobs, routed calls, alert webhooks).

A target is refused when an address its name resolves to lies in
``OUTBOUND_BLOCKED_NETWORKS`` (default ``169.254.0.0/16,fe80::/10``: link-local, where
cloud metadata services answer with the machine's credentials), or outside
``OUTBOUND_ALLOWED_NETWORKS`` when that is set (the test suite sets loopback, so nothing
it generates leaves the machine).

Checked twice: when a URL is written (a 400 naming the field: ``url_problem``), and when
a connection is opened, on the very address it connects to (``session()``'s adapter), so
neither a DNS answer that changed since nor a redirect reaches a refused address; that
is a permanent failure of the run (``OutboundRefused``).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_BLOCKED = ("169.254.0.0/16", "fe80::/10")


class OutboundRefused(ValueError):
    """The target's address is not one the orchestrator may call."""


@lru_cache(maxsize=32)
def parse_networks(items: tuple[str, ...]) -> tuple[Network, ...]:
    """``("10.0.0.0/8", "::1")`` → networks; ValueError naming the bad item."""
    networks = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not a network (e.g. 169.254.0.0/16 or fe80::/10)") from None
    return tuple(networks)


def address_problem(address: str, blocked: Sequence[Network], allowed: Sequence[Network]) -> str | None:
    """Why ``address`` may not be called, or None. Pure: no settings, no DNS."""
    ip: Address = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone ("fe80::1%eth0") is not part of it
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:169.254.169.254 is 169.254.169.254
    for network in blocked:
        if ip.version == network.version and ip in network:
            return f"{ip} is in a blocked network ({network}, OUTBOUND_BLOCKED_NETWORKS)"
    if allowed and not any(ip.version == n.version and ip in n for n in allowed):
        return f"{ip} is outside OUTBOUND_ALLOWED_NETWORKS ({', '.join(map(str, allowed))})"
    return None


def _configured() -> tuple[tuple[Network, ...], tuple[Network, ...]]:
    blocked = getattr(settings, "OUTBOUND_BLOCKED_NETWORKS", DEFAULT_BLOCKED)
    allowed = getattr(settings, "OUTBOUND_ALLOWED_NETWORKS", ())
    return parse_networks(tuple(blocked)), parse_networks(tuple(allowed))


def resolve(host: str, port: int | None = None) -> list[str]:
    """The addresses ``host`` resolves to now ([] when it does not resolve)."""
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, port or 0, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def host_problem(host: str, port: int | None = None) -> str | None:
    blocked, allowed = _configured()
    for address in resolve(host, port):
        problem = address_problem(address, blocked, allowed)
        if problem:
            return problem if address == host.strip("[]") else f"{host} resolves to {problem}"
    return None


def url_problem(url: str) -> str | None:
    """Why the orchestrator may not call ``url`` (checked when a URL is written), or None.
    A name that does not resolve now passes: it is checked again on every connection."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None  # not a URL: the field's own validation says so
    if not host:
        return None
    return host_problem(host, port)


def check_url(url: str) -> None:
    problem = url_problem(url)
    if problem:
        raise OutboundRefused(f"outbound call refused: {problem}")


# --- the connection-time check ---------------------------------------------------------
class _GuardedConnectionMixin:
    """Resolves the host itself, refuses a blocked address before any packet is sent,
    then connects to the address it checked (so DNS cannot answer differently twice)."""

    _dns_host: str
    port: int

    def _new_conn(self) -> socket.socket:
        blocked, allowed = _configured()
        addresses = resolve(self._dns_host, self.port)
        for address in addresses:
            problem = address_problem(address, blocked, allowed)
            if problem:
                raise OutboundRefused(f"outbound call refused: {problem}")
        if not addresses:
            return super()._new_conn()  # type: ignore[misc]  # its own NameResolutionError
        host, self._dns_host = self._dns_host, addresses[0]
        try:
            return super()._new_conn()  # type: ignore[misc]
        finally:
            self._dns_host = host


class GuardedHTTPConnection(_GuardedConnectionMixin, HTTPConnection):
    pass


class GuardedHTTPSConnection(_GuardedConnectionMixin, HTTPSConnection):
    pass


class GuardedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = GuardedHTTPConnection


class GuardedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = GuardedHTTPSConnection


class GuardedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": GuardedHTTPConnectionPool,
            "https": GuardedHTTPSConnectionPool,
        }


def session(*, trust_env: bool = True) -> requests.Session:
    """A requests session whose every connection (redirects included) passes the guard."""
    guarded = requests.Session()
    guarded.trust_env = trust_env
    guarded.mount("http://", GuardedAdapter())
    guarded.mount("https://", GuardedAdapter())
    return guarded


def request(method: str, url: str, **kwargs: Any) -> requests.Response:
    """``requests.request`` through the guard: the URL is checked first (a clear error
    even through a proxy), then every connection."""
    check_url(url)
    with session() as guarded:
        return guarded.request(method, url, **kwargs)


def post(url: str, **kwargs: Any) -> requests.Response:
    return request("POST", url, **kwargs)


def connect(host: str, port: int, *, timeout: float) -> socket.socket:
    """A TCP connection through the guard (for probes that are not HTTP): every address
    the name resolves to is checked, then the first one that accepts is used, so the
    address connected to is one that was checked."""
    blocked, allowed = _configured()
    addresses = resolve(host, port)
    if not addresses:
        raise OSError(f"{host} does not resolve")
    for address in addresses:
        problem = address_problem(address, blocked, allowed)
        if problem:
            raise OutboundRefused(f"outbound call refused: {problem}")
    last: OSError | None = None
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout=timeout)
        except OSError as exc:
            last = exc
    assert last is not None
    raise last


def check_address(address: str) -> None:
    """Refuse a literal address (a DNS server a probe asks, say) outside the guard."""
    blocked, allowed = _configured()
    problem = address_problem(address, blocked, allowed)
    if problem:
        raise OutboundRefused(f"outbound call refused: {problem}")
