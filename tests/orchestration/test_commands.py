"""Management commands and configuration checks."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from rest_framework.authtoken.models import Token

from orchestration.core.models import Job, LedgerEntry
from orchestrator_site import env

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("broker_only")]


def call(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_run_orchestrator_once_prints_a_summary():
    Job.objects.bulk_create(Job(kind="noop") for _ in range(55))
    out = call("run_orchestrator_once")
    assert "Health: 80/100 (healthy) = 100 - 20" in out
    assert "-20: Queue saturated: more than 50 jobs pending (jobs.pending=55)" in out
    assert "Queue's own score: 80/100" in out
    assert "rebalance_queue" in out and "→ ok" in out
    assert "Execution: 1 succeeded, 0 failed" in out


def test_run_orchestrator_once_json_and_dry_run():
    Job.objects.bulk_create(Job(kind="noop") for _ in range(55))
    result = json.loads(call("run_orchestrator_once", "--json", "--dry-run"))
    assert result["dry_run"] is True
    assert result["decision"]["actions"][0]["type"] == "rebalance_queue"
    assert result["execution"]["results"] == []
    assert LedgerEntry.objects.filter(actor="cli").exists()


def test_create_api_token_prints_the_token_alone_on_its_last_line():
    out = call("create_api_token", "robot", "--staff")
    token = out.strip().splitlines()[-1]
    assert Token.objects.get(key=token).user.is_staff
    assert call("create_api_token", "robot").strip().splitlines()[-1] == token  # idempotent


class TestEnvHelpers:
    def test_bool(self, monkeypatch):
        monkeypatch.setenv("X_FLAG", "yes")
        assert env.env_bool("X_FLAG", False) is True
        monkeypatch.setenv("X_FLAG", "maybe")
        with pytest.raises(ImproperlyConfigured, match="X_FLAG must be true or false"):
            env.env_bool("X_FLAG", False)

    def test_int_and_float_bounds(self, monkeypatch):
        monkeypatch.setenv("X_NUM", "abc")
        with pytest.raises(ImproperlyConfigured, match="integer"):
            env.env_int("X_NUM", 1)
        monkeypatch.setenv("X_NUM", "0")
        with pytest.raises(ImproperlyConfigured, match=">= 1"):
            env.env_int("X_NUM", 1, minimum=1)
        monkeypatch.setenv("X_NUM", "0.05")
        with pytest.raises(ImproperlyConfigured, match=r">= 0\.1"):
            env.env_float("X_NUM", 2.0, minimum=0.1)

    def test_list(self, monkeypatch):
        monkeypatch.setenv("X_LIST", " a, b ,,c")
        assert env.env_list("X_LIST", []) == ["a", "b", "c"]


@pytest.mark.parametrize(
    "variable,value,message",
    [
        ("ORCHESTRATOR_INTERVAL_SECONDS", "soon", "ORCHESTRATOR_INTERVAL_SECONDS must be a number"),
        ("DEBUG", "perhaps", "DEBUG must be true or false"),
        ("Q_BROKER", "redis://127.0.0.1:6379/0", "Q_BROKER is no longer read"),
        ("CACHE_URL", "memcached://x", "CACHE_URL must be a redis:// URL"),
        ("DATABASE_URL", "nonsense://", "DATABASE_URL"),
    ],
)
def test_bad_settings_stop_the_start_with_a_clear_message(variable, value, message):
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        env={**os.environ, variable: value},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert message in result.stderr


def test_system_checks_pass_without_secret_key_in_the_environment():
    # No development key any more: the install's own key is generated into var/.
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        env={**env, "DEBUG": "false"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "no issues" in result.stdout, result.stderr
    assert "SECRET_KEY" not in result.stderr + result.stdout
