"""All-or-nothing writes and the ``Idempotency-Key`` header (API.md "Job queue").

A write answered 4xx or 5xx has written nothing: validation, the write and the enqueue
share one transaction, and what happens outside it (waking the nodes, running a job
inline) runs once it has committed. A side effect that fails then does not turn the
committed write into a 500 that a client would retry into a duplicate (with the broker
down, 7 jobs were committed and answered 500): it is logged, and the pending job is
taken by the next node that looks.

``Idempotency-Key`` follows Stripe's API and the IETF draft: the same key and request
from the same user within 24 h get the first answer again (status and body, with
``Idempotent-Replayed: true``); the same key with another request gets 422. The key's
row is inserted in the write's own transaction, under a unique constraint, so two
concurrent requests with one key cannot both write: the second waits for the first
to commit (PostgreSQL's unique index, SQLite's write lock) and replays its answer.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from rest_framework import status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder

from orchestration.core.models import IdempotencyKey
from orchestrator_site.api.errors import Conflict

log = logging.getLogger("orchestration.api")

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255


class KeyReused(APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = "This Idempotency-Key was already used with another request; use a new key."
    default_code = "idempotency_key_reused"


@contextmanager
def all_or_nothing() -> Iterator[None]:
    """One transaction; an error raised by a side effect after it committed is logged
    instead of answered (the write it followed stands)."""
    committed: list[bool] = []
    try:
        with transaction.atomic():
            # Runs first among the commit's callbacks: it tells an error raised by a
            # later one (a wake-up that could not reach its target) from a rollback.
            transaction.on_commit(lambda: committed.append(True))
            yield
    except Exception:
        if not committed:
            raise
        log.exception("A side effect after the commit failed; the write stands and is picked up later")


@dataclass
class Claim:
    """What ``idempotent`` found: a replay to answer, or the row to keep the answer in
    (None when the request carries no key)."""

    row: IdempotencyKey | None = None
    replay: Response | None = None

    def save(self, response: Response) -> Response:
        if self.row is not None:
            body = json.loads(json.dumps(response.data, cls=JSONEncoder))
            IdempotencyKey.objects.filter(pk=self.row.pk).update(status_code=response.status_code, response=body)
        return response


@contextmanager
def idempotent(request) -> Iterator[Claim]:
    """``all_or_nothing`` around a write that honours ``Idempotency-Key``: when
    ``claim.replay`` is set, answer it and write nothing; else write, and hand the
    answer to ``claim.save`` before the block ends."""
    _ = request.data  # read and parsed before the transaction: a slow upload holds no lock
    with all_or_nothing():
        yield _claim(request)


def _fingerprint(request) -> str:
    data: Any = request.data
    if hasattr(data, "lists"):  # a form's QueryDict
        data = dict(data.lists())
    body = json.dumps(data, sort_keys=True, cls=JSONEncoder, default=str)
    return hashlib.sha256(f"{request.method} {request.path}\n{body}".encode("utf-8", "replace")).hexdigest()


def _claim(request) -> Claim:
    key = request.headers.get(HEADER)
    if key is None:
        return Claim()
    if not key or len(key) > MAX_KEY_LENGTH or not (key.isascii() and key.isprintable()):
        raise ValidationError({HEADER: [f"must be 1 to {MAX_KEY_LENGTH} printable ASCII characters."]})
    fingerprint = _fingerprint(request)
    mine = IdempotencyKey.objects.filter(user=request.user, key=key)
    mine.expired().delete()  # older than 24 h: the key is free again
    try:
        with transaction.atomic():
            return Claim(row=IdempotencyKey.objects.create(user=request.user, key=key, fingerprint=fingerprint))
    except IntegrityError:
        pass  # taken: by an earlier request, or a concurrent one that has committed since
    first = mine.get()
    if first.fingerprint != fingerprint:
        raise KeyReused()
    if first.status_code is None:
        raise Conflict("A request with this Idempotency-Key is still being answered; retry in a moment.")
    return Claim(replay=Response(first.response, status=first.status_code, headers={REPLAYED: "true"}))
