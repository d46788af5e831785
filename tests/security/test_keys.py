"""A key per install: generated once into var/ (0600), read by every process; var/ and runs/
are 0700; the admin password stays in its file."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django_q import core_signing
from django_q.signing import BadSignature, PickleSerializer, SignedPackage

from orchestrator_site.private import private_dir, secret_key
from tests.support.processes import ROOT

# The constant every install shared before: whoever knew it could sign broker packages.
OLD_CONSTANT_KEY = "dev-insecure-orchestrator-key-change-me-0123456789abcdef"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class WritesAFile:
    """Unpickling this creates a file: what a forged broker package would run."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_the_key_is_generated_once_into_a_private_file(tmp_path):
    var = tmp_path / "var"
    key = secret_key(var)
    assert len(key) >= 50 and key != OLD_CONSTANT_KEY
    assert mode(var) == 0o700 and mode(var / "secret_key") == 0o600
    assert secret_key(var) == key  # every later start reads it
    assert secret_key(tmp_path / "other") != key  # another install, another key


def test_processes_racing_for_the_first_start_agree_on_one_key(tmp_path):
    var = tmp_path / "var"
    code = "import sys; from orchestrator_site.private import secret_key; print(secret_key(sys.argv[1]))"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(var)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    keys = {proc.communicate(timeout=60)[0].strip() for proc in procs}
    assert len(keys) == 1 and keys == {(var / "secret_key").read_text().strip()}
    assert sorted(p.name for p in var.iterdir()) == ["secret_key"]  # no temporary file left behind


def test_a_process_without_secret_key_in_its_environment_reads_the_installs_key(tmp_path):
    var = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    env.update(ORCHESTRATOR_VAR_DIR=str(var), DJANGO_SETTINGS_MODULE="orchestrator_site.settings")
    code = "from django.conf import settings; print(settings.SECRET_KEY)"
    first, second = (
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        for _ in range(2)
    )
    assert first.stdout == second.stdout and first.stdout.strip() == (var / "secret_key").read_text().strip()
    assert "SECRET_KEY" not in first.stderr  # no warning: there is no development key any more
    if not os.environ.get("SECRET_KEY"):
        # This test process and every process it starts read the same file.
        assert settings.SECRET_KEY == (Path(settings.VAR_DIR) / "secret_key").read_text().strip()


def forge(obj, key: str) -> str:
    return core_signing.dumps(obj, key=key, salt=settings.Q_CLUSTER["name"], serializer=PickleSerializer)


def test_a_broker_package_forged_with_the_old_constant_key_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    # The forgery is well made: the old key and the cluster's name are all a loader checks.
    harmless = forge({"func": "noop"}, OLD_CONSTANT_KEY)
    loaded = core_signing.loads(
        harmless, key=OLD_CONSTANT_KEY, salt=settings.Q_CLUSTER["name"], serializer=PickleSerializer
    )
    assert loaded == {"func": "noop"}
    # Under this install's key it is refused before anything is unpickled.
    assert settings.SECRET_KEY != OLD_CONSTANT_KEY
    for package in (harmless, forge(WritesAFile(str(marker)), OLD_CONSTANT_KEY)):
        with pytest.raises(BadSignature):
            SignedPackage.loads(package)
    assert not marker.exists()
    assert SignedPackage.loads(SignedPackage.dumps({"func": "x"})) == {"func": "x"}


def test_private_directories_are_created_0700_and_tightened(tmp_path):
    assert mode(private_dir(tmp_path / "a" / "b")) == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    assert mode(private_dir(loose)) == 0o700


@pytest.mark.django_db
def test_runs_dir_is_created_0700(settings, tmp_path):
    from pipeline.disk import run_dir

    settings.RUNS_DIR = tmp_path / "fresh-runs"
    run_dir(1)
    assert mode(settings.RUNS_DIR) == 0o700


@pytest.mark.django_db
def test_bootstrap_writes_the_admin_password_to_a_private_file_and_prints_only_its_path(settings, tmp_path, capsys):
    settings.VAR_DIR = tmp_path / "var"
    call_command("bootstrap", "--no-demo")
    out = capsys.readouterr().out
    password_file = settings.VAR_DIR / "admin-password.txt"
    password = password_file.read_text().strip()
    assert mode(password_file) == 0o600 and mode(settings.VAR_DIR) == 0o700
    assert str(password_file) in out and password not in out
    call_command("bootstrap", "--no-demo")  # every later start: still only the path
    assert password not in capsys.readouterr().out
