from __future__ import annotations

from django.db import transaction
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from health.api.serializers import (
    HealthCheckSerializer,
    MaintenanceWindowSerializer,
    ServiceAlertSerializer,
    ServiceSerializer,
)
from health.models import DependencyError, MaintenanceWindow, Service, ServiceAlert
from health.report import service_status
from orchestrator_site.api.pagination import KeysetPagination
from orchestrator_site.api.viewsets import AuditedModelViewSet, actor_of

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.\-]*"

# POST …/{name}/check answers with the service's status line (as in /health/status) and
# what the sweep did, not with the service's record.
_CHECKED = inline_serializer(
    "ServiceChecked",
    {
        "name": serializers.CharField(),
        "health": serializers.CharField(),
        "enabled": serializers.BooleanField(),
        "last_check": serializers.DateTimeField(allow_null=True),
        "response_time_ms": serializers.FloatField(allow_null=True),
        "status_code": serializers.IntegerField(allow_null=True),
        "error_message": serializers.CharField(allow_null=True),
        "consecutive_failures": serializers.IntegerField(),
        "total_checks": serializers.IntegerField(),
        "successful_checks": serializers.IntegerField(),
        "uptime_percentage": serializers.FloatField(allow_null=True),
        "circuit_breaker_state": serializers.CharField(),
        "depends_on": serializers.ListField(child=serializers.CharField()),
        "sweep": serializers.DictField(),
    },
)


class ServiceViewSet(AuditedModelViewSet):
    """Monitored HTTP services, addressed by name."""

    queryset = Service.objects.select_related("circuit").prefetch_related("depends_on", "dependents")
    serializer_class = ServiceSerializer
    lookup_field = "name"
    lookup_value_regex = NAME_PATTERN
    ledger_prefix = "service"
    filterset_fields = ["enabled", "health"]

    def _record(self, verb: str, instance, data=None) -> None:
        # Ledger data is JSON: related services are written by name.
        clean = {
            key: [getattr(v, "name", v) for v in value] if isinstance(value, list | tuple) else value
            for key, value in (data or {}).items()
        }
        super()._record(verb, instance, clean)

    def perform_update(self, serializer):
        instance = serializer.instance
        if instance.enabled and serializer.validated_data.get("enabled") is False:
            blockers = instance.enabled_dependents()
            if blockers:
                raise DependencyError(f"Required by {', '.join(blockers)}")
        with transaction.atomic():
            super().perform_update(serializer)
            serializer.instance.ensure_circuit()

    def perform_destroy(self, instance):
        instance.remove(actor=actor_of(self.request))

    def _toggle(self, request, enabled: bool):
        service = self.get_object()
        service.set_enabled(enabled, actor=actor_of(request))
        return Response(self.get_serializer(self.get_queryset().get(pk=service.pk)).data)

    @extend_schema(request=None, responses={200: ServiceSerializer})
    @action(detail=True, methods=["post"])
    def enable(self, request, name=None):
        return self._toggle(request, True)

    @extend_schema(
        request=None,
        responses={200: ServiceSerializer, 409: OpenApiResponse(description="Required by enabled services")},
    )
    @action(detail=True, methods=["post"])
    def disable(self, request, name=None):
        return self._toggle(request, False)

    @extend_schema(request=None, responses={200: ServiceSerializer})
    @action(detail=True, methods=["post"], url_path="reset-circuit")
    def reset_circuit(self, request, name=None):
        service = self.get_object()
        service.reset_circuit(actor=actor_of(request))
        return Response(self.get_serializer(self.get_queryset().get(pk=service.pk)).data)

    @extend_schema(request=None, responses={200: _CHECKED})
    @action(detail=True, methods=["post"])
    def check(self, request, name=None):
        """Check this one service now (its breaker still applies)."""
        service = self.get_object()
        sweep = service.check_now(actor=actor_of(request))
        fresh = self.get_queryset().get(pk=service.pk)
        return Response({"name": fresh.name, **service_status(fresh), "sweep": sweep.as_dict()})

    @extend_schema(responses={200: HealthCheckSerializer(many=True)})
    @action(detail=True, methods=["get"], serializer_class=HealthCheckSerializer, pagination_class=KeysetPagination)
    def checks(self, request, name=None):
        service = self.get_object()
        queryset = service.checks.all()
        success = request.query_params.get("success")
        if success is not None:
            if success.lower() not in ("true", "false"):
                raise ValidationError({"success": "Use true or false."})
            queryset = queryset.filter(success=success.lower() == "true")
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(HealthCheckSerializer(page, many=True).data)


class ServiceAlertViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Dependency-aware alerts: one per root cause, with the dependents it explains."""

    queryset = ServiceAlert.objects.select_related("service")
    serializer_class = ServiceAlertSerializer

    def get_queryset(self):
        queryset = super().get_queryset()
        is_open = self.request.query_params.get("open")
        if is_open is not None:
            if is_open.lower() not in ("true", "false"):
                raise ValidationError({"open": "Use true or false."})
            queryset = queryset.filter(resolved_at__isnull=is_open.lower() == "true")
        return queryset


class MaintenanceWindowViewSet(viewsets.ModelViewSet):
    """Maintenance windows, one-off or recurring, by service, tag or everything: no
    alerts while one is on; checks and uptime go on."""

    queryset = MaintenanceWindow.objects.prefetch_related("services")
    serializer_class = MaintenanceWindowSerializer

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "actor": actor_of(self.request)}

    def perform_destroy(self, instance: MaintenanceWindow) -> None:
        instance.remove(actor=actor_of(self.request))

    @extend_schema(responses={200: MaintenanceWindowSerializer(many=True)})
    @action(detail=False, methods=["get"], pagination_class=None)
    def active(self, request):
        """The windows on now."""
        return Response(self.get_serializer(MaintenanceWindow.active(), many=True).data)
