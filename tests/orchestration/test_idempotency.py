"""Retries that cannot duplicate, and writes that are all or nothing (API.md "Job
queue"): ``Idempotency-Key`` on POST /api/v1/jobs/ and POST /api/v1/routing/tasks, and
a request answered 4xx or 5xx has written nothing."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from health.models import Service
from orchestration.core.jobs import queue
from orchestration.core.models import IdempotencyKey, Job, LedgerEntry
from orchestration.loop.api import serializers as api_serializers
from orchestration.loop.maintenance import prune_ledger

pytestmark = [pytest.mark.usefixtures("broker_only")]

JOB = {"kind": "noop", "payload": {"n": 1}, "priority": "high"}


def post(client: APIClient, body: dict, key: str | None = "key-1", path: str = "/api/v1/jobs/"):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return client.post(path, body, format="json", **headers)


def client_for(username: str) -> APIClient:
    user = get_user_model().objects.get_or_create(username=username, defaults={"is_staff": True})[0]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {Token.objects.get_or_create(user=user)[0].key}")
    return client


# --- Idempotency-Key ----------------------------------------------------------------------
@pytest.mark.django_db
def test_the_same_key_and_body_answer_the_first_response_again(staff_client):
    first = post(staff_client, JOB)
    assert first.status_code == 201 and "Idempotent-Replayed" not in first
    again = post(staff_client, JOB)
    assert again.status_code == 201 and again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert Job.objects.count() == 1 and LedgerEntry.objects.filter(event_type="job.created").count() == 1


@pytest.mark.django_db
def test_the_same_key_with_another_body_is_a_422(staff_client):
    assert post(staff_client, JOB).status_code == 201
    response = post(staff_client, {**JOB, "priority": "low"})
    assert response.status_code == 422 and "another request" in response.json()["detail"]
    assert Job.objects.count() == 1


@pytest.mark.django_db
def test_without_a_key_every_post_writes(staff_client):
    assert post(staff_client, JOB, key=None).status_code == 201
    assert post(staff_client, JOB, key=None).status_code == 201
    assert Job.objects.count() == 2 and not IdempotencyKey.objects.exists()


@pytest.mark.django_db
def test_keys_are_per_user(staff_client):
    other = client_for("other-ops")
    mine, theirs = post(staff_client, JOB), post(other, JOB)
    assert mine.status_code == theirs.status_code == 201 and mine.json()["id"] != theirs.json()["id"]
    assert Job.objects.count() == 2


@pytest.mark.django_db
def test_a_refused_request_keeps_no_key(staff_client):
    """Nothing is written for a 400, the key included: the corrected request may use it."""
    assert post(staff_client, {"kind": "nope"}).status_code == 400
    assert not IdempotencyKey.objects.exists()
    assert post(staff_client, JOB).status_code == 201


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9"])
def test_a_bad_key_is_a_400_naming_the_header(staff_client, key):
    response = post(staff_client, JOB, key=key)
    assert response.status_code == 400 and "Idempotency-Key" in response.json()
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_a_key_older_than_24_hours_is_free_again_and_pruned(staff_client):
    first = post(staff_client, JOB).json()
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(hours=25))
    second = post(staff_client, JOB)
    assert second.status_code == 201 and second.json()["id"] != first["id"] and "Idempotent-Replayed" not in second
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(hours=25))
    assert prune_ledger()["idempotency_keys"] == 1 and not IdempotencyKey.objects.exists()


@pytest.mark.django_db
def test_routed_tasks_honour_the_key_too(staff_client):
    Service.objects.create(name="renderer", base_url="http://127.0.0.1:9", capabilities=["render"])
    body = {"type": "render", "data": {"page": 1}}
    first = post(staff_client, body, path="/api/v1/routing/tasks")
    assert first.status_code == 202, first.content
    again = post(staff_client, body, path="/api/v1/routing/tasks")
    assert again.status_code == 202 and again["Idempotent-Replayed"] == "true"
    assert again.json()["job_id"] == first.json()["job_id"]
    assert post(staff_client, {**body, "data": {"page": 2}}, path="/api/v1/routing/tasks").status_code == 422
    assert Job.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_requests_with_one_key_create_one_job(staff_user):
    """Both threads send the same request at once, each with its own connection; the
    unique key (inserted in the job's transaction) lets one write and the other replay."""
    token = Token.objects.create(user=staff_user).key
    barrier = threading.Barrier(2)
    answers: list = []

    def send() -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        try:
            barrier.wait(timeout=10)
            answers.append(post(client, JOB, key="race"))
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [a.status_code for a in answers] == [201, 201]
    assert answers[0].json()["id"] == answers[1].json()["id"]
    assert sorted(a.get("Idempotent-Replayed", "") for a in answers) == ["", "true"]
    assert Job.objects.count() == 1 and IdempotencyKey.objects.count() == 1


# --- no half-writes -------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_request_that_fails_after_writing_leaves_nothing(staff_client, monkeypatch):
    """The job and its ledger entry were committed before the answer was built: a 500
    there left a job that a retrying client then duplicated."""

    def broken(self, instance):
        raise RuntimeError("the answer could not be built")

    monkeypatch.setattr(api_serializers.JobSerializer, "to_representation", broken)
    staff_client.raise_request_exception = False
    response = post(staff_client, JOB)
    assert response.status_code == 500 and response["Content-Type"].startswith("application/json")
    assert not Job.objects.exists() and not LedgerEntry.objects.exists() and not IdempotencyKey.objects.exists()


@pytest.mark.django_db
def test_a_ledger_failure_leaves_no_job(staff_client, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("ledger unavailable")

    monkeypatch.setattr(queue, "record", broken)
    staff_client.raise_request_exception = False
    assert post(staff_client, JOB, key=None).status_code == 500
    assert not Job.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_side_effect_that_fails_after_the_commit_is_not_a_500(staff_user, monkeypatch):
    """With the broker down the job was committed and the answer was a 500: the client
    retried into duplicates. The job stands (pending, for a node to take) and the answer
    says it was created; a retry with the key replays it."""
    real_wake = queue.wake

    def wake_fails_after_commit() -> list[int]:
        def unreachable() -> None:
            raise ConnectionError("broker unreachable")

        transaction.on_commit(unreachable)
        return real_wake()

    monkeypatch.setattr(queue, "wake", wake_fails_after_commit)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {Token.objects.create(user=staff_user).key}")
    first = post(client, JOB, key="after-commit")
    assert first.status_code == 201, first.content
    assert Job.objects.get().status == "pending"
    assert post(client, JOB, key="after-commit")["Idempotent-Replayed"] == "true"
    assert Job.objects.count() == 1
