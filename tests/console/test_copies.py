"""The console's show-only panels are read and rendered once per process for a few
seconds and shared (orchestration/console/copies.py): what is shared, for whom, how a
reader learns its age, and what makes a request build fresh."""

from __future__ import annotations

import re
import threading
import time
from datetime import timedelta

import pytest
from django.contrib import messages
from django.utils import timezone

from orchestration.console import copies
from orchestration.core.jobs.queue import enqueue
from tests.console.conftest import make_service


@pytest.fixture
def long_copies(settings):
    settings.CONSOLE_COPY_MAX_AGE_SECONDS = 60


def _pending(body: dict) -> int:
    return body["summary"]["jobs"]["pending"]


def _queue_pending(html: str) -> int:
    return int(re.search(r'data-metric="jobs.pending">(\d+)<', html).group(1))


def _read_at(html: str) -> str:
    return re.search(r'data-copy-note>Read at <time datetime="([^"]+)"', html).group(1)


def test_requests_share_the_panels_and_say_when_they_were_read(staff_browser, world, long_copies):
    first = staff_browser.get("/").content.decode()
    # The queue's insert is hand-written SQL: no model signal drops the copy.
    enqueue("noop", {}, not_before=timezone.now() + timedelta(hours=1))
    second = staff_browser.get("/").content.decode()
    assert "(this view is a copy)" not in first and "(this view is a copy)" in second
    assert _read_at(first) == _read_at(second)
    assert "every viewer shares one reading, read again 60 s later" in second
    assert _queue_pending(second) == _queue_pending(first)  # the job is not in the copy yet
    live = staff_browser.get("/?live=1").json()
    # The live answer is as old as its copy, and its panels are the copy's.
    assert live["generated_at"] == _read_at(first)
    assert _queue_pending(live["panels"]["queue"]) == _queue_pending(first)
    copies.forget()
    fresh = staff_browser.get("/?live=1").json()
    assert _queue_pending(fresh["panels"]["queue"]) == _queue_pending(first) + 1
    # The gates' forms are made for each request, from the copy's rows.
    assert fresh["summary"]["gates_waiting"] == live["summary"]["gates_waiting"] == 1
    assert live["panels"]["gates"].count('class="gate-form"') == 1


@pytest.mark.django_db(transaction=True)
def test_an_old_copy_is_answered_while_the_next_is_read_in_the_background(staff_user, settings):
    from django.test import Client

    from health.models import Service

    settings.CONSOLE_COPY_MAX_AGE_SECONDS = 0.3
    client = Client()
    client.force_login(staff_user)
    make_service("first")
    assert 'data-service="first"' in client.get("/services/").content.decode()
    # Written without model signals, as another process's write would be.
    Service.objects.bulk_create([Service(name="second", base_url="http://127.0.0.1:9")])
    time.sleep(0.35)
    began = time.monotonic()
    stale = client.get("/services/").content.decode()
    assert 'data-service="second"' not in stale and "(this view is a copy)" in stale
    while time.monotonic() - began < 10:
        page = client.get("/services/").content.decode()
        if 'data-service="second"' in page:
            break
        time.sleep(0.05)
    assert 'data-service="second"' in page and "(this view is a copy)" in page  # read by the refresher
    # Past STALE_LIMIT max ages a request reads it itself.
    time.sleep(0.3 * copies.STALE_LIMIT + 0.05)
    assert "(this view is a copy)" not in client.get("/services/").content.decode()


def test_a_write_in_the_process_drops_the_copies(staff_browser, world, long_copies):
    staff_browser.get("/services/")
    make_service("newcomer")
    html = staff_browser.get("/services/").content.decode()
    assert 'data-service="newcomer"' in html and "(this view is a copy)" not in html


