"""A bounded background worker: submit never blocks (a full queue drops), flush waits."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Worker"]

T = TypeVar("T")
log = logging.getLogger("tally_client.routing")


class Worker(Generic[T]):
    """Runs `handle(batch)` on a daemon thread for the items submitted, in order.

    Args:
        handle: called with a list of items; its exceptions are logged, never raised.
        maxsize: items waiting at most; `submit` drops beyond that (counted in `dropped`).
        name: the thread's name.
    """

    def __init__(self, handle: Callable[[list[T]], None], maxsize: int, name: str) -> None:
        self._handle = handle
        self._maxsize = maxsize
        self._name = name
        self._items: deque[T] = deque()
        self._busy = 0  # items taken but not yet handled
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.dropped = 0

    def submit(self, item: T) -> bool:
        """Queue `item`; False (and it is dropped) when the queue is full or closed."""
        with self._cond:
            if self._closed or len(self._items) >= self._maxsize:
                self.dropped += 1
                return False
            self._items.append(item)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._closed:
                    self._cond.wait()
                if not self._items:
                    return
                batch = list(self._items)
                self._items.clear()
                self._busy = len(batch)
            try:
                self._handle(batch)
            except Exception:  # a background failure must never reach the caller
                log.warning("%s: background work failed", self._name, exc_info=True)
            with self._cond:
                self._busy = 0
                self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for everything submitted to be handled."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._items or self._busy:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None or not self._thread.is_alive():
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float) -> bool:
        """Flush (up to `timeout` seconds), then stop the thread; later submits drop."""
        done = self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        return done
