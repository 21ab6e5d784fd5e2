"""A daemon thread that runs one job until it is asked to stop: the driver's replica monitor and
lost-call watch. One stop event; ``stop`` joins, with a bound.

>>> import threading
>>> class Count(Background):
...     thread_name = "count"
...     def __init__(self): super().__init__(); self.n = 0; self.ran = threading.Event()
...     def run_thread(self):
...         while not self.stopping(0.01): self.n += 1; self.ran.set()
>>> c = Count().start(); c.ran.wait(30)
True
>>> c.stop(), c.n > 0, Count().stop()
(True, True, True)
"""

from __future__ import annotations

import threading


class Background:
    """Subclasses give ``thread_name`` and :meth:`run_thread`, which returns once :meth:`stopping` is true."""

    thread_name = "ser-serve background"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self):
        self._thread = threading.Thread(target=self.run_thread, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stopping(self, wait_s: float = 0.0) -> bool:
        """True once :meth:`stop` was called; waits up to ``wait_s`` for it (a round's pause)."""
        return self._stop.wait(wait_s) if wait_s > 0 else self._stop.is_set()

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Ask the thread to end and wait up to ``timeout_s``; True when it ended (or never started)."""
        self._stop.set()
        if self._thread is None:
            return True
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def run_thread(self) -> None:
        raise NotImplementedError
