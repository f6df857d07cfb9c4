"""Request limits shared by the web app and the MCP server: sizes, a time limit, and a gate that lets
`concurrency` requests use the model at once, queues up to `queue` more and answers the rest "busy".

The time limit is cooperative: the model is called window batch by window batch, and the service
checks the request's deadline before each batch (`Deadline.check`), so a long scene stops within one
batch of its limit and frees its slot; Python cannot kill a thread mid-call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from changeagent.errors import ChangeAgentError
from changeagent.typed import opt

MIB = 2**20


@dataclass
class Limits:
    """What one request may cost (`changeagent serve/mcp --max-upload-mb ...`)."""

    max_upload_mb: float = opt(64.0, "largest uploaded file in MiB (web uploads; files under --root are "
                                     "limited by their pixels instead)", gt=0)
    max_megapixels: float = opt(100.0, "most pixels of one input image, in millions (checked from the "
                                       "file header before any pixel is decoded)", gt=0)
    timeout_s: float = opt(600.0, "time limit of one request's model work in seconds (cooperative: "
                                  "checked before every batch of windows)", gt=0)
    concurrency: int = opt(1, "requests that use the model at the same time (more share the CPU)", ge=1)
    queue: int = opt(16, "requests that may wait for a free slot; beyond that a request is answered "
                         "'busy' at once", ge=0)
    queue_timeout_s: float = opt(300.0, "longest wait for a free slot before a request is answered 'busy'",
                                 gt=0)
    keep: int = opt(200, "request output folders kept (the oldest are deleted)", ge=1)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MIB)

    @property
    def max_pixels(self) -> int:
        return int(self.max_megapixels * 1e6)


class Busy(ChangeAgentError):
    """The server is at its concurrency and queue limits; try again later."""


class Deadline:
    """A request's time limit; `check()` raises once it has passed."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def check(self) -> None:
        if time.monotonic() > self.end:
            raise ChangeAgentError(f"the request took longer than its time limit of {self.seconds:g} s and was "
                                   "stopped (raise --timeout, or give a smaller input)")


class Gate:
    """At most `concurrency` holders at once, at most `queue` waiters; others get `Busy`."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._slots = threading.BoundedSemaphore(limits.concurrency)
        self._lock = threading.Lock()
        self.waiting = 0
        self.running = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        with self._lock:
            if self._slots.acquire(blocking=False):
                self.running += 1
                acquired = True
            elif self.waiting >= self.limits.queue:
                raise Busy(f"busy: {self.running} request(s) running and {self.waiting} waiting "
                           f"(queue limit {self.limits.queue}); try again shortly")
            else:
                self.waiting += 1
                acquired = False
        if not acquired:
            try:
                ok = self._slots.acquire(timeout=self.limits.queue_timeout_s)
            finally:
                with self._lock:
                    self.waiting -= 1
            if not ok:
                raise Busy(f"busy: no free slot within {self.limits.queue_timeout_s:g} s; try again later")
            with self._lock:
                self.running += 1
        try:
            yield
        finally:
            with self._lock:
                self.running -= 1
            self._slots.release()
