from __future__ import annotations

from django.conf import settings
from rest_framework import serializers

from orchestrator_site.api.permissions import require_run_code
from pipeline.definitions import DefinitionError, defines_code, parse, runner_problems
from pipeline.models import Artifact, PipelineDefinition, PipelineEvent, PipelineJob


class PipelineDefinitionSerializer(serializers.ModelSerializer):
    class Meta:
        model = PipelineDefinition
        fields = [
            "id",
            "name",
            "description",
            "stages",
            "gates",
            "stage_timeouts",
            "runners",
            "lane",
            "stage_attempts",
            "retry_timed_out_stages",
            "is_default",
            "created_at",
        ]
        read_only_fields = ["id", "is_default", "created_at"]

    def validate(self, attrs):
        # The same rules as a YAML file, so the API cannot store what load_pipeline refuses.
        # A PATCH names only what changes: the rest is the stored definition (before,
        # PATCH {"description": …} was refused for "missing" stage timeouts).
        current = {f: getattr(self.instance, f) for f in self.Meta.fields if hasattr(self.instance, f)}
        merged = {**current, **attrs} if self.instance is not None else attrs
        document = {
            "gates": merged.get("gates", {}),
            "pipeline": {
                "stages": merged.get("stages"),
                "stage_timeouts": merged.get("stage_timeouts"),
                "runners": merged.get("runners", {}),
                "lane": merged.get("lane", "pipeline"),
                "stage_attempts": merged.get("stage_attempts", 3),
                "retry_timed_out_stages": merged.get("retry_timed_out_stages", False),
            },
        }
        problems = runner_problems(merged.get("runners"))
        if problems:
            raise serializers.ValidationError({"runners": problems})
        try:
            spec = parse(document, name=merged.get("name"), task_timeout_seconds=settings.Q_CLUSTER["timeout"])
        except DefinitionError as exc:
            raise serializers.ValidationError({"definition": exc.errors})
        if defines_code(merged.get("runners"), self.instance.runners if self.instance is not None else None):
            require_run_code(self.context)
        attrs.update(stage_timeouts=spec.stage_timeouts, stages=spec.stages)
        if "gates" in attrs:
            # Stored with every gate setting spelled out; a PATCH that names no gates keeps them as stored.
            attrs["gates"] = spec.gates
        return attrs


class PipelineJobCreateSerializer(serializers.Serializer):
    slug = serializers.SlugField(max_length=100)
    intent = serializers.CharField(required=False, allow_blank=True, default="", max_length=5000)
    definition = serializers.SlugRelatedField(
        slug_field="name", queryset=PipelineDefinition.objects.all(), required=False, allow_null=True
    )


class PipelineJobSerializer(serializers.ModelSerializer):
    definition = serializers.SlugRelatedField(slug_field="name", read_only=True)
    gates = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()

    class Meta:
        model = PipelineJob
        fields = [
            "id",
            "slug",
            "intent",
            "definition",
            "status",
            "stage",
            "progress",
            "gates",
            "error",
            "waiting_since",
            "gate_deadline",
            "created_by",
            "created_at",
            "updated_at",
            "finished_at",
        ]

    def get_gates(self, job: PipelineJob) -> list[dict]:
        return job.gates_view()

    def get_progress(self, job: PipelineJob) -> dict:
        done, total = job.progress()
        return {"done": done, "total": total}


class GateDecisionInputSerializer(serializers.Serializer):
    stage = serializers.CharField(max_length=40)
    notes = serializers.CharField(required=False, allow_blank=True, default="", max_length=5000)
    input = serializers.DictField(
        required=False, default=dict, help_text="Values for the gate's input_schema (approve only)."
    )


class PipelineEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = PipelineEvent
        fields = ["id", "type", "stage", "data", "created_at"]


class ArtifactSerializer(serializers.ModelSerializer):
    class Meta:
        model = Artifact
        fields = ["stage", "path", "kind", "metadata", "created_at"]
