"""Small real HTTP services on 127.0.0.1 for routing tests: fast, slow, failing, flapping,
busy (429 with ``Retry-After``), throttling (429 without it).

Each answers ``POST /process`` (and ``GET /health``) according to its behaviour and
counts the requests it received.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeService:
    def __init__(self, behaviour: str = "fast", delay: float = 0.0, retry_after: str = "30"):
        self.behaviour = behaviour
        self.retry_after = retry_after
        self.delay = delay
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                self._answer(200, {"status": "ok"})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with service._lock:
                    service.requests.append(body)
                    n = len(service.requests)
                if service.delay:
                    time.sleep(service.delay)
                if service.behaviour == "failing" or (service.behaviour == "flapping" and n % 2 == 1):
                    self._answer(500, {"error": "internal error"})
                elif service.behaviour == "reject":
                    self._answer(422, {"error": "bad task"})
                elif service.behaviour == "busy":
                    self._answer(429, {"error": "slow down"}, {"Retry-After": service.retry_after})
                elif service.behaviour == "throttling":
                    self._answer(429, {"error": "slow down"})
                else:
                    self._answer(200, {"processed": True, "echo": body})

            def _answer(self, code: int, payload: dict, headers: dict[str, str] | None = None):
                data = json.dumps(payload).encode()
                self.send_response(code)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def count(self) -> int:
        return len(self.requests)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
