"""The HTTP API of the foundation: auth on every endpoint, bad input, the contract."""

from __future__ import annotations

import pytest

from orchestration.core.choices import JobStatus
from orchestration.core.models import Job, LedgerEntry
from orchestration.loop.models import LoopState, Rule

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("broker_only")]

READS = [
    "/api/v1/",
    "/api/v1/jobs/",
    "/api/v1/lanes/",
    "/api/v1/ledger/",
    "/api/v1/rules/",
    "/api/v1/actions/",
    "/api/v1/processes/",
    "/orchestrator/snapshot",
    "/orchestrator/status",
    "/api/schema/",
]
WRITES = [
    ("/api/v1/jobs/", {"kind": "noop"}),
    ("/api/v1/lanes/", {"name": "x", "concurrency_limit": 1}),
    (
        "/api/v1/rules/",
        {"name": "r", "conditions": [{"field": "jobs.pending", "op": ">", "value": 1}], "action_type": "retry_failed"},
    ),
    ("/orchestrator/run-once", {}),
    ("/orchestrator/enable", {}),
    ("/orchestrator/disable", {}),
]


@pytest.mark.parametrize("path", ["/health", "/api/v1/healthz"])
def test_public_endpoints_need_no_credentials(anon_client, path):
    response = anon_client.get(path)
    assert response.status_code == 200 and response.json()["status"] == "ok"


@pytest.mark.parametrize("path", READS)
def test_reads_need_credentials(anon_client, path):
    response = anon_client.get(path)
    assert response.status_code == 401
    assert "Bearer" in response["WWW-Authenticate"]


@pytest.mark.parametrize("path,body", WRITES)
def test_writes_need_credentials(anon_client, path, body):
    assert anon_client.post(path, body, format="json").status_code == 401


@pytest.mark.parametrize("path,body", WRITES)
def test_non_staff_cannot_write_and_nothing_is_written(user_client, path, body):
    before = (Job.objects.count(), Rule.objects.count(), LedgerEntry.objects.count())
    assert user_client.post(path, body, format="json").status_code == 403
    assert (Job.objects.count(), Rule.objects.count(), LedgerEntry.objects.count()) == before


@pytest.mark.parametrize("path", READS)
def test_signed_in_users_can_read(user_client, path):
    assert user_client.get(path).status_code == 200


def test_a_bad_token_is_refused(anon_client):
    anon_client.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    assert anon_client.get("/api/v1/jobs/").status_code == 401


def test_the_token_keyword_works_too(anon_client, staff_user):
    from rest_framework.authtoken.models import Token

    anon_client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=staff_user).key}")
    assert anon_client.get("/api/v1/jobs/").status_code == 200


def test_service_information(staff_client):
    body = staff_client.get("/api/v1/").json()
    assert body["service"] == "Orchestrator" and body["status"] == "running" and "jobs" in body["endpoints"]


