"""A background thread per process that runs one step each time it is woken: the
refreshers of the copies answered stale while the next is read (the snapshot, the
/health/status body, the console's panels)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable


class Refresher:
    def __init__(self, name: str, step: Callable[[], None]) -> None:
        self.name, self._step = name, step
        self._wanted = threading.Event()
        self._lock = threading.Lock()
        self._pid: int | None = None

    def wake(self) -> None:
        """Run the step soon, in this process's thread (started on first use: threads do
        not survive the fork of a server's worker processes)."""
        with self._lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._forever, daemon=True, name=self.name).start()
        self._wanted.set()

    def _forever(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            self._step()
