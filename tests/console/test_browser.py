"""The console in a real headless Chromium against a real web server and a real
qcluster: sign in, watch the dashboard change without a reload, approve a gate by
clicking and see the job move on, reset a circuit from the admin, keep a screenshot.

Chromium is Debian's (/usr/bin/chromium; `make test` installs it through
scripts/ensure_chromium.sh). Without it these tests fail and say so; they never skip.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from health.models import CircuitBreaker
from orchestration.core.jobs.queue import enqueue
from orchestration.core.models import Job, LedgerEntry
from orchestration.loop.models import LoopState
from pipeline.models import GateDecision, PipelineJob
from tests.console.conftest import make_service
from tests.support.processes import ROOT, free_port, manage, running, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = ROOT / "test-artifacts"
PASSWORD = "pw-browser-123"
TIMEOUT_MS = 20_000


def require_chromium(path: Path = CHROMIUM) -> str:
    """The browser's path; a missing browser is a failure that says what to do, never a skip."""
    if not path.exists():
        pytest.fail(
            f"Chromium is not installed at {path}: the browser tests need it. "
            "Run `bash scripts/ensure_chromium.sh` (or `apt-get install chromium`), then run the tests again.",
            pytrace=False,
        )
    return str(path)


@pytest.fixture
def chromium_path() -> str:
    return require_chromium()


def test_a_missing_browser_fails_with_instructions(tmp_path):
    with pytest.raises(pytest.fail.Exception, match=r"Chromium is not installed at .*ensure_chromium\.sh"):
        require_chromium(tmp_path / "no-chromium")


@pytest.fixture
def allow_orm_beside_playwright(monkeypatch):
    # The sync Playwright API keeps an asyncio loop in this thread; Django then refuses
    # ORM calls unless told that this test knows what it is doing.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def system(db, settings):
    """A staff login, a service whose breaker is open and a pipeline job at its first gate."""
    from pipeline import engine

    settings.PIPELINE_PLACEHOLDER_SECONDS = 0
    # The test settings hash with MD5 for speed; the server checks with the real hashers.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    get_user_model().objects.create_user("operator", password=PASSWORD, is_staff=True, is_superuser=True)
    LoopState.get()
    # Switched off: with no loop runner, the cluster's standby loop would run cycles on its
    # own; here the first cycle is the one the operator runs from the dashboard.
    LoopState.objects.update(enabled=False)
    service = make_service("payments", health="circuit_open", breaker="open", last_error="HTTP 503")
    # Started by someone else: nobody approves their own job (the gate rules).
    job = engine.create_job("launch-video", "A short launch video", actor="writer")  # runs inline to the gate
    job.refresh_from_db()
    assert (job.status, job.stage) == ("needs_approval", "script")
    return {"service": service, "job": job}


@pytest.fixture
def servers(tmp_path, system):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    specs = (("web", manage("runserver", f"127.0.0.1:{port}", "--noreload")), ("cluster", manage("qcluster")))
    with running(*specs, log_dir=tmp_path, PIPELINE_PLACEHOLDER_SECONDS="0.2", DEBUG="false") as procs:
        import requests

        wait_for(lambda: _up(requests, base), timeout=30, message="the web server to answer")
        yield base, procs


