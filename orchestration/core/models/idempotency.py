from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from orchestration.core.storedjson import JSONField

# How long a key stands for its first answer (Stripe's and the IETF draft's 24 h).
IDEMPOTENCY_TTL = timedelta(hours=24)


class IdempotencyKeyQuerySet(models.QuerySet):
    def expired(self, now=None):
        return self.filter(created_at__lt=(now or timezone.now()) - IDEMPOTENCY_TTL)


class IdempotencyKey(models.Model):
    """A client's ``Idempotency-Key`` and the first answer given to it.

    Inserted in the same transaction as the write it guards: a retry (or a concurrent
    twin) meets the unique constraint and is answered from this row instead of writing
    again. ``status_code`` is null only while a first request that answers after its
    commit (a routed task that waits) is still running.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    # sha256 of method, path and body: the same key with another request is refused.
    fingerprint = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response = JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = IdempotencyKeyQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotency_user_key_uniq")]

    def __str__(self) -> str:
        return f"{self.key} ({self.user_id})"