def test_a_bulk_action_in_the_admin_drops_the_copies(world, long_copies):
    """The admin's reset writes with queryset updates (no model signal); the page read
    after it shows the breaker closed, not the copy's open one."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    from health.models import Service

    browser = Client()
    browser.force_login(get_user_model().objects.create_superuser("admin", password="pw-admin-123"))
    db_service = Service.objects.get(name="db")
    assert '<span class="badge b-open">open</span>' in browser.get("/services/?q=db").content.decode()
    response = browser.post("/admin/health/service/", {"action": "reset_circuit", "_selected_action": [db_service.pk]})
    assert response.status_code == 302
    # The admin's page shows its message (a message still waiting would make the next
    # page fresh on its own).
    assert "Reset 1 breaker" in browser.get(response.url).content.decode()
    html = browser.get("/services/?q=db").content.decode()
    assert "(this view is a copy)" not in html
    assert '<span class="badge b-open">open</span>' not in html


def test_the_page_after_an_action_is_fresh(staff_browser, world, long_copies, monkeypatch):
    staff_browser.get("/")
    enqueue("noop", {}, not_before=timezone.now() + timedelta(hours=1))
    real = copies.wants_fresh
    seen = []

    def watched(request):
        seen.append(real(request))
        return seen[-1]

    monkeypatch.setattr(copies, "wants_fresh", watched)
    # The loop switch answers with a message and a redirect to the dashboard.
    response = staff_browser.post("/console/loop/disable", follow=True)
    html = response.content.decode()
    assert "Loop disabled" in html
    assert seen and all(seen) and "(this view is a copy)" not in html
    assert _queue_pending(html) == _pending(staff_browser.get("/?live=1").json())


def test_staff_and_others_do_not_share_a_copy(staff_browser, viewer_browser, world, long_copies):
    staff = staff_browser.get("/").content.decode()
    viewer = viewer_browser.get("/").content.decode()
    assert "/admin/orchestration/job/" in staff  # the queue panel's link for staff
    assert "/admin/orchestration/job/" not in viewer
    assert "(this view is a copy)" not in viewer  # built for the viewer, not the staff's copy
    assert "(this view is a copy)" in viewer_browser.get("/").content.decode()


def test_each_filter_of_the_services_page_has_its_own_copy(staff_browser, world, long_copies):
    unhealthy = staff_browser.get("/services/?health=unhealthy").content.decode()
    every = staff_browser.get("/services/").content.decode()
    assert 'data-service="api"' not in unhealthy and 'data-service="api"' in every
    assert "(this view is a copy)" not in every


def test_requests_arriving_during_a_build_wait_for_it(long_copies):
    built = []
    gate = threading.Event()

    def build():
        built.append(1)
        gate.wait(5)
        return copies.Copy(taken_at=timezone.now(), data={"n": len(built)})

    answers = []
    threads = [threading.Thread(target=lambda: answers.append(copies.take(("page",), build))) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    gate.set()
    for thread in threads:
        thread.join(10)
    assert len(built) == 1 and len(answers) == 4
    assert len({a.taken_at for a in answers}) == 1
    # One built it; the three that waited were handed its copy.
    assert sorted(a.copied for a in answers) == [False, True, True, True]


def test_a_copy_being_built_when_a_write_comes_is_not_kept(long_copies):
    def build():
        copies.forget()  # a write lands while the copy is being read
        return copies.Copy(taken_at=timezone.now())

    assert copies.take(("page",), build).copied is False
    assert copies.take(("page",), lambda: copies.Copy(taken_at=timezone.now())).copied is False


def test_zero_turns_copying_off(staff_browser, world, settings):
    settings.CONSOLE_COPY_MAX_AGE_SECONDS = 0
    staff_browser.get("/")
    html = staff_browser.get("/").content.decode()
    assert "(this view is a copy)" not in html and "every viewer shares" not in html


def test_a_message_makes_the_request_fresh(rf, staff_user):
    from django.contrib.messages.storage.fallback import FallbackStorage

    request = rf.get("/")
    request.user, request.session = staff_user, {}
    request._messages = FallbackStorage(request)
    assert copies.wants_fresh(request) is False
    messages.success(request, "done")
    assert copies.wants_fresh(request) is True


def test_the_loop_and_gate_forms_are_rendered_once_with_each_readers_own_csrf_token(staff_user, world, long_copies):
    from django.test import Client

    def signed_in() -> Client:
        client = Client(enforce_csrf_checks=True)
        client.force_login(staff_user)
        return client

    token_of = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
    first, second = signed_in(), signed_in()
    html_first = first.get("/").content.decode()
    html_second = second.get("/").content.decode()
    assert "(this view is a copy)" in html_second  # the second reader was served the copy
    assert "csrf-token-of-this-request" not in html_first + html_second
    tokens_first, tokens_second = set(token_of.findall(html_first)), set(token_of.findall(html_second))
    assert tokens_first and tokens_second and not tokens_first & tokens_second
    # Each reader's token is good for their own form.
    response = second.post("/console/loop/disable", {"csrfmiddlewaretoken": tokens_second.pop()})
    assert response.status_code == 302


def test_readers_with_other_permissions_get_other_form_panels(staff_browser, viewer_browser, world, long_copies):
    staff = staff_browser.get("/").content.decode()
    viewer = viewer_browser.get("/").content.decode()
    assert 'data-action="loop-disable"' in staff or 'action="/console/loop/enable"' in staff
    assert "/console/loop/" not in viewer  # no loop switch without the right to control it


def test_the_whole_page_is_rendered_once_per_reader_and_copy(staff_user, world, long_copies):
    """Around a copy's panels the page is rendered once for each reader (their name,
    permissions and inbox count in the navigation); later requests change only their
    own CSRF token in it, and that token is good for their forms."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    def signed_in(user) -> Client:
        client = Client(enforce_csrf_checks=True)
        client.force_login(user)
        return client

    token_of = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
    first, second, third = signed_in(staff_user), signed_in(staff_user), signed_in(staff_user)
    first.get("/")
    copied = second.get("/").content.decode()
    again = third.get("/").content.decode()
    assert "(this view is a copy)" in copied and "(this view is a copy)" in again
    tokens_copied, tokens_again = set(token_of.findall(copied)), set(token_of.findall(again))
    assert tokens_copied and tokens_again and not tokens_copied & tokens_again
    # Rendered once: the same page to the byte, footer time included, but for the token.
    assert token_of.sub("", copied) == token_of.sub("", again)
    assert "csrf-token-of-this-request" not in copied + again
    response = third.post("/console/loop/disable", {"csrfmiddlewaretoken": tokens_again.pop()})
    assert response.status_code == 302

    other = get_user_model().objects.create_user("ops-two", password="pw-ops-234", is_staff=True)
    theirs = signed_in(other).get("/").content.decode()
    assert '<span class="username">ops-two' in theirs and '<span class="username">ops <' not in theirs
    assert '<span class="username">ops <' in again


def test_a_page_rendered_once_for_many_is_masked(staff_browser, db, long_copies):
    """Such a page skips the masking pass over every HTML answer (RedactHtmlMiddleware):
    what it shows was masked when it was rendered."""
    make_service(
        "leaky",
        last_check_at=timezone.now(),
        last_error="https://deploy:hunter2@ci.test/?token=s3cr3t",
        description="posts to https://deploy:hunter2@ci.test/",
    )
    pages = [staff_browser.get("/services/").content.decode() for _ in range(2)]
    assert "(this view is a copy)" in pages[1]
    for html in pages:
        assert 'data-service="leaky"' in html and "ci.test/" in html  # shown, but masked
        assert "hunter2" not in html and "s3cr3t" not in html
