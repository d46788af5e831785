"""End to end with real processes sharing the test database: a qcluster runs the
stages, a web server takes approvals and streams events over SSE."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator

import pytest
import requests
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from orchestration.core.models import Job
from pipeline import engine
from pipeline import transitions as t
from pipeline.models import Artifact, PipelineEvent, PipelineJob
from tests.support.processes import free_port, manage, running, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

GATES = ["script", "storyboard", "assets", "audio"]


class SseReader(threading.Thread):
    """Reads an SSE stream with a real HTTP client, noting when each event arrived."""

    def __init__(self, url: str, headers: dict[str, str]):
        super().__init__(daemon=True)
        self.url, self.headers = url, headers
        self.events: list[dict] = []
        self.status = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with requests.get(
                self.url, headers={**self.headers, "Accept": "text/event-stream"}, stream=True, timeout=(5, 60)
            ) as response:
                self.status = (response.status_code, response.headers.get("Content-Type", ""))
                name, data = None, None
                # Byte by byte: a larger read size would wait for that many bytes and
                # hide exactly the liveness this test is about.
                for raw in _lines(response.iter_content(chunk_size=1)):
                    if raw.startswith("event: "):
                        name = raw[7:]
                    elif raw.startswith("data: "):
                        data = json.loads(raw[6:])
                    elif raw == "" and name:
                        self.events.append({"event": name, "data": data, "received": time.monotonic()})
                        if name in ("end", "timeout"):
                            return
                        name, data = None, None
        except BaseException as exc:  # reported by the test
            self.error = exc

    def seen(self, event: str, stage: str) -> bool:
        return any(e["event"] == event and (e["data"] or {}).get("stage") == stage for e in list(self.events))


def test_two_jobs_run_all_stages_and_gates_one_stage_at_a_time_with_a_live_event_stream(tmp_path):
    user = get_user_model().objects.create_user("ops", password="pw-ops-123", is_staff=True)
    token = Token.objects.create(user=user)
    auth = {"Authorization": f"Bearer {token.key}"}
    # Someone else starts the jobs: nobody approves a job they started (the gates' default).
    starter = get_user_model().objects.create_user("starter", password="pw-starter-1", is_staff=True)
    starter_auth = {"Authorization": f"Bearer {Token.objects.create(user=starter).key}"}
    port = free_port()
    base = f"http://127.0.0.1:{port}/api/v1/pipeline"
    with running(
        ("cluster", manage("qcluster")),
        ("web", manage("runserver", f"127.0.0.1:{port}", "--noreload")),
        log_dir=tmp_path,
        PIPELINE_PLACEHOLDER_SECONDS="0.2",
        # No dedicated loop runner here: the cluster's fallback loop holds one worker.
        Q_WORKERS="3",
    ):
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/health"), timeout=30, message="the web server")
        ids = []
        for slug in ("first", "second"):
            response = requests.post(
                f"{base}/jobs/", json={"slug": slug, "intent": f"{slug} video"}, headers=starter_auth
            )
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
        stream = SseReader(f"{base}/jobs/{ids[0]}/events/", auth)
        stream.start()

        approved: dict[int, list[str]] = {job_id: [] for job_id in ids}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            states = {job_id: requests.get(f"{base}/jobs/{job_id}/", headers=auth).json() for job_id in ids}
            if all(s["status"] == "completed" for s in states.values()):
                break
            for job_id, state in states.items():
                assert state["status"] in ("running", "needs_approval", "completed"), state
                if state["status"] != "needs_approval":
                    continue
                # The streamed job is approved only once the stream has shown its pause:
                # the stream delivers events while the job advances, not at the end.
                if job_id == ids[0] and not stream.seen("gate_pause", state["stage"]):
                    continue
                response = requests.post(
                    f"{base}/jobs/{job_id}/approve", json={"stage": state["stage"], "notes": "ok"}, headers=auth
                )
                assert response.status_code == 200, response.text
                approved[job_id].append(state["stage"])
            time.sleep(0.2)
        else:
            raise AssertionError(
                f"jobs did not complete: {states}; stream: {stream.status} {stream.error} {stream.events}"
            )
        stream.join(timeout=20)

    assert approved == {job_id: GATES for job_id in ids}
    # The stream: right content type, every event of the job in order, then its end.
    assert stream.error is None and stream.status[0] == 200 and stream.status[1].startswith("text/event-stream")
    streamed = [(e["event"], e["data"]["stage"]) for e in stream.events if e["event"] not in ("end",)]
    stored = list(PipelineEvent.objects.filter(job_id=ids[0]).order_by("id").values_list("type", "stage"))
    assert streamed == stored and stream.events[-1]["event"] == "end"
    assert [e for e, _ in streamed].count("gate_pause") == 4 and streamed[-1] == ("job_completed", "acceptance")
    pauses = [e["received"] for e in stream.events if e["event"] == "gate_pause"]
    assert pauses[0] < stream.events[-1]["received"] - 1  # the first pause arrived long before the end

    for job_id in ids:
        job = PipelineJob.objects.get(pk=job_id)
        assert job.status == t.COMPLETED
        assert Artifact.objects.filter(job=job).count() == 10
        assert list(job.decisions.values_list("stage", "decided_by")) == [(g, "ops") for g in GATES]
    # Single lane: no two stage runs overlapped, across both jobs and both workers.
    spans = sorted(Job.objects.filter(kind="pipeline.stage").values_list("started_at", "finished_at"))
    assert len(spans) == 18
    for (_, first_end), (second_start, _) in itertools.pairwise(spans):
        assert second_start >= first_end
    started = PipelineEvent.objects.filter(type="stage_started").order_by("created_at", "id")
    ended = PipelineEvent.objects.filter(type="stage_completed").order_by("created_at", "id")
    # With one stage at a time, the n-th start and the n-th end bound the n-th run; any
    # overlap would put a start before the previous end.
    starts, ends = list(started.values_list("created_at", flat=True)), list(ended.values_list("created_at", flat=True))
    windows = list(zip(starts, ends, strict=True))
    for (_, first_end), (second_start, _) in itertools.pairwise(windows):
        assert second_start >= first_end


def test_a_stage_whose_process_was_killed_is_reclaimed_and_rerun_without_duplicate_artifacts(
    tmp_path, settings, broker_only
):
    # The stage writes its file, then "works" for a long time: long enough to be killed.
    with running(
        ("cluster", manage("qcluster")), log_dir=tmp_path, PIPELINE_PLACEHOLDER_SECONDS="60", JOB_LEASE_SECONDS="2"
    ) as (cluster,):
        job = engine.create_job("crash", "survive a crash")
        wait_for(
            lambda: Artifact.objects.filter(job=job, path="outline.txt").exists(), timeout=30, message="outline file"
        )
        outline = settings.RUNS_DIR / str(job.pk) / "outline.txt"
        first_content, first_mtime = outline.read_text(), outline.stat().st_mtime_ns
        cluster.kill_group()  # the whole node dies mid-stage
    stage_job = Job.objects.get(reference=f"pipeline:{job.pk}:outline:1")
    assert stage_job.status == "processing" and stage_job.attempts == 1

    # A fresh node and the loop runner: the expired lease is reclaimed, the stage runs again.
    with running(
        ("cluster", manage("qcluster")),
        ("loop", manage("run_orchestrator")),
        log_dir=tmp_path,
        PIPELINE_PLACEHOLDER_SECONDS="0.1",
    ):
        wait_for(
            lambda: PipelineJob.objects.filter(pk=job.pk, status=t.NEEDS_APPROVAL).exists(),
            timeout=60,
            message="the job to reach its first gate",
        )
    stage_job.refresh_from_db()
    assert stage_job.status == "completed" and stage_job.attempts == 2
    outline_events = list(
        PipelineEvent.objects.filter(job=job, stage="outline").order_by("id").values_list("type", flat=True)
    )
    assert outline_events == ["job_started", "stage_started", "stage_started", "stage_completed"]
    assert Artifact.objects.filter(job=job, path="outline.txt").count() == 1
    assert outline.read_text() == first_content and outline.stat().st_mtime_ns == first_mtime
    completed = PipelineEvent.objects.get(job=job, stage="outline", type="stage_completed")
    assert completed.data["reused_artifacts"] == ["outline.txt"] and completed.data["artifacts"] == []
    job.refresh_from_db()
    assert job.stage == "script"


def _lines(chunks) -> Iterator[str]:
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line.decode().rstrip("\r")


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False
