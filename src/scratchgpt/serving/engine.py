"""One generation worker with a bounded queue: how the server shares one model among clients.

The model runs on a single background thread, one request at a time, so concurrent clients never
share a KV cache or a random generator and each gets exactly the answer it would get alone.
Requests wait in a bounded queue (a full queue is refused at once, so the HTTP layer can answer
503 with Retry-After), each has a deadline, and a cancelled request (client gone) stops between
two tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

Emit = Callable[[Any], None]
JobFn = Callable[[Emit, Callable[[], bool]], Any]


class QueueFullError(RuntimeError):
    """The queue already holds as many waiting requests as it may."""


class JobTimeoutError(RuntimeError):
    """A request ran past its time limit."""


class JobCancelledError(RuntimeError):
    """A request was cancelled (its client went away) before it finished."""


@dataclass
class Job:
    """One request: ``fn(emit, should_stop)`` runs on the worker; what it emits, then its result
    (or error), arrive in order through :meth:`events`."""

    fn: JobFn
    deadline: float
    loop: asyncio.AbstractEventLoop
    events_q: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancel_event: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """Ask the worker to stop this job at its next check (or skip it if not started)."""
        self.cancel_event.set()

    def timed_out(self) -> bool:
        return time.monotonic() > self.deadline

    def should_stop(self) -> bool:
        return self.cancel_event.is_set() or self.timed_out()

    def _put(self, kind: str, value: Any) -> None:
        # A closed event loop means nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.events_q.put_nowait, (kind, value))

    async def events(self) -> AsyncIterator[tuple[str, Any]]:
        """Yield ``("item", x)`` for each emitted item, then ``("done", result)`` or
        ``("error", exception)``; raises :class:`JobTimeoutError` when the deadline passes."""
        while True:
            left = self.deadline - time.monotonic()
            try:
                kind, value = await asyncio.wait_for(self.events_q.get(), max(left, 0.0) + 0.05)
            except asyncio.TimeoutError:
                # The worker sees the same deadline and stops (or skips the job) by itself.
                raise JobTimeoutError("time limit reached") from None
            yield kind, value
            if kind != "item":
                return


class Engine:
    """A worker thread running jobs one at a time from a queue of at most ``max_queue`` waiting
    jobs; each job must finish within ``timeout`` seconds of being submitted."""

    def __init__(self, *, max_queue: int = 16, timeout: float = 60.0) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.max_queue = max_queue
        self.timeout = timeout
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.running = False  # a job is executing now
        self.stats = {"completed": 0, "cancelled": 0, "timed_out": 0, "failed": 0, "rejected": 0}

    def start(self) -> None:
        """Start the worker thread (idempotent)."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._work, name="scratchgpt-generation", daemon=True
                )
                self._thread.start()

    def stop(self) -> None:
        """Ask the worker to finish after the queued jobs and wait for it."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=30)
        self._thread = None

    @property
    def queued(self) -> int:
        """Jobs waiting (not counting the one running)."""
        return self._queue.qsize()

    def submit(
        self,
        fn: JobFn,
        *,
        timeout: float | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> Job:
        """Queue ``fn``; raises :class:`QueueFullError` when ``max_queue`` jobs already wait.
        Its events go to ``loop`` (default: the running one)."""
        self.start()
        limit = self.timeout if timeout is None else timeout
        job = Job(fn, time.monotonic() + limit, loop or asyncio.get_running_loop())
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self.stats["rejected"] += 1
            raise QueueFullError(f"{self.max_queue} requests are already waiting") from None
        return job

    def retry_after(self) -> int:
        """Seconds a refused client should wait: a rough guess from the queue length."""
        return max(1, min(60, self.queued + 1))

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if job.timed_out():
                self.stats["timed_out"] += 1
                job._put("error", JobTimeoutError("time limit reached while queued"))
                continue
            if job.cancel_event.is_set():
                self.stats["cancelled"] += 1
                job._put("error", JobCancelledError("cancelled before it started"))
                continue
            self.running = True
            try:
                result = job.fn(lambda item, j=job: j._put("item", item), job.should_stop)
            except Exception as e:  # delivered to the request that caused it
                self.stats["failed"] += 1
                job._put("error", e)
            else:
                if job.timed_out():
                    self.stats["timed_out"] += 1
                    job._put("error", JobTimeoutError("time limit reached"))
                elif job.cancel_event.is_set():
                    self.stats["cancelled"] += 1
                    job._put("error", JobCancelledError("cancelled"))
                else:
                    self.stats["completed"] += 1
                    job._put("done", result)
            finally:
                self.running = False
