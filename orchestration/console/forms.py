"""Forms of the console. Validation errors are shown next to their field."""

from __future__ import annotations

from django import forms

from pipeline.models import PipelineDefinition


class GateDecisionForm(forms.Form):
    """Approve or reject the gate a pipeline job waits at."""

    DECISIONS = (("approve", "Approve"), ("reject", "Reject"))

    decision = forms.ChoiceField(choices=DECISIONS)
    stage = forms.CharField(max_length=40, widget=forms.HiddenInput)
    notes = forms.CharField(
        required=False,
        max_length=5000,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "Notes (required to reject)"}),
    )

    def clean(self):
        data = super().clean()
        # A rejection pauses the job; whoever resumes it needs to know why.
        if data.get("decision") == "reject" and not (data.get("notes") or "").strip():
            self.add_error("notes", "Say why the stage is rejected, so whoever resumes the job knows what to fix.")
        return data


class LoopIntervalForm(forms.Form):
    """Enable the loop, optionally with a new interval."""

    interval_seconds = forms.FloatField(
        required=False,
        min_value=0.1,
        max_value=3600,
        widget=forms.NumberInput(attrs={"step": "0.1", "placeholder": "seconds"}),
        help_text="Between 0.1 and 3600 seconds; empty keeps the current interval.",
    )


class StartPipelineForm(forms.Form):
    """Start a pipeline job (POST /api/v1/pipeline/jobs/ from a browser)."""

    slug = forms.SlugField(max_length=100, help_text="Letters, digits, '-' and '_' — names the job's run folder.")
    intent = forms.CharField(
        required=False,
        max_length=5000,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "What should this job produce?"}),
    )
    definition = forms.ModelChoiceField(
        queryset=None, required=False, to_field_name="name", empty_label="default definition"
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["definition"].queryset = PipelineDefinition.objects.order_by("name")
