"""Stage runners: what a stage actually does.

A definition's ``runners`` maps a stage to ``placeholder`` (the default), to a mapping
with a ``kind`` (``command``, ``http``: the registry in pipeline/runner_kinds.py), or to
a dotted path: only functions declared runnable (orchestration/core/runnables.py)::

    @runnable
    def my_stage(ctx: StageContext) -> dict | None: ...

* Write files under ``ctx.run_dir`` and register each with ``ctx.add_artifact``;
  check ``ctx.has_artifact(path)`` first: a stage may run again (resume, a process
  killed mid-stage) and must not produce an artifact twice.
* Long runners call ``ctx.should_stop()`` (or ``ctx.sleep()``) and return early when
  the job was canceled or the run superseded.
* Raise to fail the run (retried up to the definition's ``stage_attempts``);
  ``PermanentJobError`` fails it at once.

Stages without a runner get ``placeholder``: real files that say they are
placeholders, with the metadata a real stage would report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from orchestration.core import runnables
from orchestration.core.jobs.registry import PermanentJobError
from orchestration.core.runnables import runnable
from pipeline import runner_kinds
from pipeline.models import Artifact, PipelineJob

Runner = Callable[["StageContext"], "dict | None"]

PLACEHOLDER_NOTE = "PLACEHOLDER: written by the orchestrator's default stage runner; no real {what} was produced."


@dataclass
class StageContext:
    job: PipelineJob
    stage: str
    run: int
    run_dir: Path
    queue_should_stop: Callable[[], bool] = lambda: False
    created: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    #: What a person should know about the run (files refused or skipped), in its events.
    notes: list[str] = field(default_factory=list)
    _checked_at: float = 0.0
    _stopped: bool = False

    def should_stop(self) -> bool:
        """True once the job was canceled, timed out or moved on to another run."""
        if self._stopped or self.queue_should_stop():
            self._stopped = True
            return True
        # The queue's own flag is refreshed at heartbeats (seconds apart); a person
        # pressing cancel should stop a placeholder within a fraction of a second.
        if time.monotonic() - self._checked_at >= 0.2:
            self._checked_at = time.monotonic()
            current = PipelineJob.objects.filter(pk=self.job.pk).values_list("status", "stage", "stage_run").first()
            self._stopped = current != ("running", self.stage, self.run)
        return self._stopped

    def sleep(self, seconds: float) -> bool:
        """Wait up to ``seconds``; False if told to stop meanwhile."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.should_stop():
                return False
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        return not self.should_stop()

    def gate_inputs(self) -> dict[str, dict[str, Any]]:
        """What people entered at the gates before this stage (stage → values), as
        approved: a stage's runner works with the choices made upstream."""
        stages = self.job.config.get("stages", [])
        before = stages[: stages.index(self.stage)] if self.stage in stages else []
        gates = self.job.config.get("gates", {})
        return {stage: self.job.gate_input(stage) for stage in before if stage in gates}

    def stage_input(self) -> dict[str, Any]:
        """What a command or HTTP runner is given: the job, the stage and the gate inputs."""
        job = self.job
        return {
            "job": {"id": job.pk, "slug": job.slug, "intent": job.intent},
            "stage": self.stage,
            "run": self.run,
            "gate_inputs": self.gate_inputs(),
        }

    def save_output(self, relpath: str, kind: str, content: bytes, metadata: dict[str, Any]) -> Artifact:
        """Write ``content`` under run_dir and register it; a later run of the stage
        replaces the file and its metadata (the artifact is the latest output)."""
        target = self.run_dir / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        return self.record_artifact(relpath, kind, metadata)

    def record_artifact(self, relpath: str, kind: str, metadata: dict[str, Any]) -> Artifact:
        """Register a file already under run_dir; when the path has a row already (the
        stage ran before), its metadata becomes this run's."""
        artifact = self.add_artifact(relpath, kind, metadata)
        if artifact.metadata != metadata:
            Artifact.objects.filter(pk=artifact.pk).update(metadata=metadata)
            artifact.metadata = metadata
        return artifact

    def has_artifact(self, relpath: str) -> bool:
        return (self.run_dir / relpath).exists() and Artifact.objects.filter(job=self.job, path=relpath).exists()

    def add_artifact(self, relpath: str, kind: str, metadata: dict[str, Any] | None = None) -> Artifact:
        """Register a file written under run_dir; an existing row for the path is kept."""
        try:
            with transaction.atomic():
                artifact = Artifact.objects.create(
                    job=self.job, stage=self.stage, path=relpath, kind=kind, metadata=metadata or {}
                )
            self.created.append(relpath)
            return artifact
        except IntegrityError:
            self.reused.append(relpath)
            return Artifact.objects.get(job=self.job, path=relpath)


