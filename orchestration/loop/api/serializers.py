from __future__ import annotations

from django.utils import timezone
from rest_framework import serializers

from orchestration.core.choices import AnomalySeverity, Backoff, Priority, RuleMode
from orchestration.core.escalation_rules import TierError, validate_tiers
from orchestration.core.jobs import django_tasks
from orchestration.core.jobs.kinds import http_request_problems, python_call_problems
from orchestration.core.jobs.registry import kind_names
from orchestration.core.models import EscalationPolicy, Job, Lane, LedgerEntry, OrchestratorProcess
from orchestration.core.redaction import redact, redact_error
from orchestration.loop.decider import ConditionError, validate_condition
from orchestration.loop.executor import action_types
from orchestration.loop.models import Action, AutomationPolicy, GuardrailCounter, Rule, ScoreDeduction
from orchestrator_site.api.permissions import require_run_code

FETCHED_KEYS = ("body", "response")
STAFF_ONLY = "(shown to staff only)"


class JobSerializer(serializers.ModelSerializer):
    class Meta:
        model = Job
        fields = [
            "id",
            "kind",
            "payload",
            "priority",
            "lane",
            "status",
            "attempts",
            "max_attempts",
            "backoff",
            "not_before",
            "score",
            "channel",
            "campaign",
            "reference",
            "result",
            "error",
            "lease_owner",
            "lease_expires_at",
            "cancel_requested",
            "deferred_by",
            "requested_not_before",
            "failed_permanently",
            "created_at",
            "updated_at",
            "dispatched_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    def to_representation(self, instance: Job) -> dict:
        data = super().to_representation(instance)
        # An http.request payload may carry Authorization & co.: shown masked (the
        # renderer masks the whole answer again); the traceback is for staff only.
        data["payload"] = redact(data["payload"])
        request = self.context.get("request")
        staff = bool(request is not None and request.user.is_staff)
        data["error"] = redact_error(data["error"], staff=staff)
        if not staff and isinstance(data["result"], dict):
            # What a URL answered (an http.request's body, a routed call's response) may
            # be anything the target holds: shown to staff only.
            data["result"] = {k: STAFF_ONLY if k in FETCHED_KEYS else v for k, v in data["result"].items()}
        return data


class JobCreateSerializer(serializers.Serializer):
    # Choices filled per instance (the schema lists the kinds a client may queue).
    kind = serializers.ChoiceField(choices=[])
    payload = serializers.JSONField(required=False, default=dict)
    priority = serializers.ChoiceField(choices=Priority.choices, default=Priority.NORMAL)
    lane = serializers.SlugField(max_length=64, default="default")
    max_attempts = serializers.IntegerField(min_value=1, max_value=100, default=3)
    backoff = serializers.ChoiceField(choices=Backoff.choices, default=Backoff.EXPONENTIAL)
    not_before = serializers.DateTimeField(required=False, allow_null=True)
    score = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=100)
    channel = serializers.CharField(required=False, allow_blank=True, max_length=40, default="")
    reference = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["kind"].choices = kind_names(client=True)
        known = ", ".join(kind_names(client=True))
        self.fields["kind"].error_messages["invalid_choice"] = f"Unknown job kind. Known kinds: {known}."

    def validate_kind(self, value: str) -> str:
        if value not in kind_names(client=True):
            raise serializers.ValidationError(f"Unknown job kind. Known kinds: {', '.join(kind_names(client=True))}.")
        return value

    def validate_payload(self, value):
        if not isinstance(value, dict):
            raise serializers.ValidationError("payload must be a JSON object.")
        return value

    def validate(self, attrs):
        if attrs.get("kind") == "http.request":
            # The outbound guard at creation: a link-local (cloud metadata) URL is a 400.
            problems = http_request_problems(attrs.get("payload") or {})
            if problems:
                raise serializers.ValidationError({"payload": problems})
        if attrs.get("kind") == "python.call":
            # Only a function the deployment declared runs, and only someone with the
            # run_code permission (not every staff member) may queue one.
            problems = python_call_problems(attrs.get("payload") or {})
            if problems:
                raise serializers.ValidationError({"payload": problems})
            require_run_code(self.context)
        elif attrs.get("kind") == django_tasks.KIND:
            # Only a @task of an installed app runs; queuing one runs code, as above.
            problems = django_tasks.payload_problems(attrs.get("payload") or {})
            if problems:
                raise serializers.ValidationError({"payload": problems})
            require_run_code(self.context)
        return attrs


