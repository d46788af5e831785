"""The ``command`` and ``http`` stage runners against a real process and a real HTTP
server on 127.0.0.1: output as artifacts, failures with their reason, timeouts."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest

from orchestration.core.models import Job
from pipeline import engine, processes
from pipeline import transitions as t
from pipeline.definitions import DefinitionError, parse
from pipeline.models import Artifact, PipelineDefinition, PipelineJob
from tests.support.http_services import FakeService

pytestmark = pytest.mark.django_db
PY = sys.executable
SCHEMA = {"type": "object", "properties": {"tone": {"type": "string", "default": "calm"}}}


@pytest.fixture(autouse=True)
def _python_is_a_command(settings):
    settings.PIPELINE_COMMANDS = [PY]


def pipeline_with(runner: dict, *, gated: bool = False) -> PipelineDefinition:
    """review → work, where ``work`` runs ``runner``; with ``gated``, review is a gate
    that takes typed input."""
    return PipelineDefinition.objects.create(
        name=f"kinds-{PipelineDefinition.objects.count()}",
        stages=["review", "work"],
        gates={"review": {"required": True, "input_schema": SCHEMA}} if gated else {},
        stage_timeouts={"review": 5, "work": 5},
        runners={"work": runner},
        stage_attempts=1,
    )


def start(run_commits, definition: PipelineDefinition) -> PipelineJob:
    return run_commits(engine.create_job, "kinds", "Try the runners", definition=definition, actor="starter")


def artifact(job: PipelineJob, path: str) -> tuple[bytes, dict]:
    row = Artifact.objects.get(job=job, path=path)
    return (job_dir(job) / path).read_bytes(), row.metadata


def job_dir(job: PipelineJob):
    from django.conf import settings

    return settings.RUNS_DIR / str(job.pk)


# --- command ---------------------------------------------------------------------------
SHOW_INPUT = """
import json, os, sys
data = json.load(open(os.environ["PIPELINE_INPUT"]))
print("cwd", os.getcwd())
print("tone", data["gate_inputs"]["review"]["tone"])
print("secret" , os.environ.get("SECRET_KEY", "absent"))
print("warming up", file=sys.stderr)
"""


def test_it_runs_a_command_in_the_stage_folder_with_the_gate_input(run_commits):
    job = start(run_commits, pipeline_with({"kind": "command", "argv": [PY, "-c", SHOW_INPUT]}, gated=True))
    assert (job.status, job.stage) == (t.NEEDS_APPROVAL, "review")
    job = run_commits(engine.approve, job, "review", actor="ops", values={"tone": "bold"})
    assert job.status == t.COMPLETED, job.error
    out, meta = artifact(job, "work/stdout.txt")
    lines = out.decode().splitlines()
    assert lines[0] == f"cwd {job_dir(job) / 'work'}"
    assert lines[1:] == ["tone bold", "secret absent"]
    assert meta["exit_code"] == 0 and meta["truncated"] is False and meta["bytes"] == len(out)
    err, _ = artifact(job, "work/stderr.txt")
    assert err == b"warming up\n"
    completed = job.events.get(type="stage_completed", stage="work")
    assert set(completed.data["artifacts"]) == {"work/stdout.txt", "work/stderr.txt"}


def test_a_nonzero_exit_fails_the_stage_with_the_tail_of_stderr(run_commits):
    script = "import sys\nprint('noise ' * 2000, file=sys.stderr)\nprint('disk full', file=sys.stderr)\nsys.exit(3)"
    job = start(run_commits, pipeline_with({"kind": "command", "argv": [PY, "-c", script]}))
    assert (job.status, job.stage) == (t.FAILED, "work")
    assert job.error.startswith(f"command {PY} exited with 3: ") and job.error.endswith("disk full")
    failed = job.events.get(type="stage_failed", stage="work")
    assert "disk full" in failed.data["error"] and "Traceback" not in failed.data["error"]
    _, meta = artifact(job, "work/stderr.txt")
    assert meta["exit_code"] == 3


CHILD_AND_WAIT = f"""
import subprocess, sys, time
child = subprocess.Popen([{PY!r}, "-c", "import time; time.sleep(60)"])
open("child.pid", "w").write(str(child.pid))
print("started", flush=True)
time.sleep(60)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child that nobody reaped yet is a zombie: gone for our purpose.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


def test_a_command_past_its_timeout_is_killed_with_its_children(run_commits):
    began = time.monotonic()
    job = start(
        run_commits, pipeline_with({"kind": "command", "argv": [PY, "-c", CHILD_AND_WAIT], "timeout_seconds": 1})
    )
    assert time.monotonic() - began < 15
    assert (job.status, job.stage) == (t.FAILED, "work")
    assert "ran past its 1 s and was killed" in job.error
    child = int((job_dir(job) / "work" / "child.pid").read_text())
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)
    out, meta = artifact(job, "work/stdout.txt")
    assert out == b"started\n" and meta["exit_code"] is None


