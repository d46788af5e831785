"""View bases every app's API shares."""

from __future__ import annotations

from rest_framework import viewsets

from orchestration.core.models.ledger import record
from orchestrator_site.api.idempotency import all_or_nothing


def actor_of(request) -> str:
    return getattr(request.user, "username", "") or "anonymous"


class AuditedModelViewSet(viewsets.ModelViewSet):
    """CRUD whose every write lands in the ledger with its actor."""

    ledger_prefix = ""

    def _record(self, verb: str, instance, data=None) -> None:
        record(
            f"{self.ledger_prefix}.{verb}",
            f"{instance._meta.verbose_name} {instance} {verb}",
            subject=f"{self.ledger_prefix}:{getattr(instance, 'name', instance.pk)}",
            data=data or {},
            actor=actor_of(self.request),
        )

    # The write and its ledger entry commit together, or neither does.
    def perform_create(self, serializer):
        with all_or_nothing():
            self._record("created", serializer.save(), dict(serializer.validated_data))

    def perform_update(self, serializer):
        with all_or_nothing():
            self._record("updated", serializer.save(), dict(serializer.validated_data))

    def perform_destroy(self, instance):
        with all_or_nothing():
            self._record("deleted", instance)
            instance.delete()
