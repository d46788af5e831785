"""Fuzz every operation of the HTTP API against its own OpenAPI schema, on a live server.

A real web process (``runserver``) serves the test database, seeded with one object of
every kind the API addresses; schemathesis (its ``st run`` command, as a subprocess)
reads ``/api/schema/`` with a staff Bearer token and sends generated requests, valid
and invalid, to every operation the schema lists.

Checks, and why these:

- ``not_a_server_error``: bad input must get a 4xx, never a 500 (DESIGN "Security").
- ``status_code_conformance``: every status the API answers is documented, so a client
  knows every outcome it has to handle (orchestrator_site.api.schema documents the errors).
- ``response_schema_conformance``: every body matches its documented schema, success
  and error alike.
- ``content_type_conformance``: every answer has a documented media type (an error of
  the SSE stream is JSON, like every error).
- ``negative_data_rejection``: a request the schema calls invalid (a non-integer
  ``limit``, a boolean filter that is not one, an array where an object goes) is a 4xx.

Not enabled by default: ``positive_data_acceptance`` (the schema cannot state every rule
— a rule's conditions, a worker's cadence, a definition's stages — so it flags valid 4xx
answers; run it with ``FUZZ_CHECKS=positive_data_acceptance`` to count them),
``use_after_free``/``ensure_resource_availability`` (need OpenAPI links, which the
schema has none of), ``ignored_auth`` (tests/security covers authentication endpoint by
endpoint, anonymous and non-staff). Every subprocess reaches loopback only
(``OUTBOUND_ALLOWED_NETWORKS``): no generated URL leaves the machine.

Phases: explicit examples and fuzzing, 8 examples per operation, deterministic
generation (Hypothesis' derandomized mode: the same requests on every run, so a failure
reproduces): about eight hundred requests, under two minutes on two cores.
The coverage phase (every boundary of every field) takes over ten minutes here; run it
by hand when the schema changes a lot: ``FUZZ_PHASES=examples,coverage,fuzzing
FUZZ_MAX_EXAMPLES=25 FUZZ_TIMEOUT_SECONDS=3600 pytest tests/e2e/test_api_fuzz.py -o timeout=3600``.

Nothing is excluded. The SSE stream of pipeline events (``Accept: text/event-stream``)
is bounded by PIPELINE_SSE_MAX_SECONDS, set to 1 s for the server, so it ends.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from tests.security.world import World, build_world
from tests.support.processes import free_port, manage, running, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "8"))
PHASES = os.environ.get("FUZZ_PHASES", "examples,fuzzing")
TIMEOUT_SECONDS = int(os.environ.get("FUZZ_TIMEOUT_SECONDS", "900"))
CHECKS = os.environ.get(
    "FUZZ_CHECKS",
    "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,"
    "negative_data_rejection",
)
ST = str(Path(sys.executable).with_name("st"))


def fuzz_config(world: World) -> str:
    """Path parameters of the seeded objects: most generated requests address an object
    that exists (so updates, actions and state conflicts are reached), the rest random
    ids and names (404s)."""
    resources = {
        r"^/api/v1/jobs/\{id\}": ("path.id", world.job.pk),
        r"^/api/v1/lanes/\{name\}": ("path.name", world.lane.name),
        r"^/api/v1/ledger/\{id\}": ("path.id", world.entry.pk),
        r"^/api/v1/rules/\{id\}": ("path.id", world.rule.pk),
        r"^/api/v1/actions/\{id\}": ("path.id", world.action.pk),
        r"^/api/v1/workers/\{name\}": ("path.name", world.worker.name),
        r"^/api/v1/score-reports/\{id\}": ("path.id", world.report.pk),
        r"^/api/v1/anomalies/\{id\}": ("path.id", world.anomaly.pk),
        r"^/api/v1/services/\{name\}": ("path.name", world.service.name),
        r"^/api/v1/service-alerts/\{id\}": ("path.id", world.alert.pk),
        r"^/api/v1/pipeline/definitions/\{name\}": ("path.name", world.definition.name),
        r"^/api/v1/pipeline/jobs/\{id\}": ("path.id", world.pipeline_job.pk),
        r"^/api/v1/suggestions/\{id\}": ("path.id", world.suggestion.pk),
        r"^/api/v1/routing/contexts/\{name\}": ("path.name", world.context.name),
        r"^/api/v1/routing/multipliers/\{task_type\}": ("path.task_type", world.multiplier.task_type),
    }
    lines = []
    for index, (regex, (parameter, value)) in enumerate(resources.items()):
        literal = f'"{value}"' if isinstance(value, str) else str(value)
        lines += [
            f"[dictionaries.known{index}]",
            f"values = [{literal}]",
            "",
            "[[operations]]",
            f"include-path-regex = '{regex}'",
            f'parameters = {{ "{parameter}" = {{ dictionary = "known{index}", probability = 0.8 }} }}',
            "",
        ]
    return "\n".join(lines)


def _answers(base: str) -> bool:
    try:
        return requests.get(f"{base}/health", timeout=1).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture
def fuzz_world(settings) -> World:
    settings.PIPELINE_PLACEHOLDER_SECONDS = 0
    return build_world()


def test_every_operation_survives_fuzzing_within_its_schema(fuzz_world, tmp_path):
    staff = get_user_model().objects.create_user("fuzzer", password="pw-fuzzer-123", is_staff=True)
    token = Token.objects.create(user=staff).key
    config = tmp_path / "schemathesis.toml"
    config.write_text(fuzz_config(fuzz_world))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    web = ("web", manage("runserver", f"127.0.0.1:{port}", "--noreload"))
    env = {
        "DEBUG": "false",
        # Thousands of writes in a few minutes: far past the production write rate.
        "API_WRITE_RATE": "1000000/min",
        "PIPELINE_SSE_MAX_SECONDS": "1",
        "PIPELINE_PLACEHOLDER_SECONDS": "0",
        # Generated URLs (services, worker targets, http.request jobs) never leave the machine.
        "OUTBOUND_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128",
    }
    argv = [
        ST,
        "--no-color",
        "--config-file",
        str(config),
        "run",
        f"{base}/api/schema/?format=json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        CHECKS,
        "--phases",
        PHASES,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--generation-deterministic",
        # One request at a time: the web process and this test share two cores.
        "--workers",
        "1",
        "--request-timeout",
        "60",
    ]
    with running(web, log_dir=tmp_path, **env) as procs:
        wait_for(lambda: _answers(base), timeout=60, message="the web server to answer")
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False)
        server_log = procs[0].output()

    report = done.stdout + done.stderr
    (tmp_path / "schemathesis.txt").write_text(report)
    if os.environ.get("FUZZ_REPORT"):
        Path(os.environ["FUZZ_REPORT"]).write_text(report)
    summary = report[report.find("SUMMARY") - 40 :] if "SUMMARY" in report else report[-6000:]
    assert done.returncode == 0, f"schemathesis found problems:\n{_failures(report)}\n{summary}"
    operations = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", report)
    assert operations, summary
    selected, total, tested = map(int, operations.groups())
    assert selected == total == tested and tested >= 90, summary
    # Whatever the client saw, the server logged no unhandled exception either.
    assert "Traceback" not in server_log and '" 500 ' not in server_log, server_log[-6000:]


def _failures(report: str) -> str:
    start = report.find("FAILURES")
    if start < 0:
        start = report.find("ERRORS")
    return report[start : start + 20000] if start >= 0 else ""