class TestJobs:
    def test_create_list_get(self, staff_client):
        response = staff_client.post(
            "/api/v1/jobs/",
            {
                "kind": "noop",
                "payload": {"a": 1},
                "priority": "high",
                "lane": "fast",
                "max_attempts": 2,
                "backoff": "linear",
            },
            format="json",
        )
        assert response.status_code == 201, response.content
        body = response.json()
        assert body["status"] == "pending" and body["priority"] == "high" and body["backoff"] == "linear"
        assert staff_client.get(f"/api/v1/jobs/{body['id']}/").json()["payload"] == {"a": 1}
        listing = staff_client.get("/api/v1/jobs/", {"status": "pending", "lane": "fast"}).json()
        assert listing["count"] == 1 and set(listing) >= {"count", "next", "previous", "results"}
        created = LedgerEntry.objects.get(event_type="job.created")
        assert created.actor == "ops"

    @pytest.mark.parametrize(
        "body,field",
        [
            ({"kind": "nope"}, "kind"),
            ({}, "kind"),
            ({"kind": "noop", "priority": "urgent"}, "priority"),
            ({"kind": "noop", "max_attempts": 0}, "max_attempts"),
            ({"kind": "noop", "max_attempts": 1000}, "max_attempts"),
            ({"kind": "noop", "backoff": "fibonacci"}, "backoff"),
            ({"kind": "noop", "payload": [1, 2]}, "payload"),
            ({"kind": "noop", "not_before": "yesterday"}, "not_before"),
            ({"kind": "noop", "lane": "no spaces!"}, "lane"),
            ({"kind": "noop", "score": 101}, "score"),
        ],
    )
    def test_bad_input_is_a_400_naming_the_field_and_writes_nothing(self, staff_client, body, field):
        response = staff_client.post("/api/v1/jobs/", body, format="json")
        assert response.status_code == 400
        assert field in response.json()
        assert Job.objects.count() == 0 and not LedgerEntry.objects.exists()

    def test_malformed_json_is_a_400(self, staff_client):
        response = staff_client.post("/api/v1/jobs/", "{not json", content_type="application/json")
        assert response.status_code == 400

    def test_cancel_and_retry(self, staff_client):
        job = Job.objects.create(kind="noop")
        assert staff_client.post(f"/api/v1/jobs/{job.pk}/cancel").json()["status"] == "canceled"
        assert staff_client.post(f"/api/v1/jobs/{job.pk}/cancel").status_code == 409
        assert staff_client.post(f"/api/v1/jobs/{job.pk}/retry").json()["status"] in ("retry", "processing")
        done = Job.objects.create(kind="noop", status=JobStatus.COMPLETED)
        response = staff_client.post(f"/api/v1/jobs/{done.pk}/retry")
        assert response.status_code == 409 and "completed" in response.json()["detail"]

    def test_unknown_job_is_a_404(self, staff_client):
        assert staff_client.get("/api/v1/jobs/999999/").status_code == 404
        assert staff_client.post("/api/v1/jobs/999999/cancel").status_code == 404

    def test_jobs_cannot_be_edited_or_deleted(self, staff_client):
        job = Job.objects.create(kind="noop")
        assert staff_client.delete(f"/api/v1/jobs/{job.pk}/").status_code == 405
        assert staff_client.patch(f"/api/v1/jobs/{job.pk}/", {"status": "completed"}, format="json").status_code == 405


class TestLedger:
    def test_prefix_filter_and_newest_first(self, staff_client):
        from orchestration.core.models.ledger import record

        record("orchestrator.cycle_idle", "one")
        record("job.failed", "two", severity="warning")
        record("orchestrator.cycle_completed", "three")
        body = staff_client.get("/api/v1/ledger/", {"event_type": "orchestrator."}).json()
        assert [e["message"] for e in body["results"]] == ["three", "one"]
        assert set(body["results"][0]) >= {
            "event_type",
            "severity",
            "subject",
            "message",
            "data",
            "actor",
            "created_at",
        }
        assert staff_client.get("/api/v1/ledger/", {"severity": "warning"}).json()["count"] == 1

    def test_bad_filters_are_400(self, staff_client):
        assert staff_client.get("/api/v1/ledger/", {"since": "not-a-date"}).status_code == 400
        assert staff_client.get("/api/v1/ledger/", {"severity": "apocalyptic"}).status_code == 400

    def test_it_is_read_only(self, staff_client):
        assert staff_client.post("/api/v1/ledger/", {"event_type": "x"}, format="json").status_code == 405