class LaneSerializer(serializers.ModelSerializer):
    class Meta:
        model = Lane
        fields = ["id", "name", "concurrency_limit", "description"]


class ProcessSerializer(serializers.ModelSerializer):
    alive = serializers.SerializerMethodField()

    class Meta:
        model = OrchestratorProcess
        fields = ["role", "host", "pid", "started_at", "last_seen", "alive", "restarts", "last_exit_code"]
        read_only_fields = fields

    def get_alive(self, process: OrchestratorProcess) -> bool:
        # One reading of the clock per response: every row judged against the same moment.
        now = self.context.setdefault("now", timezone.now())
        return process.is_alive(now)


class LedgerEntrySerializer(serializers.ModelSerializer):
    class Meta:
        model = LedgerEntry
        fields = ["id", "event_type", "severity", "subject", "message", "data", "actor", "created_at"]
        read_only_fields = fields

    def to_representation(self, instance: LedgerEntry) -> dict:
        data = super().to_representation(instance)
        # New entries are stored masked; entries written before that are masked here.
        data["data"] = redact(data["data"])
        return data


class RuleSerializer(serializers.ModelSerializer):
    class Meta:
        model = Rule
        fields = [
            "id",
            "name",
            "description",
            "conditions",
            "action_type",
            "action_params",
            "priority",
            "enabled",
            "cooldown_seconds",
            "mode",
            "max_per_hour",
            "loop_limit",
            "risky",
            "effectiveness",
            "last_fired_at",
            "builtin",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["last_fired_at", "builtin", "created_at", "updated_at"]
        extra_kwargs = {"mode": {"required": False, "allow_blank": False}}

    risky = serializers.BooleanField(read_only=True, help_text="A risky action waits for approval unless automatic.")
    effectiveness = serializers.SerializerMethodField(
        help_text="Of this rule's verified actions: how many cleared their condition (rate = effective / verified)."
    )

    def to_representation(self, instance: Rule) -> dict:
        data = super().to_representation(instance)
        data["mode"] = instance.effective_mode
        return data

    def get_effectiveness(self, rule: Rule) -> dict:
        # One query for the whole page (the view puts the map in the context).
        table = self.context.get("effectiveness")
        if table is None:
            table = Action.effectiveness_by_rule()
        return table.get(rule.name, {"verified": 0, "effective": 0, "rate": None})

    def validate_conditions(self, value):
        return validate_condition_list(value)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # An enum in the schema: the action types the executor knows.
        known = action_types()
        self.fields["action_type"] = serializers.ChoiceField(
            choices=list(known),
            error_messages={"invalid_choice": f"Unknown action type. Known: {', '.join(known)}."},
        )

    def validate_action_type(self, value: str) -> str:
        known = action_types()
        if value not in known:
            raise serializers.ValidationError(f"Unknown action type. Known: {', '.join(known)}.")
        return value

    def validate_action_params(self, value):
        if not isinstance(value, dict):
            raise serializers.ValidationError("action_params must be a JSON object.")
        return value


def validate_condition_list(value) -> list:
    """A rule's (or a deduction's) ANDed conditions, each error naming its position."""
    if not isinstance(value, list) or not value:
        raise serializers.ValidationError("must be a non-empty list of conditions.")
    if len(value) > 20:
        raise serializers.ValidationError("at most 20 conditions.")
    errors = []
    for index, condition in enumerate(value):
        try:
            validate_condition(condition)
        except ConditionError as exc:
            errors.append(f"condition {index}: {exc}")
    if errors:
        raise serializers.ValidationError(errors)
    return value


class ScoreDeductionSerializer(serializers.ModelSerializer):
    # The contract's name for the ANDed conditions, the same shape as a rule's.
    condition = serializers.JSONField(source="conditions")

    class Meta:
        model = ScoreDeduction
        fields = [
            "id",
            "name",
            "condition",
            "points",
            "per_field",
            "max_points",
            "reason",
            "scope",
            "enabled",
            "builtin",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["builtin", "created_at", "updated_at"]

    def validate_condition(self, value):
        return validate_condition_list(value)

    def validate_per_field(self, value: str) -> str:
        if value and any(not part for part in value.split(".")):
            raise serializers.ValidationError("must be a dotted path such as 'ledger.errors_last_hour'.")
        return value


class ActionSerializer(serializers.ModelSerializer):
    class Meta:
        model = Action
        fields = [
            "id",
            "cycle",
            "rule",
            "rule_name",
            "action_type",
            "priority",
            "reason",
            "target",
            "params",
            "trigger",
            "status",
            "result",
            "error",
            "duration_ms",
            "guardrail",
            "expires_at",
            "decided_by",
            "decided_at",
            "decision_notes",
            "executed_at",
            "effective",
            "verified_at",
            "verification",
            "created_at",
        ]
        read_only_fields = fields


class GuardrailSerializer(serializers.ModelSerializer):
    """One automation on one target: its counts this hour and a pause loop protection set."""

    paused = serializers.SerializerMethodField()
    reason = serializers.CharField(source="last_reason", read_only=True)
    outcome = serializers.CharField(source="last_outcome", read_only=True)

    class Meta:
        model = GuardrailCounter
        fields = [
            "id",
            "automation",
            "target",
            "paused",
            "paused_at",
            "reason",
            "outcome",
            "attempts",
            "runs",
            "window_started_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_paused(self, obj: GuardrailCounter) -> bool:
        return obj.paused_at is not None


class AutomationPolicySerializer(serializers.ModelSerializer):
    """The guardrails of an automation that is not a rule (a recovery strategy, the
    routing ejection): a person sets its mode and limits."""

    mode = serializers.ChoiceField(choices=RuleMode.choices, required=False)

    class Meta:
        model = AutomationPolicy
        fields = ["id", "name", "mode", "risky", "max_per_hour", "loop_limit", "updated_by", "updated_at"]
        read_only_fields = ["name", "risky", "updated_by", "updated_at"]
        extra_kwargs = {"max_per_hour": {"max_value": 10_000}, "loop_limit": {"max_value": 10_000}}


class ActionDecisionSerializer(serializers.Serializer):
    notes = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")


class RunOnceSerializer(serializers.Serializer):
    dry_run = serializers.BooleanField(required=False, default=False)


class EnableSerializer(serializers.Serializer):
    interval_seconds = serializers.FloatField(required=False, min_value=0.1, max_value=3600)


class EscalationTierSerializer(serializers.Serializer):
    """One tier: unacknowledged after ``after_minutes`` → ``channels``, repeated every
    ``repeat_minutes`` (empty: once)."""

    after_minutes = serializers.IntegerField(min_value=0)
    channels = serializers.ListField(child=serializers.CharField(), help_text="Notification channel names.")
    repeat_minutes = serializers.IntegerField(min_value=1, required=False, allow_null=True)


class EscalationPolicySerializer(serializers.ModelSerializer):
    severities = serializers.ListField(
        child=serializers.ChoiceField(choices=AnomalySeverity.choices), required=False, allow_empty=True
    )
    tiers = EscalationTierSerializer(many=True)

    class Meta:
        model = EscalationPolicy
        fields = ["id", "name", "severities", "after_recovery", "tiers", "enabled", "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]

    def validate_tiers(self, value):
        try:
            return validate_tiers([dict(t) for t in value])
        except TierError as exc:
            raise serializers.ValidationError(str(exc)) from None
