"""Recovery strategies (each an Action with its outcome in the ledger), escalation,
alert routing and delivery (the channels the settings describe, to a real local HTTP
server and a real local SMTP server)."""

from __future__ import annotations

import json
from datetime import timedelta

from django.utils import timezone
from werkzeug import Response

from orchestration.core import alerts, anomalies, escalation, notifications
from orchestration.core.anomalies import open_anomaly
from orchestration.core.models import Anomaly, Delivery, DeliveryAttempt, Job, LedgerEntry, NotificationChannel
from orchestration.fleet import detection, recovery
from orchestration.fleet.models import Worker
from orchestration.fleet.sync import next_run_at
from orchestration.loop.models import Action, AutomationPolicy
from tests.support.smtp import smtp_server


def anomaly(code: str, worker: Worker | None = None, **details) -> Anomaly:
    subject = f"worker:{worker.name}" if worker else "fleet"
    created, _ = open_anomaly(code, subject, details, worker=worker)
    return created


def approved(action: Action) -> Action:
    """A risky recovery waits for a person: approve it, and let the next pass run it."""
    assert action.status == "awaiting_approval", action.status
    assert Job.objects.filter(status="failed").count() == 0
    action.approve(actor="ops", notes="go")
    assert recovery.run_approved() == [action.pk]
    action.refresh_from_db()
    assert action.decided_by == "ops" and action.executed_at is not None
    return action


def test_risky_recoveries_wait_for_a_person_unless_a_person_made_them_automatic(make_worker):
    from health.models import CircuitBreaker

    worker = make_worker(interval_seconds=300)
    found = anomaly("HIGH_FAILURE_RATE", worker)
    waiting = recovery.recover(found)
    assert waiting.status == "awaiting_approval"
    assert CircuitBreaker.for_name("worker:collector").state != "open"
    assert recovery.recover(found) is None  # not asked twice while it waits
    waiting.reject(actor="ops", notes="the upstream is being fixed")
    assert recovery.run_approved() == []
    policy = AutomationPolicy.objects.get(name="recovery:open_circuit_reduce_rate")
    assert policy.mode == "approval" and policy.risky
    policy.configure(actor="ops", mode="automatic")
    assert LedgerEntry.objects.filter(event_type="automation_policy.updated", actor="ops").exists()
    ran = recovery.recover(found)
    assert ran.status == "succeeded"
    assert CircuitBreaker.for_name("worker:collector").state == "open"


def test_a_recovery_is_verified_against_its_anomaly_later(make_worker, settings):
    settings.ORCHESTRATOR_VERIFY_AFTER_SECONDS = 90  # the same delay as the loop's own actions
    worker = make_worker(enabled=True)
    found = anomaly("STALE_DATA", worker)
    action = recovery.recover(found)
    assert action.status == "succeeded", action.error
    assert action.verify_after == action.created_at + timedelta(seconds=90)
    assert recovery.verify_recoveries(action.created_at + timedelta(seconds=89)) == 0  # not yet due
    later = timezone.now() + timedelta(seconds=91)
    assert recovery.verify_recoveries(later) == 1
    action.refresh_from_db()
    assert action.effective is False and "still open" in action.verification
    second = anomaly("LOCK_CONTENTION", worker)
    fixed = recovery.recover(second)
    anomalies.resolve("LOCK_CONTENTION", second.subject)
    recovery.verify_recoveries(later)
    fixed.refresh_from_db()
    assert fixed.effective is True
    effectiveness = Action.effectiveness_by_rule()
    assert effectiveness["fleet-recovery"] == {"verified": 2, "effective": 1, "rate": 0.5}
    # Each strategy has its own line too: the one that never helps shows.
    assert effectiveness["fleet-recovery:refresh_upstream"] == {"verified": 1, "effective": 0, "rate": 0.0}
    assert effectiveness["fleet-recovery:lengthen_lock_timeout"] == {"verified": 1, "effective": 1, "rate": 1.0}