class TestRules:
    def test_default_rules_are_seeded(self, staff_client):
        names = {r["name"] for r in staff_client.get("/api/v1/rules/", {"limit": 100}).json()["results"]}
        assert {"queue-saturated", "recent-failures", "critical-health", "low-score-trend"} <= names

    def test_edit_a_threshold(self, staff_client):
        rule = Rule.objects.get(name="queue-saturated")
        response = staff_client.patch(
            f"/api/v1/rules/{rule.pk}/",
            {"conditions": [{"field": "jobs.pending", "op": ">", "value": 10}]},
            format="json",
        )
        assert response.status_code == 200
        rule.refresh_from_db()
        assert rule.conditions[0]["value"] == 10
        assert LedgerEntry.objects.get(event_type="rule.updated").actor == "ops"

    @pytest.mark.parametrize(
        "patch,field",
        [
            ({"conditions": []}, "conditions"),
            ({"conditions": [{"field": "jobs.pending", "op": "=~", "value": 1}]}, "conditions"),
            ({"conditions": "jobs.pending > 1"}, "conditions"),
            ({"action_type": "launch_missiles"}, "action_type"),
            ({"priority": -1}, "priority"),
            ({"action_params": [1]}, "action_params"),
        ],
    )
    def test_bad_rules_are_refused(self, staff_client, patch, field):
        body = {
            "name": "new-rule",
            "conditions": [{"field": "jobs.pending", "op": ">", "value": 1}],
            "action_type": "retry_failed",
            **patch,
        }
        response = staff_client.post("/api/v1/rules/", body, format="json")
        assert response.status_code == 400 and field in response.json()
        assert not Rule.objects.filter(name="new-rule").exists()

    def test_duplicate_name_is_refused(self, staff_client):
        body = {
            "name": "queue-saturated",
            "conditions": [{"field": "jobs.pending", "op": ">", "value": 1}],
            "action_type": "retry_failed",
        }
        assert staff_client.post("/api/v1/rules/", body, format="json").status_code == 400


class TestLoopEndpoints:
    def test_snapshot_shape(self, staff_client):
        body = staff_client.get("/orchestrator/snapshot").json()
        assert body["status"] == "ok"
        snap = body["snapshot"]
        for section in ("jobs", "workers", "services", "pipeline", "ledger", "scheduler", "system"):
            assert section in snap
        assert {"pending", "processing", "retry", "failed", "completed", "oldest_pending_minutes"} <= set(snap["jobs"])
        assert snap["system"]["status"] in ("healthy", "degraded", "critical")

    def test_run_once(self, staff_client):
        Job.objects.create(kind="noop", status=JobStatus.FAILED, finished_at=__import__("django").utils.timezone.now())
        body = staff_client.post("/orchestrator/run-once", {}, format="json").json()
        assert body["status"] == "ok"
        result = body["result"]
        assert {"snapshot", "decision", "execution", "timestamp"} <= set(result)
        assert result["decision"]["actions"][0]["type"] == "retry_failed"
        assert set(result["decision"]["actions"][0]) >= {"type", "priority", "reason", "target"}
        assert result["execution"]["succeeded"] == 1

    def test_run_once_dry_run(self, staff_client):
        body = staff_client.post("/orchestrator/run-once", {"dry_run": True}, format="json").json()
        assert body["result"]["dry_run"] is True

    def test_run_once_bad_body(self, staff_client):
        assert staff_client.post("/orchestrator/run-once", {"dry_run": "maybe"}, format="json").status_code == 400

    def test_enable_disable_status(self, staff_client):
        body = staff_client.post("/orchestrator/enable", {"interval_seconds": 5}, format="json").json()
        assert body == {"status": "ok", "orchestrator": {"status": "started", "interval_seconds": 5.0, "enabled": True}}
        status = staff_client.get("/orchestrator/status").json()
        assert status["enabled"] is True and status["interval_seconds"] == 5.0 and status["last_cycle"] is None
        assert staff_client.post("/orchestrator/disable").json()["orchestrator"]["status"] == "stopped"
        assert LoopState.get().enabled is False
        assert list(LedgerEntry.objects.order_by("id").values_list("event_type", "actor")) == [
            ("orchestrator.enabled", "ops"),
            ("orchestrator.disabled", "ops"),
        ]

    @pytest.mark.parametrize("interval", [0, -1, 100000, "fast"])
    def test_enable_refuses_bad_intervals(self, staff_client, interval):
        response = staff_client.post("/orchestrator/enable", {"interval_seconds": interval}, format="json")
        assert response.status_code == 400 and "interval_seconds" in response.json()


def test_docs_are_served_without_a_cdn(staff_client):
    page = staff_client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "swagger" in html.lower() and "cdn" not in html.lower() and "https://" not in html
