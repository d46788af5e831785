"""Signed one-click decision links: one per person, verb and wait at a gate.

The token is ``django.core.signing`` over a random nonce (salted for this use, so no
other signed value of the site passes as one); the ``GateLink`` row it names binds the
job, stage, run, person and verb, and records its use. A link is refused when the
signature is wrong (forged), too old (expired, checked twice: the signature's age and
the row's ``expires_at``), already used (replayed), or no longer matches the wait.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core import signing
from django.urls import reverse
from django.utils import timezone

from pipeline.models import GateLink, PipelineJob

SALT = "pipeline.gate-link"
VERBS = ("approve", "reject")


class LinkRefused(Exception):
    """The link cannot be used; ``status`` is the HTTP answer (400, 403, 404, 409, 410)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


@dataclass
class Issued:
    verb: str
    token: str
    url: str


def issue(job: PipelineJob, username: str, *, now: datetime | None = None) -> list[Issued]:
    """An approve and a reject link for ``username`` at the job's current wait."""
    now = now or timezone.now()
    max_age = settings.PIPELINE_LINK_MAX_AGE_SECONDS
    out = []
    for verb in VERBS:
        nonce = secrets.token_hex(16)
        GateLink.objects.create(
            nonce=nonce,
            job=job,
            stage=job.stage,
            run=job.stage_run,
            username=username,
            verb=verb,
            expires_at=now + timedelta(seconds=max_age),
            created_at=now,
        )
        token = signing.dumps({"n": nonce}, salt=SALT, compress=False)
        url = settings.PIPELINE_LINK_BASE_URL + reverse("pipeline-link", args=[token])
        out.append(Issued(verb, token, url))
    return out


def open_link(token: str, *, now: datetime | None = None) -> GateLink:
    """The link a token names, if it may still be used (nothing is written)."""
    now = now or timezone.now()
    try:
        payload = signing.loads(token, salt=SALT, max_age=settings.PIPELINE_LINK_MAX_AGE_SECONDS)
    except signing.SignatureExpired:
        raise LinkRefused("This link has expired; decide in the console instead.", 410) from None
    except signing.BadSignature:
        raise LinkRefused("This link is not valid (its signature does not match).", 400) from None
    nonce = payload.get("n") if isinstance(payload, dict) else None
    link = GateLink.objects.select_related("job").filter(nonce=str(nonce)).first()
    if link is None:
        raise LinkRefused("This link is not known.", 404)
    if link.used_at is not None:
        raise LinkRefused(f"This link was already used at {link.used_at:%Y-%m-%d %H:%M:%S} UTC.", 410)
    if link.expires_at <= now:
        raise LinkRefused("This link has expired; decide in the console instead.", 410)
    job = link.job
    if (job.status, job.stage, job.stage_run) != ("needs_approval", link.stage, link.run):
        raise LinkRefused(f"Job #{job.pk} is no longer waiting at this gate (now {job.status} at {job.stage}).", 409)
    return link


def claim(link: GateLink, *, now: datetime) -> bool:
    """Mark the link used; False when another request used it first. Called inside the
    decision's transaction, so a refused decision leaves the link unused."""
    return bool(GateLink.objects.filter(pk=link.pk, used_at__isnull=True).update(used_at=now))