def test_loop_protection_pauses_a_recovery_for_its_worker_alerts_and_a_person_resumes_it(make_worker, staff_client):
    worker = make_worker(interval_seconds=300)
    found = anomaly("API_QUOTA_LOW", worker, quota_remaining_pct=10)
    AutomationPolicy.objects.filter(name="recovery:reduce_fetch_frequency").delete()
    policy = recovery.policy_of("reduce_fetch_frequency")
    policy.configure(actor="ops", max_per_hour=10, loop_limit=3)
    outcomes = [recovery.recover(found) for _ in range(6)]
    assert [a.status for a in outcomes if a is not None] == ["succeeded", "succeeded", "succeeded", "paused"]
    worker.refresh_from_db()
    assert worker.rate_factor == 8.0  # three reductions ran, none after the pause
    loop = Anomaly.objects.get(code="REMEDIATION_LOOP", resolved_at__isnull=True)
    assert "recovery:reduce_fetch_frequency" in loop.subject and loop.subject.endswith(found.subject)
    assert LedgerEntry.objects.filter(event_type="guardrail.paused", subject=found.subject).count() == 1
    # Another worker is not held back by this one's loop.
    other = anomaly("API_QUOTA_LOW", make_worker("other"), quota_remaining_pct=10)
    assert recovery.recover(other).status == "succeeded"

    (paused,) = staff_client.get("/api/v1/guardrails/?paused=true").json()["results"]
    assert (paused["automation"], paused["target"]) == ("recovery:reduce_fetch_frequency", found.subject)
    assert staff_client.post(f"/api/v1/guardrails/{paused['id']}/resume").status_code == 200
    loop.refresh_from_db()
    assert loop.resolved_at is not None
    assert recovery.recover(found).status == "succeeded"


def test_an_approved_recovery_whose_anomaly_resolved_meanwhile_is_not_run(make_worker):
    from health.models import CircuitBreaker

    worker = make_worker(interval_seconds=300)
    found = anomaly("HIGH_FAILURE_RATE", worker)
    waiting = recovery.recover(found)
    assert waiting.status == "awaiting_approval"
    anomalies.resolve("HIGH_FAILURE_RATE", found.subject)
    waiting.approve(actor="ops")
    assert recovery.run_approved() == []
    waiting.refresh_from_db()
    assert waiting.status == "expired" and "resolved before it ran" in waiting.error
    assert CircuitBreaker.for_name("worker:collector").state != "open"
    worker.refresh_from_db()
    assert worker.rate_factor == 1.0
    assert LedgerEntry.objects.filter(event_type="action.expired", subject=found.subject).exists()


def test_the_fleet_sweep_expires_unanswered_recoveries_while_the_loop_is_off(make_worker, settings):
    from orchestration.fleet.loop import fleet_sweep_tick
    from orchestration.loop.models import LoopState

    LoopState.disable(actor="ops")
    settings.ORCHESTRATOR_APPROVAL_TIMEOUT_MINUTES = 0
    waiting = recovery.recover(anomaly("HIGH_FAILURE_RATE", make_worker()))
    assert waiting.status == "awaiting_approval"
    fleet_sweep_tick.last = 0.0
    assert fleet_sweep_tick()["expired"] == 1
    waiting.refresh_from_db()
    assert waiting.status == "expired"


def test_recovery_of_one_worker_is_limited_per_hour(make_worker, settings):
    settings.FLEET_RECOVERY_COOLDOWN_SECONDS = 0
    worker = make_worker(interval_seconds=300)
    found = anomaly("API_QUOTA_LOW", worker, quota_remaining_pct=10)
    statuses = [recovery.recover(found) for _ in range(recovery.MAX_PER_HOUR + 2)]
    ran = [a for a in statuses if a is not None and a.status == "succeeded"]
    assert len(ran) == recovery.MAX_PER_HOUR
    assert Action.objects.filter(status="rate_limited", target=found.subject).count() == 1


