"""Sign-in protection: django-axes counts failed sign-ins on the console and admin
logins and locks out a username or an address (settings "Sign-in"); every lockout, and
every attempt refused during one, is written to the ledger."""

from __future__ import annotations

from typing import Any

from orchestration.core.choices import Severity
from orchestration.core.models.ledger import record


def record_lockout(sender: Any, request: Any = None, username: str | None = None, ip_address: str | None = None, **kw):
    path = getattr(request, "path", "") or ""
    who = username or "(no username)"
    record(
        "auth.locked_out",
        f"Sign-in locked out for {who} from {ip_address or 'an unknown address'} after repeated failures",
        severity=Severity.WARNING,
        subject=f"user:{username}" if username else f"address:{ip_address}",
        # The username as typed and the address only: never a password.
        data={"username": username or "", "ip_address": ip_address or "", "path": path[:200]},
        actor=(username or "anonymous")[:150],
    )


def connect() -> None:
    from axes.signals import user_locked_out

    user_locked_out.connect(record_lockout, dispatch_uid="orchestration.core.signin.record_lockout")