def resolve(job: PipelineJob, stage: str) -> Runner:
    path = job.config.get("runners", {}).get(stage)
    if not path or path == "placeholder":
        return placeholder
    if isinstance(path, dict):
        kind = runner_kinds.KINDS.get(path.get("kind"))
        # Checked again here: the snapshot may predate a change of code or settings.
        problems = runner_kinds.spec_problems(path)
        if kind is None or problems:
            raise PermanentJobError(f"stage {stage}: runner {'; '.join(problems)}")
        return lambda ctx: kind.run(ctx, path)
    # Only a declared runner runs: the registry may have changed since the job was queued.
    try:
        return runnables.resolve(path)
    except runnables.NotRunnable as exc:
        raise PermanentJobError(f"stage {stage}: runner {exc}") from None


# --- the placeholder runner ---------------------------------------------------------
def _words(text: str) -> int:
    return len(text.split())


def _text(ctx: StageContext, what: str, body: str) -> str:
    header = PLACEHOLDER_NOTE.format(what=what)
    return f"{header}\nJob: {ctx.job.slug} (#{ctx.job.pk})\nIntent: {ctx.job.intent}\n\n{body}\n"


def _json(ctx: StageContext, what: str, **content: Any) -> str:
    return json.dumps(
        {"placeholder": True, "note": PLACEHOLDER_NOTE.format(what=what), "job": ctx.job.slug, **content}, indent=2
    )


def _plan(ctx: StageContext) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(path, kind, content, metadata) for the stage, built only from the job itself."""
    intent = ctx.job.intent or ctx.job.slug
    scenes = [f"Scene {i + 1}: {part.strip() or intent}" for i, part in enumerate((intent + ". Close.").split(".")[:3])]
    if ctx.stage == "outline":
        body = "\n".join(f"{i + 1}. {s}" for i, s in enumerate(["Hook", "Context", intent, "Call to action"]))
        text = _text(ctx, "outline", body)
        return [("outline.txt", "text", text, {"word_count": _words(text), "sections": 4})]
    if ctx.stage == "research":
        text = _json(ctx, "research", sources=[], facts=[f"About: {intent}"])
        return [("research.json", "json", text, {"source_count": 0, "fact_count": 1})]
    if ctx.stage == "script":
        text = _text(ctx, "script", "\n\n".join(f"NARRATOR: {s}" for s in scenes))
        return [("script.txt", "text", text, {"word_count": _words(text), "scene_count": len(scenes)})]
    if ctx.stage == "storyboard":
        text = _json(ctx, "storyboard", scenes=[{"index": i, "description": s} for i, s in enumerate(scenes)])
        return [("storyboard.json", "json", text, {"scene_count": len(scenes)})]
    if ctx.stage == "assets":
        text = _json(
            ctx, "asset plan", assets=[{"scene": i, "type": "image", "source": "none"} for i in range(len(scenes))]
        )
        return [("asset_plan.json", "json", text, {"asset_count": len(scenes)})]
    if ctx.stage == "animatics":
        text = _text(ctx, "animatic video", scenes[0])
        return [("animatics/scene_000.placeholder.txt", "video", text, {"scene_index": 0, "placeholder": True})]
    if ctx.stage == "audio":
        voice = _text(ctx, "voiceover audio", " ".join(scenes))
        captions = "".join(
            f"{i + 1}\n00:00:{i * 5:02d},000 --> 00:00:{i * 5 + 5:02d},000\n[placeholder] {s}\n\n"
            for i, s in enumerate(scenes)
        )
        return [
            ("voiceover.placeholder.txt", "audio", voice, {"placeholder": True, "word_count": _words(voice)}),
            ("captions.srt", "captions", captions, {"cue_count": len(scenes), "placeholder": True}),
        ]
    if ctx.stage == "assemble":
        text = _text(ctx, "video", f"Would assemble {len(scenes)} scenes with voiceover and captions.")
        return [("video.placeholder.txt", "video", text, {"placeholder": True, "scene_count": len(scenes)})]
    if ctx.stage == "acceptance":
        have = sorted(a.path for a in Artifact.objects.filter(job=ctx.job))
        text = _json(ctx, "acceptance test", checks=[{"artifact": p, "present": True} for p in have], passed=True)
        return [("acceptance_results.json", "json", text, {"checked": len(have), "passed": True})]
    text = _text(ctx, f"{ctx.stage} output", f"Stage {ctx.stage} has no runner configured.")
    return [(f"{ctx.stage}.txt", "text", text, {"word_count": _words(text)})]


@runnable
def placeholder(ctx: StageContext) -> dict[str, Any]:
    """Write the stage's placeholder files (each once), then take the configured time."""
    for relpath, kind, content, metadata in _plan(ctx):
        if ctx.has_artifact(relpath):
            ctx.reused.append(relpath)
            continue
        target = ctx.run_dir / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        ctx.add_artifact(relpath, kind, {**metadata, "placeholder": True, "bytes": target.stat().st_size})
    # Stands in for the work a real stage does after producing its first files.
    ctx.sleep(settings.PIPELINE_PLACEHOLDER_SECONDS)
    return {"placeholder": True}