def test_every_recovery_is_an_action_with_its_outcome_in_the_ledger(make_worker):
    worker = make_worker(timeout_seconds=100)
    action = recovery.recover(anomaly("SLOW_EXECUTION", worker, duration_s=30))
    assert (
        action.action_type == "raise_timeout" and action.status == "succeeded" and action.target == "worker:collector"
    )
    assert action.result["timeout_seconds"] == [100, 150]
    entry = LedgerEntry.objects.get(event_type="worker.recovery")
    assert entry.data["action_id"] == action.pk
    row = Anomaly.objects.get(code="SLOW_EXECUTION")
    assert row.recovery_attempts == 1 and row.recovery[0]["strategy"] == "raise_timeout"


def test_raising_the_timeout_stops_at_the_cap(make_worker):
    worker = make_worker(timeout_seconds=100)
    found = anomaly("SLOW_EXECUTION", worker)
    for _ in range(4):
        recovery.recover(found)
    worker.refresh_from_db()
    assert worker.timeout_seconds == 200 and worker.max_timeout_seconds == 200


def test_high_failure_rate_opens_the_breaker_and_reduces_the_rate(make_worker):
    from health.models import CircuitBreaker

    worker = make_worker(interval_seconds=300)
    action = approved(recovery.recover(anomaly("HIGH_FAILURE_RATE", worker)))
    assert action.status == "succeeded", action.error
    assert CircuitBreaker.for_name("worker:collector").state == "open"
    worker.refresh_from_db()
    assert worker.rate_factor == 2.0
    assert next_run_at(worker).minute % 10 == 0  # 5 min → 10 min schedule
    assert action.result["note"] == "every 10 min (rate reduced from 5 min)"


def test_high_failure_rate_on_a_cron_worker_runs_every_second_due_time_and_says_so(make_worker):
    from datetime import timedelta

    from orchestration.fleet.firing import fire_due
    from orchestration.fleet.models import WorkerRun

    worker = make_worker(interval_seconds=None, cron="*/5 * * * *", catch_up_seconds=3600)
    action = approved(recovery.recover(anomaly("HIGH_FAILURE_RATE", worker)))  # a risky recovery waits for a person
    assert action.result["note"] == "cron */5 * * * * (UTC), every 2nd due time (rate reduced)"
    worker.refresh_from_db()
    first = worker.next_due_at
    fire_due(first + timedelta(minutes=20, seconds=1))  # five due times, all inside the window
    runs = WorkerRun.objects.filter(worker=worker).order_by("due_at")
    assert [(r.due_at - first, r.status, r.skipped_reason) for r in runs] == [
        (timedelta(minutes=0), "queued", ""),
        (timedelta(minutes=5), "skipped", "rate_reduced"),
        (timedelta(minutes=10), "queued", ""),
        (timedelta(minutes=15), "skipped", "rate_reduced"),
        (timedelta(minutes=20), "queued", ""),
    ]
    assert runs[1].skipped_detail == {"rate_factor": 2.0, "runs_one_due_time_in": 2}


def test_api_quota_low_reduces_fetch_frequency_up_to_a_limit(make_worker):
    worker = make_worker(interval_seconds=300)
    found = anomaly("API_QUOTA_LOW", worker, quota_remaining_pct=10)
    for _ in range(5):
        recovery.recover(found)
    worker.refresh_from_db()
    assert worker.rate_factor == recovery.MAX_RATE_FACTOR