def test_a_command_outside_pipeline_commands_never_starts(run_commits, settings, tmp_path):
    marker = tmp_path / "ran"
    definition = pipeline_with({"kind": "command", "argv": [PY, "-c", f"open({str(marker)!r}, 'w')"]})
    settings.PIPELINE_COMMANDS = ["/usr/bin/make"]  # changed after the definition was saved
    job = start(run_commits, definition)
    assert job.status == t.FAILED and "is not a command this deployment declared" in job.error
    assert not marker.exists()
    assert Job.objects.get(pk=job.stage_job_id).attempts == 1  # permanent: not retried
    with pytest.raises(DefinitionError, match=r"runners.work: .* is not a command this deployment declared"):
        parse({"pipeline": {"stage_timeouts": {"work": 1}, "runners": {"work": {"kind": "command", "argv": [PY]}}}})


def test_output_is_kept_to_the_limit_while_the_process_runs_to_its_end(tmp_path):
    script = "import sys\nsys.stdout.write('x' * 500000)\nsys.stderr.write('e' * 10 + 'END')"
    outcome = processes.run([PY, "-c", script], cwd=tmp_path, timeout=30, env={"PATH": os.defpath}, output_limit=1024)
    assert outcome.returncode == 0 and outcome.stdout == b"x" * 1024 and outcome.stdout_bytes == 500000
    assert outcome.truncated and outcome.stderr_tail.endswith("END") and not outcome.timed_out


def test_a_command_stops_when_told_to(tmp_path):
    began = time.monotonic()
    outcome = processes.run(
        [PY, "-c", "import time; time.sleep(60)"],
        cwd=tmp_path,
        timeout=60,
        env={"PATH": os.defpath},
        output_limit=1024,
        should_stop=lambda: time.monotonic() - began > 0.3,
    )
    assert outcome.stopped and outcome.returncode is None and time.monotonic() - began < 10


# --- http ------------------------------------------------------------------------------
@pytest.fixture
def service():
    started: list[FakeService] = []

    def make(behaviour: str = "fast", delay: float = 0.0) -> FakeService:
        started.append(FakeService(behaviour, delay=delay))
        return started[-1]

    yield make
    for each in started:
        each.stop()


def test_it_posts_the_stage_input_and_keeps_the_answer(run_commits, service):
    hook = service()
    job = start(run_commits, pipeline_with({"kind": "http", "url": f"{hook.url}/process"}, gated=True))
    job = run_commits(engine.approve, job, "review", actor="ops", values={"tone": "bold"})
    assert job.status == t.COMPLETED, job.error
    assert hook.requests == [
        {
            "job": {"id": job.pk, "slug": job.slug, "intent": "Try the runners"},
            "stage": "work",
            "run": job.events.get(type="stage_started", stage="work").data["run"],
            "gate_inputs": {"review": {"tone": "bold"}},
        }
    ]
    body, meta = artifact(job, "work/response.json")
    assert json.loads(body) == {"processed": True, "echo": hook.requests[0]}
    assert meta["status"] == 200 and meta["bytes"] == len(body) and meta["truncated"] is False


def test_an_error_answer_fails_the_stage_with_its_status_and_body(run_commits, service):
    hook = service("reject")
    job = start(run_commits, pipeline_with({"kind": "http", "url": f"{hook.url}/process"}))
    assert (job.status, job.stage) == (t.FAILED, "work")
    assert job.error == f'POST {hook.url}/process answered 422: {{"error": "bad task"}}'
    _, meta = artifact(job, "work/response.json")
    assert meta["status"] == 422


def test_a_slow_answer_fails_the_stage_at_its_timeout(run_commits, service):
    hook = service(delay=5)
    began = time.monotonic()
    job = start(run_commits, pipeline_with({"kind": "http", "url": f"{hook.url}/process", "timeout_seconds": 1}))
    assert time.monotonic() - began < 4
    assert job.status == t.FAILED and job.error == f"POST {hook.url}/process: no answer within 1 s"


def test_a_refused_address_is_refused_when_written_and_when_run(run_commits, service, settings):
    with pytest.raises(DefinitionError, match=r"runners.work.url is refused: 169.254.169.254 is in a blocked network"):
        parse(
            {
                "pipeline": {
                    "stage_timeouts": {"work": 1},
                    "runners": {"work": {"kind": "http", "url": "http://169.254.169.254/"}},
                }
            }
        )
    hook = service()
    definition = pipeline_with({"kind": "http", "url": f"{hook.url}/process"})
    settings.OUTBOUND_ALLOWED_NETWORKS = ["10.0.0.0/8"]  # loopback no longer allowed
    job = start(run_commits, definition)
    assert job.status == t.FAILED and "outside OUTBOUND_ALLOWED_NETWORKS" in job.error
    assert hook.count == 0


def test_the_readmes_gate_example_is_a_valid_definition(settings):
    import yaml

    from tests.support.processes import ROOT

    settings.PIPELINE_COMMANDS = ["/usr/bin/make"]
    section = (ROOT / "README.md").read_text().split("## Gates and stage runners", 1)[1]
    spec = parse(yaml.safe_load(section.split("```yaml\n", 1)[1].split("```", 1)[0]))
    assert spec.gates["review"]["quorum"] == 2 and spec.gates["review"]["on_timeout"] == "escalate"
    assert {runner["kind"] for runner in spec.runners.values()} == {"command", "http"}
