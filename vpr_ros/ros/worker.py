"""A bounded queue drained by one worker thread: callbacks never block and never pile up.

When the queue is full the oldest item is dropped (the newest frames matter most) and the
drop is counted. An exception in the handler is logged and counted; the worker keeps going.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable


class BoundedWorker:
    def __init__(self, handler: Callable, maxlen: int, logger, name: str = "worker"):
        if maxlen < 1:
            raise ValueError("queue size must be >= 1")
        self._handler = handler
        self._queue: deque = deque(maxlen=maxlen)
        self._cond = threading.Condition()
        self._logger = logger
        self._stop = False
        self.dropped = 0
        self.errors = 0
        self.processed = 0
        self._busy = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item) -> None:
        with self._cond:
            if len(self._queue) == self._queue.maxlen:
                self.dropped += 1
            self._queue.append(item)
            self._cond.notify()

    def clear(self) -> int:
        """Drop everything queued (items of a map that was just replaced); returns how many."""
        with self._cond:
            n = len(self._queue)
            self._queue.clear()
            return n

    @property
    def pending(self) -> int:
        return len(self._queue)

    @property
    def idle(self) -> bool:
        with self._cond:
            return not self._queue and not self._busy

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                item = self._queue.popleft()
                self._busy = True
            try:
                self._handler(item)
                self.processed += 1
            except Exception as exc:  # one bad item must never kill the node
                self.errors += 1
                self._logger.error(f"{self._thread.name}: {type(exc).__name__}: {exc}")
            finally:
                with self._cond:
                    self._busy = False

    def stop(self, timeout: float = 2.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout)