def test_queue_overflow_pauses_new_scheduled_runs_and_defers_low_priority_jobs(make_worker):
    from orchestration.core.jobs.queue import enqueue
    from orchestration.fleet.runner import execute_run, request_run

    low = enqueue("noop", priority="low")
    normal = enqueue("noop", priority="normal")
    worker = make_worker()
    action = approved(recovery.recover(anomaly("QUEUE_OVERFLOW", queue_depth=1500)))
    assert action.result == {"scheduled_runs_paused": True, "deferred_low_priority_jobs": 1}
    assert Job.objects.get(pk=low.pk).not_before > timezone.now()
    assert Job.objects.get(pk=normal.pk).not_before is None
    assert execute_run(request_run(worker, trigger="schedule").pk)["reason"] == "queue_paused"
    assert execute_run(request_run(worker, trigger="manual").pk)["status"] == "succeeded"  # people still may
    anomalies.resolve("QUEUE_OVERFLOW", "fleet")
    assert execute_run(request_run(worker, trigger="schedule").pk)["status"] == "succeeded"


def test_a_failing_recovery_is_a_failed_action(make_worker):
    worker = make_worker(enabled=False)
    action = recovery.recover(anomaly("STALE_DATA", worker))
    assert action.status == "failed" and "disabled" in action.error
    assert LedgerEntry.objects.filter(event_type="worker.recovery_failed", severity="error").exists()


def test_anomalies_without_a_strategy_are_only_alerted(make_worker):
    assert recovery.recover(anomaly("CACHE_MISS", make_worker())) is None
    assert "CACHE_MISS" not in recovery.strategies()


def test_recovery_is_retried_after_the_cooldown_then_escalated_by_policy(make_worker, settings):
    settings.FLEET_RECOVERY_COOLDOWN_SECONDS = 60
    settings.FLEET_MAX_RECOVERY_ATTEMPTS = 2
    worker = make_worker(timeout_seconds=100)
    found = anomaly("SLOW_EXECUTION", worker)
    now = found.detected_at
    recovery.recover(found, now=now)
    assert recovery.retry_open(now + timedelta(seconds=30)) == []  # cooling down
    assert len(recovery.retry_open(now + timedelta(seconds=61))) == 1
    assert recovery.retry_open(now + timedelta(seconds=200)) == []  # attempts exhausted
    # One mechanism escalates: the policies' (the seeded one: high, after 10 minutes).
    assert escalation.escalate_due(now + timedelta(minutes=9)) == []
    assert escalation.escalate_due(now + timedelta(minutes=10)) == [found.pk]
    assert escalation.escalate_due(now + timedelta(minutes=11)) == []  # once
    found.refresh_from_db()
    assert found.escalated_at is not None and found.recovery_attempts == 2
    assert LedgerEntry.objects.filter(event_type="anomaly.escalated", subject=found.subject).count() == 1
    assert LedgerEntry.objects.filter(event_type="worker.alert", message__startswith="ESCALATED").exists()
    assert not hasattr(recovery, "escalate_due")


def test_a_recovery_that_clears_the_anomaly_is_not_escalated(make_worker):
    found = anomaly("SLOW_EXECUTION", make_worker())
    recovery.recover(found)
    anomalies.resolve("SLOW_EXECUTION", "worker:collector")
    assert escalation.escalate_due(found.detected_at + timedelta(hours=1)) == []


# --- alerts -----------------------------------------------------------------------------
def _settings_channels(settings, *, webhook: str = "", emails: list[str] | None = None, smtp_port: int = 0):
    """The channels the old settings describe, made as migrate makes them."""
    settings.FLEET_ALERT_WEBHOOK_URL, settings.FLEET_ALERT_EMAILS = webhook, emails or []
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp_port or 25
    return notifications.sync_settings_channels()


