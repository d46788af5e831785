"""Public status pages (a group of services a team opts in to show) and the daily
check counts their 90-day uptime bars are drawn from."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import models, transaction

from orchestration.core.models.ledger import record as ledger_record
from orchestration.core.storedjson import JSONField


class StatusPage(models.Model):
    slug = models.SlugField(max_length=60, unique=True, help_text="The page lives at /status/<slug>/.")
    title = models.CharField(max_length=120)
    description = models.CharField(max_length=500, blank=True, help_text="Shown to everyone: nothing private.")
    public = models.BooleanField(
        default=False, help_text="Shown without sign-in at /status/ (names, states, uptime and incident times only)."
    )
    services = models.ManyToManyField("health.Service", blank=True, related_name="status_pages")
    tags = JSONField(default=list, blank=True, help_text="Services with any of these tags are on the page too.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        app_label = "health"
        ordering = ["title"]

    def __str__(self) -> str:
        return self.title

    def clean(self) -> None:
        super().clean()
        if not isinstance(self.tags, list) or not all(isinstance(t, str) and t.strip() for t in self.tags):
            raise ValidationError({"tags": "A list of labels (non-empty strings)."})

    def save_by(self, *, actor: str, services: list | None = None, created: bool | None = None) -> None:
        """Save (and set ``services`` when given) with its ledger entry, all or nothing."""
        created = self.pk is None if created is None else created
        with transaction.atomic():
            self.save()
            if services is not None:
                self.services.set(services)
            ledger_record(
                f"status_page.{'created' if created else 'updated'}",
                f"Status page {self.slug} {'created' if created else 'updated'} by {actor}"
                f" ({'public' if self.public else 'not public'})",
                subject=f"status_page:{self.slug}",
                actor=actor,
                data=self.as_record(),
            )

    def remove(self, *, actor: str) -> None:
        with transaction.atomic():
            ledger_record(
                "status_page.deleted",
                f"Status page {self.slug} deleted by {actor}",
                subject=f"status_page:{self.slug}",
                actor=actor,
                data=self.as_record(),
            )
            self.delete()

    def as_record(self) -> dict[str, Any]:
        return {
            "slug": self.slug,
            "title": self.title,
            "public": self.public,
            "services": sorted(s.name for s in self.services.all()) if self.pk else [],
            "tags": self.tags,
        }

    def members(self, limit: int = 500):
        """The enabled services on the page, by name (the named ones and the tagged ones)."""
        from health.models import Service

        query = models.Q(pk__in=self.services.values("pk"))
        for tag in self.tags or []:
            query |= models.Q(tags__icontains=f'"{tag}"')
        return Service.objects.enabled().filter(query).select_related("circuit").order_by("name")[:limit]


class ServiceDay(models.Model):
    """Checks and successes of one service on one UTC day, added to by every sweep, so a
    90-day uptime bar reads 90 rows, not the (pruned) check history."""

    service = models.ForeignKey("health.Service", on_delete=models.CASCADE, related_name="days")
    day = models.DateField()
    checks = models.PositiveIntegerField(default=0)
    successes = models.PositiveIntegerField(default=0)

    class Meta:
        app_label = "health"
        constraints = [
            # The sweep's upsert targets it; one row per service and day.
            models.UniqueConstraint(fields=["service", "day"], name="serviceday_service_day_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.service_id} {self.day}: {self.successes}/{self.checks}"
