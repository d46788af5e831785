"""`make run` ends in `manage.py serve`: web + cluster + loop, and Ctrl-C stops them all."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest
import requests

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