def test_alerts_are_routed_by_severity_and_delayed_by_it(make_worker, settings):
    worker = make_worker()
    with smtp_server() as box:
        assert _settings_channels(settings, emails=["oncall@example.org"], smtp_port=box.port) == [
            notifications.SETTINGS_EMAIL
        ]
        critical = anomaly("DATA_CORRUPTION", worker)
        high = anomaly("API_QUOTA_LOW", worker)
        medium = anomaly("PARTIAL_SUCCESS", worker)
        low = anomaly("MINOR_VALIDATION_ISSUE", worker)
        assert low.alert_state == "log_only" and low.alert_due_at is None
        now = timezone.now()
        assert alerts.deliver_due(now) == 1  # only the critical one is due at once
        critical.refresh_from_db()
        assert critical.alert_state == "sent" and set(critical.alert_result) == {"ledger", "channels"}
        assert critical.alert_result["channels"] == {"ok": True, "queued": 1}
        ((to, text),) = box.texts()
        assert to == ["oncall@example.org"] and "DATA_CORRUPTION" in text
        assert alerts.deliver_due(now + timedelta(minutes=4)) == 0
        assert alerts.deliver_due(now + timedelta(minutes=5, seconds=1)) == 1
        high.refresh_from_db()
        # The e-mail channel takes critical alerts only, as the old route did.
        assert high.alert_result["channels"] == {"ok": True, "queued": 0} and len(box.messages) == 1
    # A medium anomaly that resolves before its 15 minutes is never alerted.
    anomalies.resolve("PARTIAL_SUCCESS", "worker:collector")
    assert alerts.deliver_due(now + timedelta(minutes=16)) == 0
    medium.refresh_from_db()
    assert medium.alert_state == "suppressed"


def test_the_settings_channels_are_made_once_and_follow_the_settings(db, settings):
    _settings_channels(settings, webhook="https://hooks.example.org/T/s3cr3t", emails=["a@example.org"])
    webhook = NotificationChannel.objects.get(name=notifications.SETTINGS_WEBHOOK)
    assert webhook.url == "jsons://hooks.example.org/T/s3cr3t" and webhook.severities == ["critical", "high"]
    assert webhook.notices and NotificationChannel.objects.get(name=notifications.SETTINGS_EMAIL).notices
    NotificationChannel.objects.filter(pk=webhook.pk).update(enabled=False, severities=["critical"])
    assert notifications.sync_settings_channels() == []  # a person's changes stay
    webhook.refresh_from_db()
    assert (webhook.enabled, webhook.severities) == (False, ["critical"])
    entries = LedgerEntry.objects.filter(event_type="channel.created")
    assert entries.count() == 2 and not any("s3cr3t" in e.message for e in entries)


def test_a_webhook_alert_reaches_a_real_http_server_after_a_retry(make_worker, settings, httpserver):
    received = []
    calls = {"n": 0}

    def handler(request):
        calls["n"] += 1
        if calls["n"] == 1:
            return Response("busy", status=503)
        received.append(json.loads(request.data))
        return Response("ok", status=200)

    httpserver.expect_request("/hooks/oncall", method="POST").respond_with_handler(handler)
    _settings_channels(settings, webhook=httpserver.url_for("/hooks/oncall"))
    crash = anomaly("WORKER_CRASH", make_worker())
    now = timezone.now()
    assert alerts.deliver_due(now) == 1
    crash.refresh_from_db()
    assert crash.alert_state == "sent" and received == []
    delivery = Delivery.objects.get()
    assert delivery.status == "pending" and delivery.attempts == 1 and "503" in delivery.last_error
    alerts.deliver_due(delivery.next_attempt_at)  # the retry, after its backoff
    delivery.refresh_from_db()
    assert delivery.status == "sent" and delivery.attempts == 2
    assert received[0]["title"].startswith("WORKER_CRASH on worker:collector") and received[0]["type"] == "failure"


def test_a_webhook_that_keeps_failing_is_reported_and_other_channels_still_send(make_worker, settings, httpserver):
    httpserver.expect_request("/down").respond_with_data("no", status=500)
    _settings_channels(settings, webhook=httpserver.url_for("/down"))
    crash = anomaly("WORKER_CRASH", make_worker())
    now = timezone.now()
    alerts.deliver_due(now)
    for n in range(1, notifications.MAX_ATTEMPTS):
        alerts.deliver_due(now + timedelta(hours=2 * n))
    crash.refresh_from_db()
    assert crash.alert_state == "sent"  # the ledger channel worked
    delivery = Delivery.objects.get()
    assert delivery.status == "failed" and delivery.attempts == notifications.MAX_ATTEMPTS
    assert DeliveryAttempt.objects.filter(delivery=delivery, ok=False).count() == notifications.MAX_ATTEMPTS


