from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

# The tests' own runnable targets and stage runners: importing declares them (@runnable).
import tests.pipeline.stage_runners
import tests.workers.targets  # noqa: F401


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """The test database as migrated, with the seeded channel windows switched off.

    Those windows (UTC 16:00–24:00) make the loop schedule work in the last hour of each,
    so with them on, every test that runs a cycle would pass or fail by the hour it runs
    at. A test about windows switches them on and sets the time of day itself.
    """
    from django.db import connection

    from orchestration.loop.models import ChannelWindow

    with django_db_blocker.unblock():
        ChannelWindow.objects.update(enabled=False)
        # Transactional tests restore the copy taken when the database was created
        # (serialized rollback, below); take it again so it has the windows off too.
        connection._test_serialized_contents = connection.creation.serialize_db_to_string()
    yield
    if connection.vendor == "postgresql":
        # Threads of this process that keep a connection of their own (the job-lease
        # heartbeat, the snapshot rebuild) would make dropping the test database fail.
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


def _client_for(user) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token.key}")
    return client


@pytest.fixture
def staff_user(db):
    return get_user_model().objects.create_user("ops", password="pw-ops-123", is_staff=True)


@pytest.fixture
def plain_user(db):
    return get_user_model().objects.create_user("viewer", password="pw-viewer-123")


@pytest.fixture
def staff_session(staff_user) -> Client:
    """Signed in through a session, as a browser is."""
    client = Client()
    client.force_login(staff_user)
    return client


@pytest.fixture
def viewer_session(plain_user) -> Client:
    client = Client()
    client.force_login(plain_user)
    return client


@pytest.fixture
def anon_client() -> APIClient:
    return APIClient()


@pytest.fixture
def staff_client(staff_user) -> APIClient:
    return _client_for(staff_user)


@pytest.fixture
def user_client(plain_user) -> APIClient:
    """Signed in, not staff: may read, may not write."""
    return _client_for(plain_user)


@pytest.fixture(autouse=True)
def _runs_dir(tmp_path, settings):
    settings.RUNS_DIR = tmp_path / "runs"


@pytest.fixture(autouse=True)
def _empty_cache():
    """Each test starts with an empty cache: on the scale profile the cache is a Redis
    server that outlives every test (throttle counts, the shared snapshot)."""
    from django.core.cache import cache

    cache.clear()


#: Nothing a test generates may leave the machine: every outbound call of the code under
#: test (orchestration/core/outbound.py) may reach loopback only. Subprocesses get the same
#: through tests/support/processes.subprocess_env.
LOOPBACK_ONLY = ["127.0.0.0/8", "::1/128"]


@pytest.fixture(autouse=True)
def _outbound_loopback_only(settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = LOOPBACK_ONLY


# The settings are production's; what the suite needs differently it asks for here.
@pytest.fixture(autouse=True)
def _jobs_run_inline(monkeypatch):
    """Jobs run in the process that queues them, so a test sees what a job did without a
    cluster. django-q2 copies Q_CLUSTER into ``Conf`` once at import, so a settings
    override would not reach it. ``broker_only`` turns this off again."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings):
    """The production hasher takes a good part of a second per user on purpose."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _forget_snapshot():
    """The read API's snapshot, the /health/status body and the console's panels are
    kept per process (orchestration/loop/snapshot_cache.py, health/status_copy.py,
    orchestration/console/copies.py): each test starts
    without the copies a test before it built."""
    from health import status_copy
    from orchestration.console import copies
    from orchestration.loop import snapshot_cache

    for forget in (snapshot_cache.forget, status_copy.forget, copies.forget):
        forget()
    yield
    for forget in (snapshot_cache.forget, status_copy.forget, copies.forget):
        forget()


@pytest.fixture
def write_rate(monkeypatch):
    """Sets the write throttle's rate for this test, e.g. ``write_rate("3/min")``. DRF
    binds the rates to the throttle class at import, so a settings override would not
    reach it."""
    from orchestrator_site.api.throttles import WriteRateThrottle

    def set_rate(rate: str) -> None:
        monkeypatch.setattr(WriteRateThrottle, "THROTTLE_RATES", {WriteRateThrottle.scope: rate})

    return set_rate


@pytest.fixture
def broker_only(monkeypatch):
    """Tasks go to the real (ORM) broker instead of running inline, as they do when a
    cluster is running elsewhere; for tests that drive execution themselves."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", False)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Transactional tests flush the database when they end, which would also remove
    what the data migrations seeded (default rules, channel windows, the default
    pipeline, routing multipliers): a later end-to-end test would then run a loop with
    no rules. Serialized rollback puts the migrated state back before each of them."""
    for item in items:
        marker = item.get_closest_marker("django_db")
        kwargs = dict(marker.kwargs) if marker else {}
        # Every transactional test must restore, or the next one that does would find the
        # content types that a plain flush's post_migrate re-created under new ids.
        transactional = kwargs.get("transaction") or "transactional_db" in getattr(item, "fixturenames", ())
        if transactional and "serialized_rollback" not in kwargs:
            kwargs.update(transaction=True, serialized_rollback=True)
            restored = pytest.mark.django_db(*(marker.args if marker else ()), **kwargs)
            item.add_marker(restored, append=False)
