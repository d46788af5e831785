"""Tell the people a gate waits for, each with their own signed decision links.

Queued as a job (``pipeline.notify_gate``) in the transaction that pauses the job, so
the pause commits with it and delivery (webhook retries, mail) never holds the lock."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from orchestration.core import alerts
from orchestration.core.jobs.queue import JobContext
from orchestration.core.jobs.registry import PermanentJobError, job_kind
from pipeline import engine, gates, links, people
from pipeline.models import PipelineJob

log = logging.getLogger("pipeline.gates")


def notice_for(job: PipelineJob, user, issued: list[links.Issued]) -> alerts.Notice:
    policy = job.policy()
    fields = ", ".join((policy.input_schema.get("properties") or {}).keys())
    message = (
        f"Pipeline job #{job.pk} ({job.slug}) waits at the {job.stage} gate for your decision."
        f"\nIntent: {job.intent or '-'}"
        + (f"\nQuorum: {policy.quorum} approval(s)." if policy.quorum > 1 else "")
        + (f"\nThe approval asks for: {fields} (the link's page shows the form)." if fields else "")
    )
    return alerts.Notice(
        subject=f"pipeline:{job.pk}",
        title=f"Approval needed: {job.slug} at {job.stage}",
        message=message,
        recipient=user.get_username(),
        email=user.email or "",
        links={item.verb: item.url for item in issued},
        details={"pipeline_job": job.pk, "stage": job.stage, "run": job.stage_run},
    )


@job_kind(engine.NOTIFY_KIND, description="Notify the people a pipeline gate waits for", internal=True)
def notify_gate(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    if not isinstance(payload.get("pipeline_job"), int):
        raise PermanentJobError("payload needs pipeline_job (id)")
    job = (
        PipelineJob.objects.filter(
            pk=payload["pipeline_job"],
            status="needs_approval",
            stage=payload.get("stage"),
            stage_run=payload.get("run"),
        )
        .prefetch_related("decisions")
        .first()
    )
    if job is None:
        return {"skipped": "the job no longer waits at that gate"}
    only = payload.get("only")
    results: dict[str, Any] = {}
    for user in people.waiting_for(job):
        if only and not _named(only, user):
            continue
        with transaction.atomic():
            issued = links.issue(job, user.get_username())
        results[user.get_username()] = alerts.notify(notice_for(job, user, issued))
    log.info("gate %s of pipeline job %s: notified %s", job.stage, job.pk, ", ".join(results) or "nobody")
    return {"notified": results}


def _named(names: list[str], user) -> bool:
    return gates.is_assignee(names, people.person_of(user))