def test_old_route_names_mean_the_channels(db, settings):
    settings.FLEET_ALERT_ROUTES = {**settings.FLEET_ALERT_ROUTES, "critical": ["ledger", "webhook", "email"]}
    assert alerts.route("critical") == ["ledger", "channels"]


def test_one_open_anomaly_per_code_and_subject(make_worker):
    worker = make_worker()
    first, created = open_anomaly("CACHE_MISS", "worker:collector", {"n": 1}, worker=worker)
    again, created_again = open_anomaly("CACHE_MISS", "worker:collector", {"n": 2}, worker=worker)
    assert created and not created_again and first.pk == again.pk and again.occurrences == 2
    anomalies.resolve("CACHE_MISS", "worker:collector")
    later, created_later = open_anomaly("CACHE_MISS", "worker:collector", {}, worker=worker)
    assert created_later and later.pk != first.pk


def test_the_sweep_detects_fleet_anomalies_and_resolves_them(make_worker, settings):
    from orchestration.core import anomaly_rules

    worker = make_worker(freshness_seconds=600)
    result = detection.sweep()
    assert "STALE_DATA:worker:collector" in result["opened"]  # never succeeded
    monkey = anomaly_rules.QUEUE_OVERFLOW_DEPTH
    try:
        anomaly_rules.QUEUE_OVERFLOW_DEPTH = 1
        from orchestration.core.jobs.queue import enqueue

        enqueue("noop", wake_nodes=False)
        enqueue("noop", wake_nodes=False)
        assert "QUEUE_OVERFLOW:fleet" in detection.sweep()["opened"]
    finally:
        anomaly_rules.QUEUE_OVERFLOW_DEPTH = monkey
    Job.objects.all().delete()
    Worker.objects.filter(pk=worker.pk).update(last_success_at=timezone.now())
    detection.sweep()
    assert not Anomaly.objects.filter(resolved_at__isnull=True, code__in=["QUEUE_OVERFLOW", "STALE_DATA"]).exists()


def test_a_person_sets_a_recovery_strategys_mode_and_limits_through_the_api(make_worker, staff_client, user_client):
    worker = make_worker(interval_seconds=300)
    waiting = recovery.recover(anomaly("HIGH_FAILURE_RATE", worker))
    assert waiting.status == "awaiting_approval"
    row = AutomationPolicy.objects.get(name="recovery:open_circuit_reduce_rate")
    listed = user_client.get("/api/v1/automation-policies/").json()["results"]
    shown = next(p for p in listed if p["id"] == row.pk)
    assert (shown["name"], shown["mode"], shown["risky"]) == (row.name, "approval", True)
    url = f"/api/v1/automation-policies/{row.pk}/"
    assert user_client.patch(url, {"mode": "automatic"}, format="json").status_code == 403
    bad = staff_client.patch(url, {"mode": "whenever"}, format="json")
    assert bad.status_code == 400 and "mode" in bad.json()
    assert staff_client.patch(url, {"name": "renamed"}, format="json").json()["name"] == row.name  # read-only
    answer = staff_client.patch(url, {"mode": "automatic", "max_per_hour": 2}, format="json")
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert (body["mode"], body["max_per_hour"], body["updated_by"]) == ("automatic", 2, "ops")
    assert LedgerEntry.objects.get(event_type="automation_policy.updated").actor == "ops"
    # Now it runs on its own, as the person said.
    waiting.reject(actor="ops")
    assert recovery.recover(anomaly("HIGH_FAILURE_RATE", worker)).status == "succeeded"
