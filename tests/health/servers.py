"""A real HTTP server on 127.0.0.1 whose paths behave as a test tells them to."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Behaviour:
    OK = "ok"  # 200 {"status": "ok"}
    ERROR = "error"  # 500
    SLOW = "slow"  # sleeps `delay` seconds, then 200
    INVALID = "invalid"  # 200 application/json with a broken body
    DOWN = "down"  # 200 {"status": "down"}
    PLAIN = "plain"  # 200 text/plain


class TestServer:
    def __init__(self) -> None:
        self.behaviour: dict[str, str] = {}
        self.sequence: dict[str, list[str]] = {}
        self.delay = 2.0
        self.hits: Counter[str] = Counter()
        # (path, time.time()) of every request, in arrival order: tests that must show
        # no request arrived during some window (an open circuit) read this.
        self.hit_times: list[tuple[str, float]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                with server._lock:
                    server.hits[path] += 1
                    server.hit_times.append((path, time.time()))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    queue = server.sequence.get(path)
                    mode = queue.pop(0) if queue else server.behaviour.get(path, Behaviour.OK)
                self._counted = True
                try:
                    self._answer(mode)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    self._uncount()

            def _uncount(self) -> None:
                # Before the answer is written: once a client has read it, its next
                # request may arrive while this thread has not yet run its finally,
                # and would be counted beside a request that is over.
                if self._counted:
                    self._counted = False
                    with server._lock:
                        server.in_flight -= 1

            def _answer(self, mode: str) -> None:
                if mode == Behaviour.SLOW:
                    server._release.wait(server.delay)
                    mode = Behaviour.OK
                if mode == Behaviour.ERROR:
                    self._send(500, "application/json", b'{"error": "boom"}')
                elif mode == Behaviour.INVALID:
                    self._send(200, "application/json", b"{not json")
                elif mode == Behaviour.DOWN:
                    self._send(200, "application/json", json.dumps({"status": "down"}).encode())
                elif mode == Behaviour.PLAIN:
                    self._send(200, "text/plain", b"fine")
                else:
                    self._send(200, "application/json", b'{"status": "ok"}')

            def _send(self, code: int, content_type: str, body: bytes) -> None:
                self._uncount()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str) -> str:
        return self.base_url + path

    def start(self) -> TestServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()  # let slow handlers finish at once
        self.httpd.shutdown()
        self.httpd.server_close()


@contextmanager
def serving() -> Iterator[TestServer]:
    server = TestServer().start()
    try:
        yield server
    finally:
        server.stop()


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
