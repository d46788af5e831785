"""Server-sent events for a pipeline job: poll the database, send what is new.

The stream ends when the job is final and every event was sent, or after
PIPELINE_SSE_MAX_SECONDS, so neither clients nor servers hang on a job that never
ends. Clients reconnect with ``Last-Event-ID`` and get only what they missed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from django.conf import settings
from django.utils import timezone
from rest_framework.renderers import BaseRenderer

from orchestration.core.dbfaults import Outage, close_connections, describe, is_transient
from orchestration.core.redaction import redact
from pipeline import transitions as t
from pipeline.models import PipelineEvent, PipelineJob

KEEPALIVE_SECONDS = 15.0


class EventStreamRenderer(BaseRenderer):
    """Lets DRF's content negotiation accept ``Accept: text/event-stream`` (no 406);
    the view answers such requests with a StreamingHttpResponse itself."""

    media_type = "text/event-stream"
    format = "sse"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return f"event: error\ndata: {json.dumps(redact(data), default=str)}\n\n".encode()


def format_event(event: PipelineEvent) -> str:
    body = json.dumps(redact({"job_id": event.job_id, **event.as_dict()}), default=str)
    return f"id: {event.pk}\nevent: {event.type}\ndata: {body}\n\n"


def stream(job_id: int, after_id: int = 0, *, max_seconds: float | None = None) -> Iterator[str]:
    max_seconds = settings.PIPELINE_SSE_MAX_SECONDS if max_seconds is None else max_seconds
    poll = settings.PIPELINE_SSE_POLL_SECONDS
    deadline = time.monotonic() + max_seconds
    last_sent = time.monotonic()
    yield "retry: 2000\n\n"
    # The database connection is released by Django's request_finished handler when
    # the server closes the response, however the stream ends.
    outage = Outage()
    while True:
        try:
            status = PipelineJob.objects.filter(pk=job_id).values_list("status", flat=True).first()
            new = list(PipelineEvent.objects.filter(job_id=job_id, pk__gt=after_id).order_by("id")[:500])
        except Exception as exc:
            # A database restart is weather: the stream waits it out on a fresh
            # connection instead of breaking the client's connection.
            if not is_transient(exc):
                raise
            close_connections()
            outage.failed(describe(exc), now=timezone.now(), monotonic=time.monotonic())
            if time.monotonic() >= deadline:
                yield f"event: timeout\ndata: {json.dumps({'job_id': job_id, 'reconnect': True})}\n\n"
                return
            if time.monotonic() - last_sent >= KEEPALIVE_SECONDS:
                last_sent = time.monotonic()
                yield ": keep-alive\n\n"
            time.sleep(max(poll, outage.seconds_until_retry(time.monotonic())))
            continue
        outage.clear()
        for event in new:
            after_id = event.pk
            yield format_event(event)
        if new:
            last_sent = time.monotonic()
        # Read status before events: a final status seen here means its final
        # event was committed before the events query above.
        if (status is None or status in t.FINAL) and len(new) < 500:
            yield f"event: end\ndata: {json.dumps({'job_id': job_id, 'status': status})}\n\n"
            return
        if time.monotonic() >= deadline:
            yield f"event: timeout\ndata: {json.dumps({'job_id': job_id, 'reconnect': True})}\n\n"
            return
        if time.monotonic() - last_sent >= KEEPALIVE_SECONDS:
            last_sent = time.monotonic()
            yield ": keep-alive\n\n"
        time.sleep(poll)