def _up(requests, base: str) -> bool:
    try:
        return requests.get(f"{base}/health", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def test_an_operator_runs_the_system_from_the_browser(servers, system, chromium_path, allow_orm_beside_playwright):
    from playwright.sync_api import expect, sync_playwright

    base, _procs = servers
    job = system["job"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            # The Content-Security-Policy (default-src 'self') blocks nothing the console needs.
            blocked: list[str] = []
            page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)

            # --- anonymous → login page; sign in; the dashboard --------------------------
            page.goto(f"{base}/")
            assert page.url.startswith(f"{base}/login/")
            page.fill("input[name=username]", "operator")
            page.fill("input[name=password]", "wrong password")
            page.click("button[type=submit]")
            expect(page.locator(".form-error")).to_contain_text("correct username and password")
            page.fill("input[name=username]", "operator")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/")
            expect(page.locator("h1")).to_have_text("Control tower")
            expect(page.locator('[data-service="payments"]')).to_contain_text("open")
            expect(page.locator(f'[data-gate-job="{job.pk}"]')).to_contain_text("script")
            # the stylesheet really loaded (served without DEBUG)
            assert page.evaluate("getComputedStyle(document.querySelector('.topbar')).position") == "sticky"

            # --- a value changes live, without a reload ---------------------------------------
            pending = page.locator('[data-metric="jobs.pending"]')
            before = int(pending.inner_text())
            page.evaluate("window.__sameDocument = 'yes'")
            for _ in range(2):
                enqueue("noop", {}, not_before=timezone.now() + timedelta(hours=1), reference="browser-test")
            assert Job.objects.filter(status="pending").count() == before + 2
            # The queue's panel is a copy shared for 2 s and read again behind the poll that
            # finds it older (console/copies.py): the change shows within about two polls.
            expect(pending).to_have_text(str(before + 2), timeout=15_000)
            assert page.evaluate("window.__sameDocument") == "yes"  # same page: updated in place
            expect(page.locator("#live-indicator")).to_be_visible()

            # --- the health chart appears live when cycles run ---------------------------------
            expect(page.locator('[data-metric="cycle_count"]')).to_have_text("0")
            page.click('[data-action="run-once"]')
            expect(page.locator(".msg-success")).to_contain_text("Cycle 1")
            expect(page.locator('[data-panel="health"] svg.chart')).to_be_visible()

            # --- a gate: the error is shown by the field, then approve by clicking ---------------
            gate = page.locator(f'[data-gate-job="{job.pk}"]')
            gate.locator('[data-action="reject"]').click()
            expect(page.locator(f'[data-gate-job="{job.pk}"] [data-field-error="notes"]')).to_be_visible()
            gate = page.locator(f'[data-gate-job="{job.pk}"]')
            gate.locator("textarea").fill("Script reads well; go ahead.")
            gate.locator('[data-action="approve"]').click()
            expect(page.locator(".msg-success")).to_contain_text("script approved")
            decision = GateDecision.objects.get(job=job, stage="script")
            assert (decision.decision, decision.decided_by, decision.notes) == (
                "approved",
                "operator",
                "Script reads well; go ahead.",
            )
            # The real cluster runs the next stage; the job page shows it arrive at the next gate live.
            page.goto(f"{base}/pipelines/{job.pk}/")
            page.evaluate("window.__sameDocument = 'yes'")
            expect(page.locator('[data-metric="pipeline.stage"]')).to_have_text("storyboard", timeout=30_000)
            expect(page.locator(".stage-waiting .stage-name")).to_have_text("storyboard", timeout=30_000)
            assert page.evaluate("window.__sameDocument") == "yes"
            job.refresh_from_db()
            assert (job.status, job.stage) == ("needs_approval", "storyboard")

            # --- reset a circuit from the admin ----------------------------------------------
            service = system["service"]
            page.goto(f"{base}/admin/health/service/")
            page.check(f'input[name="_selected_action"][value="{service.pk}"]')
            page.select_option("select[name=action]", "reset_circuit")
            page.click("button[name=index]")
            expect(page.locator("ul.messagelist")).to_contain_text("Reset 1 breaker")
            assert CircuitBreaker.objects.get(name="service:payments").state == "closed"
            assert LedgerEntry.objects.filter(event_type="health.circuit_reset", actor="operator").exists()

            # --- the dashboard follows, and we keep a picture of it ------------------------------
            page.goto(f"{base}/")
            # The admin's write dropped the copies of the process that served it
            # (console/middleware.py); a copy another process holds is read again within
            # a poll or two (console/copies.py).
            expect(page.locator('[data-service="payments"] .badge').nth(1)).to_have_text("closed", timeout=15_000)
            page.wait_for_timeout(300)  # let the highlight animation settle
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 20_000
            # Badge colours and progress widths come from static palette.css, not inline styles.
            badge = page.locator('[data-service="payments"] .badge').nth(1)
            assert badge.evaluate("e => getComputedStyle(e).backgroundColor") != "rgba(0, 0, 0, 0)"
            assert not blocked, blocked
        finally:
            browser.close()
    assert PipelineJob.objects.get(pk=job.pk).stage == "storyboard"
