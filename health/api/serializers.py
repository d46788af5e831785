from __future__ import annotations

from rest_framework import serializers

from health import status as pure
from health.models import HealthCheck, Service, ServiceAlert
from health.report import display_health
from orchestration.core import outbound
from orchestration.core.redaction import MaskedSecretError, restore_text

WRITE_FIELDS = [
    "name",
    "description",
    "category",
    "base_url",
    "health_path",
    "timeout_seconds",
    "check_interval_seconds",
    "failure_threshold",
    "success_threshold",
    "open_timeout_seconds",
    "capabilities",
    "weight",
    "depends_on",
    "enabled",
]
READ_FIELDS = [
    "health",
    "circuit_breaker_state",
    "uptime_percentage",
    "total_checks",
    "successful_checks",
    "consecutive_failures",
    "last_check_at",
    "last_response_time_ms",
    "last_status_code",
    "last_error",
    "next_check_at",
    "dependents",
    "created_at",
    "updated_at",
]


class ServiceSerializer(serializers.ModelSerializer):
    base_url = serializers.URLField(max_length=500, help_text="http(s) URL of the service")
    capabilities = serializers.ListField(
        child=serializers.CharField(max_length=100, allow_blank=False), required=False, max_length=200
    )
    depends_on = serializers.SlugRelatedField(
        slug_field="name", many=True, required=False, queryset=Service.objects.all()
    )
    health = serializers.SerializerMethodField()
    circuit_breaker_state = serializers.CharField(source="breaker_state", read_only=True)
    uptime_percentage = serializers.FloatField(read_only=True, allow_null=True)
    dependents = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)

    class Meta:
        model = Service
        fields = [*WRITE_FIELDS, *READ_FIELDS]
        read_only_fields = READ_FIELDS

    def get_health(self, obj: Service) -> str:
        return display_health(obj)

    def _restored(self, name: str, value: str) -> str:
        # Reads mask user-info and secret query values; a read written back keeps them.
        try:
            return restore_text(value, getattr(self.instance, name, None), name)
        except MaskedSecretError as exc:
            raise serializers.ValidationError(str(exc)) from None

    def validate_base_url(self, value: str) -> str:
        value = self._restored("base_url", value)
        if not value.lower().startswith(("http://", "https://")):
            raise serializers.ValidationError("Must be an http:// or https:// URL.")
        refused = outbound.url_problem(value)
        if refused:
            raise serializers.ValidationError(f"Outbound call refused: {refused}.")
        return value.rstrip("/")

    def validate_health_path(self, value: str) -> str:
        value = self._restored("health_path", value)
        if not value.startswith("/"):
            raise serializers.ValidationError("Must start with '/'.")
        return value

    def validate(self, attrs):
        name = attrs.get("name", getattr(self.instance, "name", None))
        deps = attrs.get("depends_on")
        if deps is not None and name:
            dep_names = [d.name for d in deps]
            if name in dep_names:
                raise serializers.ValidationError({"depends_on": "A service cannot depend on itself."})
            graph: dict[str, list[str]] = {}
            through = Service.depends_on.through
            for src, dst in through.objects.values_list("from_service__name", "to_service__name"):
                graph.setdefault(src, []).append(dst)
            if self.instance is not None and self.instance.name != name:
                graph.pop(self.instance.name, None)
            path = pure.cycle_path(graph, name, dep_names)
            if path:
                raise serializers.ValidationError(
                    {"depends_on": f"That would make a dependency cycle: {' → '.join(path)}."}
                )
        return attrs


class HealthCheckSerializer(serializers.ModelSerializer):
    class Meta:
        model = HealthCheck
        fields = [
            "id",
            "checked_at",
            "success",
            "health",
            "status_code",
            "response_time_ms",
            "error_message",
            "breaker_state",
        ]


class ServiceAlertSerializer(serializers.ModelSerializer):
    service = serializers.CharField(source="service.name")

    class Meta:
        model = ServiceAlert
        fields = ["id", "service", "opened_at", "resolved_at", "resolution", "error_message", "affected"]
