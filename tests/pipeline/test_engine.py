"""Pipeline jobs driven in-process through the real job queue (django-q2 sync mode):
gates, reject/resume, failures, files on disk, events, escalation and timeouts."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import pytest
from django.db import close_old_connections, connection
from django.utils import timezone

from orchestration.core.choices import JobStatus
from orchestration.core.jobs import queue
from orchestration.core.models import Anomaly, Job, LedgerEntry
from orchestration.loop.cycle import run_cycle
from orchestration.loop.monitor import build_snapshot
from pipeline import engine
from pipeline import transitions as t
from pipeline.models import Artifact, GateDecision, PipelineDefinition, PipelineEvent, PipelineJob

GATES = ["script", "storyboard", "assets", "audio"]


def types(job: PipelineJob) -> list[tuple[str, str]]:
    return list(job.events.order_by("id").values_list("type", "stage"))


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.django_db
def test_it_runs_every_stage_stopping_at_each_gate_until_approved(run_commits, settings):
    job = run_commits(engine.create_job, "explainer", "Explain gates", actor="writer")
    assert (job.status, job.stage) == (t.NEEDS_APPROVAL, "script")
    for gate in GATES:
        assert (job.status, job.stage) == (t.NEEDS_APPROVAL, gate)
        job = run_commits(engine.approve, job, gate, actor="ops", notes=f"{gate} ok")
    assert job.status == t.COMPLETED and job.finished_at is not None
    assert [e for e, _ in types(job)].count("gate_pause") == 4
    assert types(job)[-2:] == [("stage_completed", "acceptance"), ("job_completed", "acceptance")]
    assert list(GateDecision.objects.filter(job=job).values_list("stage", "decided_by")) == [(g, "ops") for g in GATES]
    # Every stage ran as its own queue job in the single pipeline lane.
    stage_jobs = Job.objects.filter(kind="pipeline.stage", reference__startswith=f"pipeline:{job.pk}:")
    assert stage_jobs.count() == 9 and set(stage_jobs.values_list("lane", "status")) == {("pipeline", "completed")}

    run = settings.RUNS_DIR / str(job.pk)
    expected = {
        "outline.txt", "research.json", "script.txt", "storyboard.json", "asset_plan.json",
        "animatics/scene_000.placeholder.txt", "voiceover.placeholder.txt", "captions.srt",
        "video.placeholder.txt", "acceptance_results.json",
    }  # fmt: skip
    assert set(job.artifacts.values_list("path", flat=True)) == expected
    for path in expected:
        assert (run / path).is_file()
    assert "PLACEHOLDER" in (run / "outline.txt").read_text()
    assert json.loads((run / "storyboard.json").read_text())["placeholder"] is True
    meta = dict(job.artifacts.values_list("path", "metadata"))
    assert meta["script.txt"]["word_count"] > 0 and meta["storyboard.json"]["scene_count"] == 3

    state = json.loads((run / "state.json").read_text())
    assert state["status"] == "completed" and state["progress"] == {"done": 9, "total": 9}
    on_disk = lines(run / "events.jsonl")
    assert [(e["type"], e["stage"]) for e in on_disk] == types(job)
    transitions = [line for line in lines(settings.RUNS_DIR / "state.jsonl") if line["job_id"] == job.pk]
    # start + 9 stage completions + 4 approvals
    assert len(transitions) == 14
    assert transitions[0]["from_status"] == "queued" and transitions[-1]["to_status"] == "completed"


@pytest.mark.django_db
def test_reject_pauses_and_resume_reruns_the_stage_without_duplicating_artifacts(run_commits, settings):
    job = run_commits(engine.create_job, "rework", "Needs rework")
    script = settings.RUNS_DIR / str(job.pk) / "script.txt"
    first = script.read_text()
    job = run_commits(engine.reject, job, "script", actor="ops", notes="weak hook")
    assert (job.status, job.stage) == (t.PAUSED, "script")
    assert GateDecision.objects.get(job=job).notes == "weak hook"
    job = run_commits(engine.resume, job, actor="ops")
    assert (job.status, job.stage) == (t.NEEDS_APPROVAL, "script")
    assert [e for e, s in types(job) if s == "script"] == [
        "stage_started", "stage_completed", "gate_pause", "gate_decision", "gate_rejected", "job_resumed",
        "stage_started", "stage_completed", "gate_pause",
    ]  # fmt: skip
    assert Artifact.objects.filter(job=job, path="script.txt").count() == 1 and script.read_text() == first
    completed = PipelineEvent.objects.filter(job=job, type="stage_completed", stage="script").last()
    assert completed.data["reused_artifacts"] == ["script.txt"] and completed.data["artifacts"] == []
    assert LedgerEntry.objects.filter(event_type="pipeline.reject", actor="ops").exists()


@pytest.mark.django_db
def test_a_configured_runner_is_used_and_a_failing_one_fails_the_job(run_commits):
    spec = PipelineDefinition.default().snapshot()
    definition = PipelineDefinition.objects.create(
        name="custom",
        stages=["first", "second"],
        gates={},
        stage_timeouts={"first": 1, "second": 1},
        runners={"first": "tests.pipeline.stage_runners.count_words", "second": "tests.pipeline.stage_runners.boom"},
        lane=spec["lane"],
        stage_attempts=1,
    )
    job = run_commits(engine.create_job, "custom", definition=definition)
    assert job.status == t.FAILED and job.stage == "second"
    assert "renderer crashed in second" in job.error
    assert types(job)[-2:] == [("stage_failed", "second"), ("job_failed", "second")]
    assert list(job.artifacts.values_list("path", flat=True)) == ["custom.txt"]
    # A failed job can be resumed; it re-runs the failing stage (which fails again).
    job = run_commits(engine.resume, job, actor="ops")
    assert job.status == t.FAILED and [e for e, _ in types(job)].count("stage_failed") == 2


@pytest.mark.django_db
def test_a_stale_stage_delivery_does_nothing(run_commits):
    job = run_commits(engine.create_job, "stale")
    before = types(job)
    outline_job = Job.objects.get(reference=f"pipeline:{job.pk}:outline:1")
    from pipeline.stages import run_stage

    result = run_stage(outline_job.payload, queue.JobContext(outline_job, threading.Event()))
    assert result == {"skipped": "the pipeline job moved on; this run is stale"}
    job.refresh_from_db()
    assert types(job) == before and job.stage == "script"
    # And a late stage_completed for an old run is ignored by the state machine.
    assert engine.apply(job.pk, "stage_completed", stage="outline", run=1).status == t.NEEDS_APPROVAL


@pytest.mark.django_db
def test_approving_or_rejecting_the_wrong_gate_is_refused_and_changes_nothing(run_commits):
    job = run_commits(engine.create_job, "wrong")
    with pytest.raises(t.TransitionError, match="not waiting at the storyboard gate"):
        engine.approve(job, "storyboard", actor="ops")
    with pytest.raises(t.TransitionError, match="has no approval gate"):
        engine.reject(job, "outline", actor="ops")
    with pytest.raises(t.TransitionError, match="only paused or failed"):
        engine.resume(job, actor="ops")
    job.refresh_from_db()
    assert job.status == t.NEEDS_APPROVAL and not GateDecision.objects.exists()


@pytest.mark.django_db
def test_cancel_while_waiting_ends_the_job(run_commits, settings):
    job = run_commits(engine.create_job, "stop")
    job = run_commits(engine.cancel, job, actor="ops")
    assert job.status == t.CANCELED and types(job)[-1] == ("job_canceled", "script")
    assert json.loads((settings.RUNS_DIR / str(job.pk) / "state.json").read_text())["status"] == "canceled"
    with pytest.raises(t.TransitionError, match="already canceled"):
        engine.cancel(job, actor="ops")


@pytest.mark.django_db(transaction=True)
def test_cancel_mid_stage_tells_the_running_stage_to_stop(broker_only, settings):
    settings.PIPELINE_PLACEHOLDER_SECONDS = 30
    job = engine.create_job("long", "a long stage")
    stage_job = Job.objects.get(reference=f"pipeline:{job.pk}:outline:1")
    assert stage_job.status == JobStatus.PENDING  # queued for a node to claim
    ((claimed_pk, token),) = queue.claim(1, owner="test:1")
    assert claimed_pk == stage_job.pk
    outcome = {}

    def worker():
        try:
            outcome["status"] = queue.execute(stage_job.pk, token)
        finally:
            close_old_connections()

    thread = threading.Thread(target=worker)
    thread.start()
    deadline = time.monotonic() + 10
    while not PipelineEvent.objects.filter(job=job, type="stage_started").exists():
        assert time.monotonic() < deadline, "stage never started"
        time.sleep(0.05)
    began = time.monotonic()
    engine.cancel(job, actor="ops")
    thread.join(timeout=10)
    assert not thread.is_alive() and time.monotonic() - began < 5  # not the 30 s the stage wanted
    assert outcome["status"] == JobStatus.CANCELED
    job.refresh_from_db()
    assert job.status == t.CANCELED
    assert [e for e, _ in types(job)] == ["job_started", "stage_started", "job_canceled"]


@pytest.mark.django_db(transaction=True)
def test_approve_and_reject_racing_on_one_gate_exactly_one_wins(broker_only):
    for attempt in range(3):
        job = PipelineJob.objects.create(
            slug=f"race-{attempt}",
            definition=PipelineDefinition.default(),
            config=PipelineDefinition.default().snapshot(),
            status=t.NEEDS_APPROVAL,
            stage="script",
            stage_run=3,
        )
        barrier = threading.Barrier(2)
        results: dict[str, str] = {}

        def decide(verb: str, job_id: int = job.pk, barrier=barrier, results=results):
            try:
                barrier.wait()
                getattr(engine, verb)(PipelineJob.objects.get(pk=job_id), "script", actor=verb)
                results[verb] = "ok"
            except t.TransitionError as exc:
                results[verb] = f"refused: {exc}"
            finally:
                connection.close()

        threads = [threading.Thread(target=decide, args=(verb,)) for verb in ("approve", "reject")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert sorted(r == "ok" for r in results.values()) == [False, True], results
        decisions = list(GateDecision.objects.filter(job=job).values_list("decided_by", flat=True))
        assert len(decisions) == 1
        winner = decisions[0]
        assert results[winner] == "ok"
        job.refresh_from_db()
        assert (job.status, job.stage) == ((t.RUNNING, "storyboard") if winner == "approve" else (t.PAUSED, "script"))
        assert PipelineEvent.objects.filter(job=job, type__in=("gate_approved", "gate_rejected")).count() == 1


def _wait_at_gate(run_commits, slug: str, *, gates: dict | None = None) -> PipelineJob:
    definition = PipelineDefinition.default()
    if gates:
        definition.pk = None
        definition.name, definition.is_default, definition.builtin = f"d-{slug}", False, False
        definition.gates = {**definition.gates, **gates}
        definition.save()
    return run_commits(engine.create_job, slug, definition=definition)


@pytest.mark.django_db
def test_a_gate_waiting_past_its_timeout_is_escalated_once_by_the_loop(run_commits):
    job = _wait_at_gate(run_commits, "slow-reviewers")
    assert job.gate_deadline == job.waiting_since + timedelta(minutes=60)
    assert build_snapshot()["pipeline"]["overdue_gates"] == 0
    PipelineJob.objects.filter(pk=job.pk).update(
        waiting_since=timezone.now() - timedelta(minutes=61), gate_deadline=timezone.now() - timedelta(minutes=1)
    )
    section = build_snapshot()["pipeline"]
    assert section["overdue_gates"] == 1 and section["oldest_waiting_minutes"] >= 61
    result = run_cycle()
    executed = [r for r in result["execution"]["results"] if r["type"] == "escalate_pipeline_gates"]
    assert executed and executed[0]["result"]["escalated"] == [job.pk]
    assert executed[0]["result"]["auto_approved"] == []
    entry = LedgerEntry.objects.get(event_type="pipeline.gate_escalated")
    assert entry.severity == "warning" and entry.data["stage"] == "script"
    job.refresh_from_db()
    assert job.status == t.NEEDS_APPROVAL and job.escalated_at is not None
    anomaly = Anomaly.objects.get(subject=f"pipeline:{job.pk}")
    assert anomaly.code == "TIMEOUT_WARNING" and anomaly.resolved_at is None and anomaly.details["stage"] == "script"
    run_cycle()  # escalated once per wait, not every cycle
    assert LedgerEntry.objects.filter(event_type="pipeline.gate_escalated").count() == 1
    run_commits(engine.approve, job, "script", actor="ops")  # a decision ends the anomaly
    anomaly.refresh_from_db()
    assert anomaly.resolved_at is not None


@pytest.mark.django_db
def test_an_overdue_auto_approve_gate_is_approved_by_the_system(run_commits):
    job = _wait_at_gate(
        run_commits, "auto", gates={"script": {"required": True, "auto_approve": True, "timeout_minutes": 5}}
    )
    PipelineJob.objects.filter(pk=job.pk).update(gate_deadline=timezone.now() - timedelta(seconds=1))
    run_cycle()
    job.refresh_from_db()
    assert (job.status, job.stage) == (t.RUNNING, "storyboard")
    decision = GateDecision.objects.get(job=job)
    assert (decision.decided_by, decision.automatic, decision.decision) == ("system", True, "approved")
    approved = PipelineEvent.objects.get(job=job, type="gate_approved")
    assert approved.data["automatic"] is True and approved.data["actor"] == "system"
    assert LedgerEntry.objects.filter(event_type="pipeline.approve", actor="system").exists()


@pytest.mark.django_db
def test_a_stage_running_past_its_timeout_fails_the_job():
    job = engine.create_job("stuck")  # nothing commits here, so nobody runs the stage
    assert job.status == t.RUNNING
    assert timedelta(minutes=29) < job.stage_deadline - timezone.now() <= timedelta(minutes=30)
    PipelineJob.objects.filter(pk=job.pk).update(stage_deadline=timezone.now() - timedelta(seconds=1))
    assert build_snapshot()["pipeline"]["overdue_stages"] == 1
    run_cycle()
    job.refresh_from_db()
    assert job.status == t.FAILED and "timed out after 30 minutes" in job.error
    assert [e for e, _ in types(job)][-2:] == ["stage_failed", "job_failed"]
    assert Job.objects.get(pk=job.stage_job_id).status == JobStatus.CANCELED
    assert LedgerEntry.objects.filter(event_type="pipeline.stage_timeout").exists()


@pytest.mark.django_db
def test_the_snapshot_section_uses_one_query_whatever_the_number_of_jobs(django_assert_max_num_queries):
    from pipeline.loop import pipeline_section

    definition = PipelineDefinition.default()
    now = timezone.now()
    statuses = [t.QUEUED, t.RUNNING, t.NEEDS_APPROVAL, t.PAUSED, t.COMPLETED]
    PipelineJob.objects.bulk_create(
        PipelineJob(
            slug=f"j{i}",
            definition=definition,
            config={},
            stage="script",
            status=statuses[i % 5],
            waiting_since=now - timedelta(minutes=i % 90) if statuses[i % 5] == t.NEEDS_APPROVAL else None,
            gate_deadline=now - timedelta(minutes=1) if i % 10 == 2 else None,
        )
        for i in range(3000)
    )
    with django_assert_max_num_queries(1):
        section = pipeline_section(now)
    assert section["total"] == 3000 and section["awaiting_approval"] == 600
    assert section["by_status"]["completed"] == 600 and section["active"] == 2400
    assert section["overdue_gates"] == 300 and 80 <= section["oldest_waiting_minutes"] <= 90


@pytest.mark.django_db
def test_a_timed_out_stage_runs_again_where_the_definition_says_so():
    definition = PipelineDefinition.objects.create(
        name="patient",
        stages=["render", "publish"],
        gates={},
        stage_timeouts={"render": 10, "publish": 1},
        stage_attempts=2,
        retry_timed_out_stages=True,
    )
    job = engine.create_job("patient", definition=definition)
    first_stage_job = job.stage_job_id
    PipelineJob.objects.filter(pk=job.pk).update(stage_deadline=timezone.now() - timedelta(seconds=1))
    run_cycle()
    job.refresh_from_db()
    assert (job.status, job.stage, job.stage_run) == (t.RUNNING, "render", 2)
    assert job.stage_job_id != first_stage_job and Job.objects.get(pk=first_stage_job).status == JobStatus.CANCELED
    assert job.stage_deadline > timezone.now() + timedelta(minutes=9)
    # The second timeout uses up the attempts: the job fails.
    PipelineJob.objects.filter(pk=job.pk).update(stage_deadline=timezone.now() - timedelta(seconds=1))
    run_cycle()
    job.refresh_from_db()
    assert job.status == t.FAILED
    assert [e for e, _ in types(job)] == ["job_started", "stage_failed", "stage_failed", "job_failed"]


@pytest.mark.django_db
def test_a_runner_that_cannot_be_imported_fails_the_stage_with_a_clear_error(run_commits):
    definition = PipelineDefinition.objects.create(
        name="typo", stages=["only"], gates={}, stage_timeouts={"only": 1}, runners={"only": "pipeline.nope.run"}
    )
    job = run_commits(engine.create_job, "typo", definition=definition)
    assert job.status == t.FAILED and "runner 'pipeline.nope.run' is not declared runnable" in job.error
    assert Job.objects.get(pk=job.stage_job_id).attempts == 1  # permanent: not retried


@pytest.mark.django_db
def test_a_runner_outside_the_registry_fails_the_stage_and_does_not_run(run_commits, capsys):
    # Stored before the registry changed (or straight into the table): refused when it runs.
    definition = PipelineDefinition.objects.create(
        name="builtin", stages=["only"], gates={}, stage_timeouts={"only": 1}, runners={"only": "builtins.print"}
    )
    job = run_commits(engine.create_job, "builtin", definition=definition)
    assert job.status == t.FAILED and "'builtins.print' is not declared runnable" in job.error
    assert "StageContext" not in capsys.readouterr().out


@pytest.mark.django_db
def test_a_definition_is_validated_in_the_admin_form_too():
    from django.core.exceptions import ValidationError

    bad = PipelineDefinition(name="bad", stages=["a"], gates={"b": {}}, stage_timeouts={"a": 1})
    with pytest.raises(ValidationError, match="gate for unknown stage 'b'"):
        bad.full_clean()


@pytest.mark.django_db
def test_canceling_the_stage_job_in_the_queue_fails_the_stage_instead_of_hanging():
    job = engine.create_job("orphan")  # nothing commits here, so the stage job stays pending
    queue.cancel(Job.objects.get(pk=job.stage_job_id), actor="ops")
    job.refresh_from_db()
    assert job.status == t.FAILED and "was canceled in the job queue" in job.error
    assert [e for e, _ in types(job)] == ["job_started", "stage_failed", "job_failed"]
