"""A guided tour in the terminal: start a pipeline job, watch it stop at its gates,
reject one, resume, approve the rest, then list the artifacts and events.

Stages run in this process (no cluster needed) through the same job queue and
pipeline lane as in production.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand
from django.utils import timezone

from pipeline import disk, engine
from pipeline import transitions as t
from pipeline.demo import inline_execution, run_inline


class Command(BaseCommand):
    help = "Guided tour: run a pipeline job through its gates with approvals and a rejection."

    def add_arguments(self, parser):
        parser.add_argument("--slug", default=None, help="Slug of the job to create")
        parser.add_argument("--intent", default="A short explainer video about approval gates")

    def say(self, text: str, style=None) -> None:
        self.stdout.write((style or (lambda s: s))(text))

    def handle(self, *args, **options):
        with inline_execution():
            self.tour(options["slug"], options["intent"])

    def tour(self, slug: str | None, intent: str) -> None:
        slug = slug or f"tour-{timezone.now():%Y%m%d-%H%M%S}"
        job = engine.create_job(slug, intent, actor="pipeline_demo")
        stages = job.config["stages"]
        self.say(f"1. Created pipeline job #{job.pk} '{slug}': {' → '.join(stages)}", self.style.MIGRATE_HEADING)
        gates = [s for s, g in job.config["gates"].items() if g.get("required", True)]
        self.say(f"   Gates needing a person: {', '.join(gates)}. Files go to {disk.run_dir(job.pk)}")
        rejected_once = False
        step = 2
        while True:
            run_inline(job.pk)
            job.refresh_from_db()
            done, total = job.progress()
            if job.status == t.NEEDS_APPROVAL:
                self.say(f"{step}. Job paused at the {job.stage} gate ({done}/{total} stages done)", self.style.WARNING)
                gate = job.stage
                if not rejected_once:
                    job = engine.reject(job, gate, actor="pipeline_demo_reviewer", notes="Tour: needs a stronger hook")
                    self.say(f"   Rejected {gate}: job is {job.status}. Resuming re-runs the stage…")
                    job = engine.resume(job, actor="pipeline_demo")
                    rejected_once = True
                else:
                    job = engine.approve(job, gate, actor="pipeline_demo_reviewer", notes="Tour: looks good")
                    self.say(f"   Approved {gate}: job moves on to {job.stage}.", self.style.SUCCESS)
            elif job.status in t.FINAL:
                style = self.style.SUCCESS if job.status == t.COMPLETED else self.style.ERROR
                self.say(f"{step}. Job {job.status} ({done}/{total} stages)", style)
                break
            else:
                self.say(f"{step}. Job is {job.status} at {job.stage}; is the pipeline lane busy elsewhere?")
                break
            step += 1
        self.say("Artifacts:", self.style.MIGRATE_HEADING)
        for artifact in job.artifacts.order_by("id"):
            meta = ", ".join(f"{k}={v}" for k, v in artifact.metadata.items() if k != "placeholder")
            self.say(f"   {artifact.stage:<11} {artifact.path:<38} {artifact.kind:<9} {meta}")
        self.say("Events:", self.style.MIGRATE_HEADING)
        for event in job.events.order_by("id"):
            who = event.data.get("actor", "")
            self.say(f"   {event.created_at:%H:%M:%S.%f}"[:-3] + f" {event.type:<16} {event.stage:<11} {who}")
        self.say(f"State file: {disk.run_dir(job.pk) / 'state.json'}; transitions: {disk.runs_root() / 'state.jsonl'}")
