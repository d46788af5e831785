"""A small SMTP server on 127.0.0.1 that keeps what it receives (e-mail channels are
tested against it, through Apprise's own SMTP client)."""

from __future__ import annotations

import email
import email.policy
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage


@dataclass
class Mailbox:
    port: int = 0
    messages: list[tuple[list[str], EmailMessage]] = field(default_factory=list)

    def texts(self) -> list[tuple[list[str], str]]:
        """(recipients, subject and plain-text body) of every message, decoded."""
        found = []
        for rcpt, message in self.messages:
            part = message.get_body(preferencelist=("plain", "html"))
            found.append((rcpt, f"{message['subject']}\n{part.get_content() if part else ''}"))
        return found


@contextmanager
def smtp_server() -> Iterator[Mailbox]:
    box = Mailbox()

    class Handler(socketserver.StreamRequestHandler):
        def say(self, line: str) -> None:
            self.wfile.write(line.encode() + b"\r\n")

        def handle(self) -> None:
            self.say("220 localhost ESMTP")
            rcpt: list[str] = []
            while line := self.rfile.readline().decode(errors="replace").rstrip("\r\n"):
                verb = line[:4].upper()
                if verb == "RCPT":
                    rcpt.append(line.split(":", 1)[1].strip().strip("<>"))
                if verb == "DATA":
                    self.say("354 end with .")
                    raw = []
                    while (chunk := self.rfile.readline()) not in (b".\r\n", b".\n", b""):
                        raw.append(chunk[1:] if chunk.startswith(b"..") else chunk)
                    box.messages.append((rcpt, email.message_from_bytes(b"".join(raw), policy=email.policy.default)))
                    rcpt = []
                    self.say("250 queued")
                elif verb == "QUIT":
                    self.say("221 bye")
                    return
                else:
                    self.say("250 ok")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    box.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield box
    finally:
        server.shutdown()
        server.server_close()
