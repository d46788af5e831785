"""The ``command`` and ``http`` stage runners at their limits: a timeout that must end
before the stage's and the cluster's, answers that a retry cannot change, and the files
a command leaves behind. Real processes, a real HTTP server on 127.0.0.1, a real DB."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.utils import timezone

from orchestration.core.choices import JobStatus
from orchestration.core.jobs import queue
from orchestration.core.models import Job
from pipeline import engine, workdir
from pipeline import transitions as t
from pipeline.definitions import DefinitionError, parse
from pipeline.models import Artifact, PipelineDefinition, PipelineJob
from tests.conftest import _client_for

pytestmark = pytest.mark.django_db
PY = sys.executable


@pytest.fixture(autouse=True)
def _python_is_a_command(settings):
    settings.PIPELINE_COMMANDS = [PY]


def pipeline_with(runner: dict, *, attempts: int = 1, minutes: int = 5) -> PipelineDefinition:
    """One stage, ``work``, run by ``runner``; saved as it is (no validation), as a
    definition stored under other settings would be."""
    return PipelineDefinition.objects.create(
        name=f"limits-{PipelineDefinition.objects.count()}",
        stages=["work"],
        gates={},
        stage_timeouts={"work": minutes},
        runners={"work": runner},
        stage_attempts=attempts,
    )


def start(run_commits, definition: PipelineDefinition) -> PipelineJob:
    return run_commits(engine.create_job, "limits", "Push the runners", definition=definition, actor="starter")


def stage_job(job: PipelineJob) -> Job:
    return Job.objects.get(pk=job.stage_job_id)


def run_retry_now(run_commits, job: PipelineJob) -> PipelineJob:
    """The stage's retry, run now rather than after its backoff."""
    Job.objects.filter(pk=job.stage_job_id, status=JobStatus.RETRY).update(not_before=timezone.now())
    run_commits(queue.run_due_inline)
    job.refresh_from_db()
    return job


