"""Notification channels and their deliveries: ``/api/v1/channels/``."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.response import Response

from orchestration.core.choices import NotifySeverity
from orchestration.core.models import Delivery, NotificationChannel
from orchestration.core.notifications import url_problem
from orchestrator_site.api.pagination import KeysetPagination
from orchestrator_site.api.viewsets import AuditedModelViewSet, actor_of


class ChannelSerializer(serializers.ModelSerializer):
    url = serializers.CharField(max_length=2000, help_text="An Apprise URL; always answered masked.")
    severities = serializers.ListField(
        child=serializers.ChoiceField(choices=NotifySeverity.choices), required=False, max_length=10
    )
    tags = serializers.ListField(
        child=serializers.CharField(max_length=50, allow_blank=False), required=False, max_length=50
    )

    class Meta:
        model = NotificationChannel
        fields = ["id", "name", "url", "severities", "tags", "remind_every_minutes", "notices", "enabled", "created_at"]
        read_only_fields = ["id", "created_at"]

    def to_representation(self, instance: NotificationChannel) -> dict:
        data = super().to_representation(instance)
        data["url"] = instance.masked_url
        return data

    def validate_url(self, value: str) -> str:
        # A client that writes back what it read sends the masked URL: keep the stored one.
        if self.instance is not None and value == self.instance.masked_url:
            return self.instance.url
        problem = url_problem(value)
        if problem:
            raise serializers.ValidationError(problem)
        return value.strip()


class DeliverySerializer(serializers.ModelSerializer):
    attempt_log = serializers.SerializerMethodField()

    class Meta:
        model = Delivery
        fields = [
            "id",
            "event",
            "severity",
            "tags",
            "title",
            "reminder",
            "status",
            "attempts",
            "next_attempt_at",
            "last_error",
            "created_at",
            "sent_at",
            "attempt_log",
        ]

    def get_attempt_log(self, obj: Delivery) -> list[dict]:
        return [
            {"attempted_at": a.attempted_at, "ok": a.ok, "duration_ms": a.duration_ms, "error": a.error}
            for a in obj.attempt_log.all()
        ]


class ChannelViewSet(AuditedModelViewSet):
    """Where notifications go: Apprise URLs routed by severity and tags."""

    queryset = NotificationChannel.objects.all()
    serializer_class = ChannelSerializer
    ledger_prefix = "channel"

    def _record(self, verb: str, instance, data=None) -> None:
        clean = dict(data or {})
        if "url" in clean:
            clean["url"] = instance.masked_url  # the ledger never holds the credential
        super()._record(verb, instance, clean)

    @extend_schema(request=None, responses={200: DeliverySerializer})
    @action(detail=True, methods=["post"])
    def test(self, request, pk=None):
        """Send a test notification now; answers with its delivery record."""
        delivery = self.get_object().send_test(actor=actor_of(request))
        return Response(DeliverySerializer(delivery).data)

    @extend_schema(responses={200: DeliverySerializer(many=True)})
    @action(detail=True, methods=["get"], serializer_class=DeliverySerializer, pagination_class=KeysetPagination)
    def deliveries(self, request, pk=None):
        channel = self.get_object()
        page = self.paginate_queryset(channel.deliveries.prefetch_related("attempt_log"))
        return self.get_paginated_response(DeliverySerializer(page, many=True).data)
