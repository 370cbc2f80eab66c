"""Runs requests on the one loaded model: a bounded admission count (429 beyond it), a pool of worker threads,
per-request cancellation (timeouts, disconnected clients) and the hand-off of streamed text and media to the
event loop.

Each request gets its own :class:`Job`. ``NextGPT.generate`` keeps all per-request state in the call (its
controller, streamer, generators; the decoders run on per-call pipeline copies), so several workers can generate
at once on the same model.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from .config import ServeConfig
from .errors import ServingError

__all__ = ["Engine", "Job"]


@dataclass
class Job:
    """One admitted request. ``cancelled`` is set on timeout or disconnect: generation stops at its next step,
    decoders not yet started are skipped, and whatever finishes afterwards is discarded (never stored)."""

    engine: "Engine"
    cancelled: threading.Event = field(default_factory=threading.Event)
    started: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    future: Future | None = None
    _released: bool = False

    def cancel(self) -> None:
        """Stop the request (idempotent)."""
        self.cancelled.set()

    def should_stop(self) -> bool:
        """For ``NextGPT.generate(should_stop=...)``."""
        return self.cancelled.is_set()

    def release(self) -> None:
        """Give the admission slot back (once)."""
        self.engine._release(self)


class Engine:
    """Admission control and the worker pool."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="nextgpt-worker")
        self._lock = threading.Lock()
        self._admitted = 0
        self._running = 0
        #: requests whose work ended normally / ended (or was skipped) after a timeout or disconnect: discarded
        self.completed = 0
        self.discarded = 0

    # -- admission
    def admit(self) -> Job:
        """A slot for one request, or 429 when ``capacity`` requests are already admitted."""
        with self._lock:
            if self._admitted >= self.config.capacity:
                raise ServingError(429, "queue_full",
                                   f"the server is busy: {self._admitted} requests admitted (capacity {self.config.capacity}); retry later")
            self._admitted += 1
        return Job(self)

    def _release(self, job: Job) -> None:
        with self._lock:
            if not job._released:
                job._released = True
                self._admitted -= 1

    def stats(self) -> dict[str, int]:
        """``running`` (on a worker), ``waiting`` (admitted, not yet on a worker), ``capacity``."""
        with self._lock:
            return {"running": self._running, "waiting": self._admitted - self._running, "capacity": self.config.capacity}

    # -- running
    def submit(self, job: Job, work: Callable[[Job], Any]) -> Future:
        """Run ``work(job)`` on a worker; the slot is released when it returns (also after a timeout: a request
        that cannot be interrupted keeps its slot until it really ends)."""

        def run() -> Any:
            with self._lock:
                self._running += 1
            job.started.set()
            try:
                result = None if job.cancelled.is_set() else work(job)
                with self._lock:
                    if job.cancelled.is_set():
                        self.discarded += 1
                        return None
                    self.completed += 1
                return result
            finally:
                with self._lock:
                    self._running -= 1
                job.release()
                job.finished.set()

        job.future = self.executor.submit(run)
        return job.future

    def shutdown(self) -> None:
        """Cancel waiting work and stop the workers (running work finishes)."""
        self.executor.shutdown(wait=False, cancel_futures=True)


async def wait_result(job: Job, timeout: float) -> Any:
    """Await ``job``'s result for at most ``timeout`` seconds; on timeout cancel it and raise 504."""
    assert job.future is not None
    wrapped = asyncio.wrap_future(job.future)
    done, _ = await asyncio.wait({wrapped}, timeout=max(timeout, 0.0))
    if not done:
        job.cancel()
        raise ServingError(504, "timeout", f"the request took longer than {job.engine.config.timeout_s:g} s and was cancelled")
    return wrapped.result()
