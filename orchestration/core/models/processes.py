from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.db.models import Count, Q, Sum
from django.utils import timezone

from orchestration.core.choices import ProcessRole

# A process is alive while its last beat is at most this many intervals old: one late
# beat (a slow database, a long garbage collection) does not make it look dead.
ALIVE_BEATS = 3
# Rows of processes not seen for this long are deleted by the next process that starts.
PRUNE_AFTER = timedelta(days=1)
# Two readings of a process's start time (its own, and its supervisor's) agree within this.
SAME_START = timedelta(seconds=2)


class OrchestratorProcess(models.Model):
    """One running (or recently gone) web process, cluster node or loop runner.

    Each process writes its own row when it starts and beats it every
    ``PROCESS_HEARTBEAT_SECONDS``; ``manage.py serve`` adds the restarts and last exit
    code of the children it supervises. (host, pid) names a process; ``started_at`` is
    the process's own start time, so a recycled pid is told apart from its predecessor.
    """

    role = models.CharField(max_length=10, choices=ProcessRole.choices)
    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    last_seen = models.DateTimeField()
    restarts = models.PositiveIntegerField(default=0, help_text="Times its supervisor restarted this child.")
    last_exit_code = models.IntegerField(
        null=True, blank=True, help_text="Exit code of the previous run (negative: killed by that signal)."
    )

    class Meta:
        ordering = ["role", "host", "pid"]
        verbose_name = "process"
        verbose_name_plural = "processes"
        constraints = [models.UniqueConstraint(fields=["host", "pid"], name="process_host_pid_uniq")]

    def __str__(self) -> str:
        return f"{self.role} {self.host}:{self.pid}"

    # --- liveness ------------------------------------------------------------------
    @staticmethod
    def alive_since(now: datetime | None = None) -> datetime:
        return (now or timezone.now()) - timedelta(seconds=settings.PROCESS_HEARTBEAT_SECONDS * ALIVE_BEATS)

    def is_alive(self, now: datetime | None = None) -> bool:
        return self.last_seen >= self.alive_since(now)

    @property
    def alive(self) -> bool:
        return self.is_alive()

    # --- writes, each one statement or two -------------------------------------------
    @classmethod
    def register(cls, role: str, host: str, pid: int, started_at: datetime) -> int:
        """This process is up: its row, keeping what a supervisor already wrote for it."""
        now = timezone.now()
        row, created = cls.objects.get_or_create(
            host=host, pid=pid, defaults={"role": role, "started_at": started_at, "last_seen": now}
        )
        if not created:
            # A row left by an earlier process with the same pid starts afresh; one its
            # supervisor has just written for this very process keeps its restarts.
            mine = Q(started_at__gte=started_at - SAME_START, started_at__lte=started_at + SAME_START)
            cls.objects.filter(pk=row.pk).exclude(mine).update(started_at=started_at, restarts=0, last_exit_code=None)
            cls.objects.filter(pk=row.pk).update(role=role, last_seen=now)
        return row.pk

    @classmethod
    def beat(cls, pk: int) -> bool:
        """False when the row is gone (pruned, or deleted by hand): register again."""
        return bool(cls.objects.filter(pk=pk).update(last_seen=timezone.now()))

    @classmethod
    def record_restart(
        cls,
        *,
        role: str,
        host: str,
        pid: int,
        started_at: datetime,
        restarts: int,
        last_exit_code: int | None,
        replaces: int | None = None,
    ) -> None:
        """A supervisor started ``pid`` in place of ``replaces``, which exited with
        ``last_exit_code``: one row for the child, carrying its restart count."""
        if replaces is not None:
            cls.objects.filter(host=host, pid=replaces).delete()
        cls.objects.update_or_create(
            host=host,
            pid=pid,
            defaults={
                "role": role,
                "started_at": started_at,
                "restarts": restarts,
                "last_exit_code": last_exit_code,
            },
            create_defaults={
                "role": role,
                "started_at": started_at,
                "last_seen": timezone.now(),
                "restarts": restarts,
                "last_exit_code": last_exit_code,
            },
        )

    @classmethod
    def forget(cls, host: str, pids: list[int]) -> int:
        """Processes that stopped cleanly leave no row behind."""
        return cls.objects.filter(host=host, pid__in=pids).delete()[0]

    @classmethod
    def prune(cls, now: datetime | None = None) -> int:
        return cls.objects.filter(last_seen__lt=(now or timezone.now()) - PRUNE_AFTER).delete()[0]

    # --- reads -----------------------------------------------------------------------
    @classmethod
    def by_role(cls, now: datetime | None = None) -> dict[str, dict[str, int]]:
        """Per role: restarts (summed over its rows), processes alive and known. One query."""
        since = cls.alive_since(now)
        rows = (
            cls.objects.order_by()
            .values("role")
            .annotate(restarts=Sum("restarts"), alive=Count("id", filter=Q(last_seen__gte=since)), total=Count("id"))
        )
        found = {row["role"]: row for row in rows}
        return {
            role: {
                "restarts": (found.get(role) or {}).get("restarts") or 0,
                "alive": (found.get(role) or {}).get("alive", 0),
                "total": (found.get(role) or {}).get("total", 0),
            }
            for role in ProcessRole.values
        }
