"""Background work as any Django app writes it: plain ``@task`` functions. Nothing here
knows about the orchestrator; settings.TASKS makes their jobs durable and watched."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from django_tasks import TaskContext, task


@task(queue_name="reports")
def count_ledger_events(hours: int = 24) -> dict[str, int]:
    """How many ledger entries of each severity the last ``hours`` brought."""
    from django.db.models import Count

    from orchestration.core.models import LedgerEntry

    since = timezone.now() - timedelta(hours=hours)
    rows = LedgerEntry.objects.filter(created_at__gte=since).values("severity").annotate(n=Count("id"))
    return {row["severity"]: row["n"] for row in rows}


@task(priority=50, queue_name="emails", takes_context=True)
def send_welcome(context: TaskContext, address: str) -> str:
    """Pretends to send an e-mail; says which attempt it was."""
    if "@" not in address:
        raise ValueError(f"not an e-mail address: {address!r}")
    return f"welcome sent to {address} (attempt {context.attempt})"


@task(queue_name="reports", takes_context=True)
def build_report(context: TaskContext, name: str, seconds: float = 0.0) -> str:
    """A slow report: takes ``seconds``, then appends one line per attempt that got that
    far to RUNS_DIR/reports/<name> (so a reader can see how often it really ran)."""
    import time

    from django.conf import settings

    if not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError("name may hold letters, digits, '-' and '_' only")
    time.sleep(min(max(seconds, 0.0), 300.0))
    folder = settings.RUNS_DIR / "reports"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / name, "a") as handle:
        handle.write(f"attempt {context.attempt}\n")
    return f"report {name} built"
