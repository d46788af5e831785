"""Check kinds, one registry: each kind validates its ``check`` settings and probes
without the ORM. Importing this package registers the built-in kinds."""

from health.kinds import dns, heartbeat, http, tcp, tls  # noqa: F401  (they register themselves)
from health.kinds.base import (
    DEFAULT_KIND,
    CheckConfigError,
    CheckKind,
    Probe,
    ProbeResult,
    get_kind,
    kinds,
    register_kind,
)

__all__ = [
    "DEFAULT_KIND",
    "CheckConfigError",
    "CheckKind",
    "Probe",
    "ProbeResult",
    "get_kind",
    "kinds",
    "register_kind",
]
