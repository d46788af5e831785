"""An idempotent POST whose answer is lost with a dropped connection (the server did the
write, the client saw a reset), retried with the same Idempotency-Key: one job, and the
retry gets the first answer again. Runs on both profiles."""

from __future__ import annotations

import socket
import struct
import threading

import pytest
import requests
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from orchestration.core.models import Job
from tests.support.processes import free_port, manage, running, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


class DroppingProxy:
    """A TCP proxy in front of the web server. While ``drop`` is set it forwards a
    request, waits for the server's whole answer, then resets the client's connection
    instead of passing the answer on: the write happened, its answer is lost."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.drop = threading.Event()
        self.dropped = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        server = socket.create_connection(("127.0.0.1", self.upstream))
        try:
            request = _read_message(client)
            server.sendall(request)
            answer = _read_message(server)
            if self.drop.is_set():
                self.dropped += 1
                # SO_LINGER 0: close with a reset, as a broken network path looks.
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                client.sendall(answer)
        finally:
            client.close()
            server.close()

    def close(self) -> None:
        self.listener.close()


def _read_message(sock: socket.socket) -> bytes:
    """One HTTP/1.x message with a Content-Length body (what requests and Django send)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def test_an_idempotent_post_retried_after_a_dropped_connection_makes_one_job(tmp_path):
    staff = get_user_model().objects.create_user("dropped", password="pw-dropped-1", is_staff=True)
    token = Token.objects.create(user=staff).key
    port = free_port()
    with running(("web", manage("runserver", f"127.0.0.1:{port}", "--noreload")), log_dir=tmp_path) as (web,):
        wait_for(lambda: _ok(f"http://127.0.0.1:{port}/health"), timeout=30, message="web", alive=(web,))
        proxy = DroppingProxy(port)
        try:
            url = f"http://127.0.0.1:{proxy.port}/api/v1/jobs/"
            headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "dropped-1", "Connection": "close"}
            body = {"kind": "noop", "payload": {"dropped": True}}
            proxy.drop.set()
            with pytest.raises(requests.ConnectionError):
                requests.post(url, json=body, headers=headers, timeout=10)
            # The fault happened: the answer was dropped after the server wrote the job.
            assert proxy.dropped == 1
            first = Job.objects.get(payload__dropped=True)
            proxy.drop.clear()
            retry = requests.post(url, json=body, headers=headers, timeout=10)
            assert retry.status_code == 201, retry.text
            assert retry.headers.get("Idempotent-Replayed") == "true"
            assert retry.json()["id"] == first.pk
            assert Job.objects.filter(payload__dropped=True).count() == 1
        finally:
            proxy.close()


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False
