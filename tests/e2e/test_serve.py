"""`make run` ends in `manage.py serve`: web + cluster + loop, and Ctrl-C stops them all."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest
import requests
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from orchestration.core.models import OrchestratorProcess
from orchestration.loop.models import LoopState
from tests.support.processes import ROOT, free_port, manage, subprocess_env, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_ctrl_c_stops_web_cluster_and_loop_within_seconds(tmp_path):
    port = free_port()
    log = open(tmp_path / "serve.log", "w+")
    proc = subprocess.Popen(
        manage("serve", "--port", str(port)), cwd=ROOT, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_for(lambda: _ok(f"http://127.0.0.1:{port}/health"), timeout=30, message="the web server")
        log.flush()
        text = (tmp_path / "serve.log").read_text()
        pids = {name: int(pid) for name, pid in re.findall(r"started (\w+) \(pid (\d+)\)", text)}
        assert set(pids) == {"web", "cluster", "loop"}
        time.sleep(1.5)  # let the cluster finish starting its own children
        proc.send_signal(signal.SIGINT)  # what Ctrl-C delivers
        started = time.monotonic()
        proc.wait(timeout=20)
        assert time.monotonic() - started < 15
        wait_for(lambda: not any(alive(pid) for pid in pids.values()), timeout=5, message="children to exit")
        # Each child led its own process group; nothing of the cluster's workers is left.
        wait_for(lambda: not any(group_alive(pid) for pid in pids.values()), timeout=5, message="grandchildren")
        assert "stopped" in (tmp_path / "serve.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()


def group_alive(pgid: int) -> bool:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (FileNotFoundError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def test_a_killed_child_is_restarted_counted_and_the_others_never_stop(tmp_path):
    """kill -9 of the cluster and of the loop runner, then of the web server: each comes
    back under a new pid, its restart is in /api/v1/processes/ and /metrics, and the
    children not killed keep their pids and keep answering."""
    staff = get_user_model().objects.create_user("supervised", password="pw-supervised-1", is_staff=True)
    token = Token.objects.create(user=staff).key
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {token}"
    log_path = tmp_path / "serve.log"
    log = open(log_path, "w+")
    proc = subprocess.Popen(
        manage("serve", "--port", str(port)),
        cwd=ROOT,
        env=subprocess_env(PROCESS_HEARTBEAT_SECONDS="0.5"),
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def pids() -> dict[str, int]:
        log.flush()
        # "started web (pid 1)" and, later, "restarted web (pid 2)": the last one wins.
        return {name: int(pid) for name, pid in re.findall(r"started (\w+) \(pid (\d+)\)", log_path.read_text())}

    def registry() -> dict[str, dict]:
        try:
            response = api.get(f"{base}/api/v1/processes/", timeout=2)
        except requests.RequestException:
            return {}
        if response.status_code != 200:
            return {}
        return {row["role"]: row for row in response.json()["results"] if row["alive"]}

    def registered(expected: dict[str, int], restarts: dict[str, int]) -> bool:
        rows = registry()
        return all(
            role in rows and rows[role]["pid"] == pid and rows[role]["restarts"] == restarts.get(role, 0)
            for role, pid in expected.items()
        )

    try:
        wait_for(lambda: _ok(f"{base}/health"), timeout=30, message="the web server")
        first = pids()
        assert set(first) == {"web", "cluster", "loop"}
        wait_for(lambda: registered(first, {}), timeout=20, message="all three in the registry")

        # 1. Cluster and loop runner killed together; the web server answers throughout.
        cluster_group = first["cluster"]
        wait_for(lambda: len(_group(cluster_group)) > 1, timeout=10, message="the cluster's sentinel and workers")
        os.kill(first["cluster"], signal.SIGKILL)
        os.kill(first["loop"], signal.SIGKILL)
        answered = []

        def back() -> bool:
            answered.append(_ok(f"{base}/health"))
            now = pids()
            return now["cluster"] != first["cluster"] and now["loop"] != first["loop"]

        wait_for(back, timeout=15, interval=0.2, message="cluster and loop restarted")
        second = pids()
        wait_for(lambda: registered(second, {"cluster": 1, "loop": 1}), timeout=20, message="the restarts registered")
        assert all(answered), "the web server stopped answering while the others restarted"
        assert second["web"] == first["web"] and alive(first["web"])
        assert not _group(cluster_group), "the killed cluster's sentinel or workers outlived it"
        rows = registry()
        assert rows["cluster"]["last_exit_code"] == -9 and rows["loop"]["last_exit_code"] == -9
        assert rows["web"]["restarts"] == 0
        roles = [row["role"] for row in api.get(f"{base}/api/v1/processes/", timeout=5).json()["results"]]
        assert sorted(roles) == ["cluster", "loop", "web"]  # the dead ones' rows went with them
        metrics = api.get(f"{base}/metrics", timeout=5).text
        assert 'orchestrator_process_restarts_total{role="cluster"} 1.0' in metrics
        assert 'orchestrator_process_restarts_total{role="loop"} 1.0' in metrics
        assert 'orchestrator_process_restarts_total{role="web"} 0.0' in metrics
        # The new loop runner ticks. (Its cycles may wait for the cycle lease the killed
        # one held to expire: taking it over sooner is not the supervisor's business.)
        wait_for(
            lambda: f":{second['loop']}:" in LoopState.get().runner_owner, timeout=10, message="the new runner ticking"
        )

        # 2. The web server killed: back on the same port; cluster and loop untouched.
        os.kill(second["web"], signal.SIGKILL)
        wait_for(lambda: pids()["web"] != second["web"], timeout=10, message="web restarted")
        third = pids()
        wait_for(lambda: registered(third, {"web": 1, "cluster": 1, "loop": 1}), timeout=20, message="web back")
        assert (third["cluster"], third["loop"]) == (second["cluster"], second["loop"])
        assert alive(second["cluster"]) and alive(second["loop"])
        assert 'orchestrator_process_restarts_total{role="web"} 1.0' in api.get(f"{base}/metrics", timeout=5).text
        text = log_path.read_text()
        assert re.search(rf"cluster \(pid {first['cluster']}\) was killed by SIGKILL \(exit code -9\)", text)
        assert "restarting it in 1s" in text

        # 3. serve's own SIGTERM stops everything, and leaves no row behind.
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        wait_for(lambda: not any(alive(pid) for pid in third.values()), timeout=5, message="children to exit")
        assert proc.returncode == 0
        assert not OrchestratorProcess.objects.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            for pid in pids().values():
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        log.close()


def _group(pgid: int) -> list[int]:
    """Live members of a process group (zombies excluded)."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (FileNotFoundError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry))
    return members
