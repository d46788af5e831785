from __future__ import annotations

from rest_framework import serializers

from health import maintenance
from health import status as pure
from health.choices import CheckKindChoice, PingKind
from health.kinds import CheckConfigError, get_kind
from health.models import HealthCheck, MaintenanceWindow, Service, ServiceAlert
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
    "kind",
    "check",
    "tags",
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
    "ping_url",
    "last_ping_at",
    "last_ping_kind",
    "created_at",
    "updated_at",
]


class ServiceSerializer(serializers.ModelSerializer):
    base_url = serializers.URLField(
        max_length=500, required=False, allow_blank=True, help_text="http(s) URL of the service (HTTP checks)"
    )
    check = serializers.JSONField(
        source="check_config", required=False, help_text="Settings of the check kind (see the API docs)."
    )
    tags = serializers.ListField(
        child=serializers.CharField(max_length=50, allow_blank=False), required=False, max_length=50
    )
    ping_url = serializers.SerializerMethodField(help_text="Heartbeats: the secret URL a job pings.")
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
    # Blank until the first ping: the schema must say so.
    last_ping_kind = serializers.ChoiceField(choices=PingKind.choices, allow_blank=True, read_only=True)

    class Meta:
        model = Service
        fields = [*WRITE_FIELDS, *READ_FIELDS]
        read_only_fields = READ_FIELDS

    def get_health(self, obj: Service) -> str:
        return display_health(obj)

    def get_ping_url(self, obj: Service) -> str | None:
        if obj.kind != CheckKindChoice.HEARTBEAT or obj.ping_key is None:
            return None
        path = f"/ping/{obj.ping_key}"
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path

    def _restored(self, name: str, value: str) -> str:
        # Reads mask user-info and secret query values; a read written back keeps them.
        try:
            return restore_text(value, getattr(self.instance, name, None), name)
        except MaskedSecretError as exc:
            raise serializers.ValidationError(str(exc)) from None

    def validate_base_url(self, value: str) -> str:
        value = self._restored("base_url", value)
        if not value:
            return value
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

    def validate_check(self, value):
        if not isinstance(value, dict):
            raise serializers.ValidationError("An object of the kind's settings.")
        return value

    def _validate_kind(self, attrs) -> None:
        """The check's settings are validated against the kind it will have, so
        changing one without the other is caught too."""
        kind = attrs.get("kind", getattr(self.instance, "kind", CheckKindChoice.HTTP))
        if "kind" in attrs or "check_config" in attrs or self.instance is None:
            config = attrs.get("check_config", getattr(self.instance, "check_config", None) or {})
            if "kind" in attrs and "check_config" not in attrs and self.instance and self.instance.kind != kind:
                config = {}
            try:
                attrs["check_config"] = get_kind(kind).clean(config)
            except CheckConfigError as exc:
                raise serializers.ValidationError({"check": {exc.field: [exc.message]}}) from None
        base_url = attrs.get("base_url", getattr(self.instance, "base_url", ""))
        if kind == CheckKindChoice.HTTP and not base_url:
            raise serializers.ValidationError({"base_url": ["Required for HTTP checks."]})

    def validate(self, attrs):
        self._validate_kind(attrs)
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


class RecurrenceSerializer(serializers.Serializer):
    cron = serializers.CharField(max_length=100, help_text="Five-field cron; a weekly window: e.g. '0 2 * * sun'.")
    duration_minutes = serializers.IntegerField(min_value=1, max_value=maintenance.MAX_DURATION_MINUTES)
    timezone = serializers.CharField(max_length=64, required=False, default="UTC")


class MaintenanceWindowSerializer(serializers.ModelSerializer):
    recurrence = RecurrenceSerializer(required=False, allow_null=True, help_text="Optional: cron + duration.")
    services = serializers.SlugRelatedField(
        slug_field="name", many=True, queryset=Service.objects.all(), required=False
    )
    tags = serializers.ListField(
        child=serializers.CharField(max_length=50, allow_blank=False), required=False, max_length=50
    )
    active = serializers.SerializerMethodField(help_text="Whether the window is on now.")
    current = serializers.SerializerMethodField(help_text="The occurrence under way: {starts_at, ends_at}, or null.")
    next = serializers.SerializerMethodField(help_text="The next occurrence to start: {starts_at, ends_at}, or null.")

    class Meta:
        model = MaintenanceWindow
        fields = [
            "id",
            "name",
            "description",
            "starts_at",
            "ends_at",
            "recurrence",
            "services",
            "tags",
            "all_services",
            "active",
            "current",
            "next",
            "created_by",
            "created_at",
        ]
        read_only_fields = ["id", "created_by", "created_at"]

    @staticmethod
    def _span(span) -> dict | None:
        return {"starts_at": span[0].isoformat(), "ends_at": span[1].isoformat()} if span else None

    def get_active(self, obj: MaintenanceWindow) -> bool:
        return obj.occurrence() is not None

    def get_current(self, obj: MaintenanceWindow) -> dict | None:
        return self._span(obj.occurrence())

    def get_next(self, obj: MaintenanceWindow) -> dict | None:
        return self._span(obj.next_occurrence())

    def validate_recurrence(self, value):
        if value:
            problem = maintenance.recurrence_problem(dict(value))
            if problem:
                raise serializers.ValidationError(problem)
        return dict(value) if value else None

    def validate(self, attrs):
        merged = {
            key: attrs.get(key, getattr(self.instance, key, None))
            for key in ("starts_at", "ends_at", "recurrence", "all_services")
        }
        if not merged["recurrence"] and merged["ends_at"] is None:
            raise serializers.ValidationError({"ends_at": "A one-off window needs its end."})
        if merged["starts_at"] and merged["ends_at"] and merged["ends_at"] <= merged["starts_at"]:
            raise serializers.ValidationError({"ends_at": "Must be after starts_at."})
        services = attrs.get("services", None if self.instance is None else list(self.instance.services.all()))
        tags = attrs.get("tags", getattr(self.instance, "tags", None))
        if not (merged["all_services"] or services or tags):
            raise serializers.ValidationError({"services": "Name services, tags, or set all_services."})
        return attrs

    def create(self, validated_data):
        services = validated_data.pop("services", [])
        window = MaintenanceWindow(**validated_data)
        window.save_by(actor=self.context["actor"], services=services, created=True)
        return window

    def update(self, instance, validated_data):
        services = validated_data.pop("services", None)
        for key, value in validated_data.items():
            setattr(instance, key, value)
        instance.save_by(actor=self.context["actor"], services=services, created=False)
        return instance