# --- a scripted HTTP server --------------------------------------------------------------
class Scripted:
    """Answers each POST with the next (status, headers, body) of ``answers`` (the last
    one again once they run out) and counts the requests."""

    def __init__(self, *answers: tuple[int, dict[str, str], bytes]):
        self.answers = list(answers)
        self.count = 0
        lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    server.count += 1
                    status, headers, body = server.answers[min(server.count, len(server.answers)) - 1]
                self.send_response(status)
                for name, value in {"Content-Type": "text/plain", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted():
    started: list[Scripted] = []

    def make(*answers: tuple[int, dict[str, str], bytes]) -> Scripted:
        started.append(Scripted(*answers))
        return started[-1]

    yield make
    for each in started:
        each.stop()


OK = (200, {"Content-Type": "application/json"}, b'{"done": true}')


# --- http: what a retry can change, and what it cannot ---------------------------------
@pytest.mark.parametrize("status", [400, 401, 404, 409, 422, 301])  # a redirect is not followed: the same again
def test_a_4xx_fails_the_stage_at_once_with_its_status_and_the_start_of_the_body(run_commits, scripted, status):
    hook = scripted((status, {}, b"the hook says no: " + b"x" * 2000), OK)
    job = start(run_commits, pipeline_with({"kind": "http", "url": hook.url}, attempts=3))
    assert (job.status, job.stage) == (t.FAILED, "work")
    assert hook.count == 1
    queued = stage_job(job)
    assert (queued.status, queued.attempts, queued.failed_permanently) == (JobStatus.FAILED, 1, True)
    assert job.error.startswith(f"POST {hook.url} answered {status}: the hook says no: xxx")
    assert len(job.error) < 600  # the start of the body, not all of it
    failed = job.events.get(type="stage_failed", stage="work")
    assert f"answered {status}" in failed.data["error"]
    assert Artifact.objects.get(job=job, path="work/response.txt").metadata["status"] == status
    # Nothing is left to run it again.
    assert queue.run_due_inline() == [] and hook.count == 1


@pytest.mark.parametrize(
    "failure",
    [
        (500, {}, b"internal error"),
        (503, {}, b"down for a moment"),
        (408, {}, b"request timeout"),
        (429, {}, b"slow down"),  # no Retry-After: the job's own backoff
    ],
)
def test_a_5xx_408_or_429_is_retried_and_the_next_answer_counts(run_commits, scripted, failure):
    hook = scripted(failure, OK)
    job = start(run_commits, pipeline_with({"kind": "http", "url": hook.url}, attempts=3))
    assert (job.status, hook.count) == (t.RUNNING, 1)
    queued = stage_job(job)
    assert queued.status == JobStatus.RETRY and f"answered {failure[0]}" in queued.error
    job = run_retry_now(run_commits, job)
    assert (job.status, hook.count) == (t.COMPLETED, 2)
    assert json.loads((_run_dir(job) / "work" / "response.json").read_text()) == {"done": True}


def _run_dir(job: PipelineJob):
    from django.conf import settings

    return settings.RUNS_DIR / str(job.pk)


def test_retry_after_is_honoured_within_its_limit(run_commits, scripted, settings):
    settings.PIPELINE_HTTP_RETRY_AFTER_MAX_SECONDS = 30
    hook = scripted((429, {"Retry-After": "7"}, b"busy"), (503, {"Retry-After": "86400"}, b"maintenance"), OK)
    job = start(run_commits, pipeline_with({"kind": "http", "url": hook.url}, attempts=3))
    queued = stage_job(job)
    wait = (queued.not_before - timezone.now()).total_seconds()
    assert queued.status == JobStatus.RETRY and 5 <= wait <= 7.5
    assert "answered 429: busy (Retry-After 7: any retry waits 7 s)" in queued.error
    # Not before it is due.
    assert queue.run_due_inline() == [] and hook.count == 1
    job = run_retry_now(run_commits, job)
    queued = stage_job(job)
    wait = (queued.not_before - timezone.now()).total_seconds()
    assert (job.status, hook.count) == (t.RUNNING, 2) and 28 <= wait <= 30.5  # a day asked, 30 s given
    job = run_retry_now(run_commits, job)
    assert (job.status, hook.count) == (t.COMPLETED, 3)


def test_no_connection_is_retried(run_commits):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    job = start(run_commits, pipeline_with({"kind": "http", "url": f"http://127.0.0.1:{port}/hook"}, attempts=2))
    queued = stage_job(job)
    assert job.status == t.RUNNING and queued.status == JobStatus.RETRY and "ConnectionError" in queued.error
    job = run_retry_now(run_commits, job)
    assert job.status == t.FAILED and stage_job(job).attempts == 2


# --- timeouts: the runner ends before the stage and the cluster would end it ---------------
def test_a_runner_timeout_the_cluster_or_the_stage_would_cut_off_is_refused_naming_both():
    def doc(seconds: int, minutes: int) -> dict:
        runner = {"kind": "command", "argv": [PY], "timeout_seconds": seconds}
        return {"pipeline": {"stage_timeouts": {"build": minutes}, "runners": {"build": runner}}}

    # 10 s to spare before the stage's 9 minutes end, which end before the cluster's 10.
    assert parse(doc(530, 9), task_timeout_seconds=600).runners["build"]["timeout_seconds"] == 530
    for seconds in (531, 540, 599):
        with pytest.raises(DefinitionError) as caught:
            parse(doc(seconds, 9), task_timeout_seconds=600)
        assert str(caught.value) == (
            f"runners.build.timeout_seconds ({seconds} s) must be at most 530 s: the stage's timeout "
            "(stage_timeouts.build = 9 min = 540 s) ends it otherwise, and the runner needs 10 s after its own "
            "to stop and record why"
        )
    # A stage that outlasts the cluster is refused, and so is its runner, naming the cluster's figure.
    for seconds in (591, 600, 900):
        with pytest.raises(DefinitionError) as caught:
            parse(doc(seconds, 30), task_timeout_seconds=600)
        assert caught.value.errors == [
            "stage_timeouts.build (30 min) must be shorter than the cluster's task timeout (Q_TIMEOUT = 600 s), "
            "which would cut the stage off first",
            f"runners.build.timeout_seconds ({seconds} s) must be at most 590 s: the cluster's task timeout "
            "(Q_TIMEOUT = 600 s) kills a task running longer, and the runner needs 10 s after its own to stop "
            "and record why",
        ]
    # Left out, the default (60 s) is cut to fit when the stage runs; nothing to refuse.
    runner = {"kind": "http", "url": "http://127.0.0.1:9/hook"}
    parse({"pipeline": {"stage_timeouts": {"a": 1}, "runners": {"a": runner}}}, task_timeout_seconds=14400)


def test_the_api_and_the_admin_refuse_it_too(staff_user, settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": 120}
    staff_user.user_permissions.add(*_run_code_permissions())
    body = {
        "name": "slow-build",
        "stages": ["build"],
        "stage_timeouts": {"build": 1},
        "runners": {"build": {"kind": "command", "argv": [PY, "-V"], "timeout_seconds": 115}},
    }
    answer = _client_for(staff_user).post("/api/v1/pipeline/definitions/", body, format="json")
    assert answer.status_code == 400
    said = str(answer.json())
    assert "runners.build.timeout_seconds (115 s) must be at most 50 s" in said and "= 1 min = 60 s" in said
    assert not PipelineDefinition.objects.filter(name="slow-build").exists()
    stored = PipelineDefinition(
        name="slow-build", stages=["build"], gates={}, stage_timeouts={"build": 10}, runners=body["runners"]
    )
    with pytest.raises(ValidationError) as caught:
        stored.clean()
    assert "runners.build.timeout_seconds (115 s) must be at most 110 s" in str(caught.value)
    assert "Q_TIMEOUT = 120 s" in str(caught.value)


def _run_code_permissions():
    from django.contrib.auth.models import Permission

    return Permission.objects.filter(codename="run_code")


SLEEP = "import time; print('started', flush=True); time.sleep(60)"


def test_a_runner_stored_under_a_longer_cluster_timeout_is_cut_to_end_before_the_cluster(run_commits, settings):
    definition = pipeline_with({"kind": "command", "argv": [PY, "-c", SLEEP], "timeout_seconds": 600}, minutes=30)
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": 12}  # lowered since it was saved
    began = time.monotonic()
    job = start(run_commits, definition)
    assert time.monotonic() - began < 10
    assert (job.status, job.stage) == (t.FAILED, "work")
    assert job.error.startswith(
        f"command {PY} ran past its 2 s (cut from 600 s to 2 s: the cluster's task timeout (Q_TIMEOUT) is 12 s) "
        "and was killed"
    )
    meta = Artifact.objects.get(job=job, path="work/stdout.txt").metadata
    assert meta["timeout_seconds"] == 2 and meta["exit_code"] is None and "Q_TIMEOUT" in meta["timeout_note"]
    assert "cut from 600 s" in job.events.get(type="stage_failed").data["error"]


def test_an_http_runner_is_cut_the_same_way(run_commits, settings):
    answered = threading.Event()

    class Slow(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            answered.wait(10)  # holds the answer back until the test ends

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        definition = pipeline_with({"kind": "http", "url": url, "timeout_seconds": 120}, minutes=30)
        settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": 11}
        began = time.monotonic()
        job = start(run_commits, definition)
        assert time.monotonic() - began < 5
        assert job.error == (
            f"POST {url}: no answer within 1 s (cut from 120 s to 1 s: the cluster's task timeout (Q_TIMEOUT) is 11 s)"
        )
    finally:
        answered.set()
        server.shutdown()
        server.server_close()


# --- files a command writes become the stage's artifacts --------------------------------
WRITES = """
import os, pathlib
pathlib.Path("notes.txt").write_text("three words here")
os.makedirs("out", exist_ok=True)
pathlib.Path("out/report.json").write_text('{"ok": true}')
pathlib.Path("frame.png").write_bytes(b"\\x89PNG" + b"0" * 96)
os.symlink("notes.txt", "same-notes")
os.symlink("/etc/hostname", "leak")
os.symlink("/usr", "leak-dir")
"""


def test_files_the_command_writes_become_artifacts_and_links_outside_are_refused(run_commits):
    job = start(run_commits, pipeline_with({"kind": "command", "argv": [PY, "-c", WRITES]}))
    assert job.status == t.COMPLETED, job.error
    rows = {a.path: (a.kind, a.stage, a.metadata) for a in Artifact.objects.filter(job=job)}
    assert set(rows) == {
        "work/stdout.txt",
        "work/stderr.txt",
        "work/notes.txt",
        "work/out/report.json",
        "work/frame.png",
        "work/same-notes",
    }
    kind, stage, meta = rows["work/out/report.json"]
    assert (kind, stage) == ("json", "work")
    assert meta == {
        "name": "report.json",
        "bytes": 12,
        "content_type": "application/json",
        "produced_by": "command",
        "run": 1,
    }
    assert rows["work/notes.txt"][2]["content_type"] == "text/plain" and rows["work/notes.txt"][2]["bytes"] == 16
    assert rows["work/frame.png"][2]["content_type"] == "image/png" and rows["work/frame.png"][0] == "file"
    completed = job.events.get(type="stage_completed")
    assert "work/out/report.json" in completed.data["artifacts"]
    assert completed.data["notes"] == [
        "refused 2 file(s) of the command: leak: a link leading outside the run's folder; "
        "leak-dir: a link leading outside the run's folder"
    ]
    stdout_meta = rows["work/stdout.txt"][2]
    assert stdout_meta["files_refused"] == [
        "leak: a link leading outside the run's folder",
        "leak-dir: a link leading outside the run's folder",
    ]
    # The API lists them like any artifact.
    reader = _client_for(get_user_model().objects.create_user("reader"))
    listed = reader.get(f"/api/v1/pipeline/jobs/{job.pk}/artifacts/").json()
    paths = [a["path"] for a in (listed["results"] if isinstance(listed, dict) else listed)]
    assert "work/out/report.json" in paths and "work/leak" not in paths


MANY = "import pathlib\nfor i in range(10): pathlib.Path(f'f{i}.bin').write_bytes(b'x' * 600)"


def test_a_runaway_command_cannot_flood_the_artifacts(run_commits, settings):
    settings.PIPELINE_COMMAND_ARTIFACT_FILES = 3
    job = start(run_commits, pipeline_with({"kind": "command", "argv": [PY, "-c", MANY]}))
    files = sorted(Artifact.objects.filter(job=job, kind="file").values_list("path", flat=True))
    assert files == ["work/f0.bin", "work/f1.bin", "work/f2.bin"]
    assert "skipped 7 file(s), 4200 bytes" in job.events.get(type="stage_completed").data["notes"][0]
    settings.PIPELINE_COMMAND_ARTIFACT_FILES = 100
    settings.PIPELINE_COMMAND_ARTIFACT_BYTES = 1000
    job = start(run_commits, pipeline_with({"kind": "command", "argv": [PY, "-c", MANY]}))
    assert list(Artifact.objects.filter(job=job, kind="file").values_list("path", flat=True)) == ["work/f0.bin"]


def test_files_of_a_failed_command_are_kept_too(run_commits):
    script = "import pathlib, sys\npathlib.Path('partial.log').write_text('got halfway')\nsys.exit(2)"
    job = start(run_commits, pipeline_with({"kind": "command", "argv": [PY, "-c", script]}))
    assert job.status == t.FAILED and "exited with 2" in job.error
    assert Artifact.objects.get(job=job, path="work/partial.log").metadata["bytes"] == 11


def test_only_new_or_changed_files_are_harvested(tmp_path):
    run = tmp_path.resolve() / "run"
    folder = run / "work"
    folder.mkdir(parents=True)
    (folder / "kept.txt").write_text("same")
    (folder / "changed.txt").write_text("before")
    (run / "other-stage.txt").write_text("elsewhere in the run")
    before = workdir.snapshot(folder)
    time.sleep(0.01)
    (folder / "changed.txt").write_text("after, longer")
    (folder / "new.csv").write_text("a,b\n")
    (folder / "input.json").write_text("{}")
    (folder / "link-in-run").symlink_to(run / "other-stage.txt")
    found = workdir.harvest(folder, run, before, ignore=frozenset({"input.json"}), max_files=10, max_bytes=10**6)
    assert [(f.relpath, f.size, f.content_type) for f in found.files] == [
        ("changed.txt", 13, "text/plain"),
        ("link-in-run", 20, "application/octet-stream"),
        ("new.csv", 4, "text/csv"),
    ]
    assert found.refused == [] and (found.skipped, found.skipped_bytes) == (0, 0)


def test_the_timeout_a_runner_gets_is_what_the_stage_and_the_cluster_leave():
    from pipeline.runner_kinds import effective_timeout

    assert effective_timeout({"timeout_seconds": 30}, 5, 14400) == (30, "")
    assert effective_timeout({}, 1, 14400) == (50, "cut from 60 s to 50 s: the stage's timeout is 1 min")
    assert effective_timeout({"timeout_seconds": 600}, 30, 100) == (
        90,
        "cut from 600 s to 90 s: the cluster's task timeout (Q_TIMEOUT) is 100 s",
    )
    assert effective_timeout({"timeout_seconds": 600}, None, 5) == (
        1,
        "cut from 600 s to 1 s: the cluster's task timeout (Q_TIMEOUT) is 5 s",
    )


def test_an_http_runner_stops_waiting_when_the_job_is_canceled(run_commits):
    """The queue's stop flag (a cancel) ends the wait for an answer at once, as it ends
    a command, rather than at the runner's timeout."""
    from pipeline import runners
    from pipeline.runner_kinds import KINDS

    held = threading.Event()

    class Holding(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            held.wait(10)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Holding)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        job = start(run_commits, pipeline_with({"kind": "command", "argv": [PY, "-V"]}))
        PipelineJob.objects.filter(pk=job.pk).update(status=t.RUNNING)  # as while its stage runs
        canceled = threading.Event()
        threading.Timer(0.3, canceled.set).start()
        ctx = runners.StageContext(job, "work", job.stage_run, _run_dir(job), queue_should_stop=canceled.is_set)
        began = time.monotonic()
        outcome = KINDS["http"].run(ctx, {"kind": "http", "url": url, "timeout_seconds": 30})
        assert outcome == {"stopped": True} and 0.3 <= time.monotonic() - began < 2
        assert not Artifact.objects.filter(job=job, path__startswith="work/response").exists()
    finally:
        held.set()
        server.shutdown()
        server.server_close()


def test_a_folder_too_large_to_look_through_is_cut_short_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(workdir, "SCAN_LIMIT", 5)
    for i in range(8):
        (tmp_path / f"f{i}.txt").write_text("x")
    found = workdir.harvest(tmp_path, tmp_path.resolve(), {}, max_files=100, max_bytes=10**6)
    assert len(found.files) == 5
    assert found.refused == ["(the rest): looked at the first 5 entries of the folder only"]


def test_a_command_that_swaps_its_folder_for_a_link_outside_gets_nothing_registered_or_written_there(
    run_commits, tmp_path
):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not the run's")
    script = f"import os, shutil\nos.chdir('..')\nshutil.rmtree('work')\nos.symlink({str(outside)!r}, 'work')"
    job = start(run_commits, pipeline_with({"kind": "command", "argv": [PY, "-c", script]}))
    assert job.status == t.COMPLETED, job.error
    assert not Artifact.objects.filter(job=job, path="work/secret.txt").exists()
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]  # stdout was not written through the link
    assert (_run_dir(job) / "work" / "stdout.txt").is_file() and not (_run_dir(job) / "work").is_symlink()
    notes = job.events.get(type="stage_completed").data["notes"]
    assert notes == [
        "refused 1 file(s) of the command: (all): the stage's folder no longer lies inside the run's folder"
    ]
