"""A gate approved through its schema form in a real headless Chromium, against a real
web server and a real qcluster: the inbox and its count, a typed value refused next to
its field, the approval, and the next stage (a real command) reading the input.

Chromium as in tests/console/test_browser.py: missing, the test fails and says so.
"""

from __future__ import annotations

import sys

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission

from pipeline.models import Artifact, GateDecision, PipelineDefinition, PipelineJob
from tests.console.test_browser import CHROMIUM_ARGS, TIMEOUT_MS, _up, require_chromium
from tests.support.processes import free_port, manage, running, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
PASSWORD = "pw-browser-123"
SCHEMA = {
    "type": "object",
    "required": ["tone", "takes"],
    "properties": {
        "tone": {"type": "string", "enum": ["calm", "bold"], "default": "calm"},
        "takes": {"type": "integer", "minimum": 1, "maximum": 9},
    },
}
# The stage after the gate prints what the reviewer chose, from the input it is given.
PRINT_CHOICE = (
    "import json, os; g = json.load(open(os.environ['PIPELINE_INPUT']))['gate_inputs']['review']; "
    "print(f\"tone={g['tone']} takes={g['takes']}\")"
)


@pytest.fixture
def allow_orm_beside_playwright(monkeypatch):
    # As in test_browser.py: the sync Playwright API keeps an asyncio loop in this thread.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def waiting_job(db, settings):
    from pipeline import engine

    settings.PIPELINE_PLACEHOLDER_SECONDS = 0
    settings.PIPELINE_COMMANDS = [sys.executable]
    # The test settings hash with MD5 for speed; the server checks with the real hashers.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    lena = get_user_model().objects.create_user("lena", password=PASSWORD)
    lena.user_permissions.add(Permission.objects.get(codename="approve_gate", content_type__app_label="pipeline"))
    lena.groups.add(Group.objects.create(name="legal"))
    definition = PipelineDefinition.objects.create(
        name="legal-review",
        stages=["draft", "review", "publish"],
        gates={"review": {"required": True, "assignees": ["group:legal"], "input_schema": SCHEMA}},
        stage_timeouts={"draft": 5, "review": 5, "publish": 5},
        runners={"publish": {"kind": "command", "argv": [sys.executable, "-c", PRINT_CHOICE], "timeout_seconds": 30}},
        stage_attempts=1,
    )
    job = engine.create_job("launch-video", "A short launch video", definition=definition, actor="writer")
    job.refresh_from_db()
    assert (job.status, job.stage) == ("needs_approval", "review")
    return job


def test_a_reviewer_approves_a_gate_through_its_schema_form(tmp_path, waiting_job, allow_orm_beside_playwright):
    from playwright.sync_api import expect, sync_playwright

    chromium = require_chromium()
    job = waiting_job
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    specs = (("web", manage("runserver", f"127.0.0.1:{port}", "--noreload")), ("cluster", manage("qcluster")))
    with running(*specs, log_dir=tmp_path, DEBUG="false", PIPELINE_COMMANDS=sys.executable) as procs:
        import requests

        wait_for(lambda: _up(requests, base), timeout=30, message="the web server to answer", alive=procs)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1300, "height": 1000})
                page.set_default_timeout(TIMEOUT_MS)
                page.goto(f"{base}/login/")
                page.fill("input[name=username]", "lena")
                page.fill("input[name=password]", PASSWORD)
                page.click("button[type=submit]")
                page.wait_for_url(f"{base}/")

                # --- the inbox: its count in the navigation, the job with its form ------------
                expect(page.locator("#nav-inbox [data-inbox-count]")).to_have_text("1")
                page.click("#nav-inbox")
                page.wait_for_url(f"{base}/inbox/")
                row = page.locator(f"#inbox-{job.pk}")
                expect(row.locator("h3")).to_contain_text("gate review")
                expect(row.locator(f"#inbox-{job.pk}-input-tone option")).to_have_text(["calm", "bold"])
                row.locator(f"#inbox-{job.pk}-input-tone").select_option("bold")
                row.locator(f"#inbox-{job.pk}-input-takes").fill("12")
                row.locator('[data-action="approve"]').click()

                # --- refused: the error stands by its field, and stays through live updates --
                takes = page.locator(".gate-form .gate-input").filter(has=page.locator("#gate-input-takes"))
                expect(takes.locator(".error")).to_contain_text("9")
                expect(page.locator("#gate-input-takes")).to_have_value("12")
                expect(page.locator("#gate-input-tone")).to_have_value("bold")
                page.wait_for_timeout(3500)  # longer than a live poll
                expect(takes.locator(".error")).to_be_visible()
                assert not GateDecision.objects.filter(job=job).exists()

                # --- approved with a good value ----------------------------------------------
                page.fill("#gate-input-takes", "3")
                page.locator('.gate-form [data-action="approve"]').click()
                expect(page.locator(".msg-success")).to_contain_text("review approved")
                expect(page.locator("#nav-inbox [data-inbox-count]")).to_have_text("0")
                decision = GateDecision.objects.get(job=job)
                assert (decision.decided_by, decision.via, decision.input) == (
                    "lena",
                    "console",
                    {"tone": "bold", "takes": 3},
                )

                # --- the real cluster runs the command stage, which reads the input -----------
                expect(page.locator('[data-metric="pipeline.status"]')).to_have_text("Completed", timeout=30_000)
            finally:
                browser.close()
    job = PipelineJob.objects.get(pk=job.pk)
    assert job.status == "completed", job.error
    stdout = Artifact.objects.get(job=job, path="publish/stdout.txt")
    assert stdout.metadata["exit_code"] == 0
    from django.conf import settings

    assert (settings.RUNS_DIR / str(job.pk) / stdout.path).read_text() == "tone=bold takes=3\n"
