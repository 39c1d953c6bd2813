"""The generation engine: how the server shares one model among its clients.

One worker thread owns the model. Generation requests are decoded together by continuous
batching (:class:`~scratchgpt.generation.slots.SlotDecoder`): each choice of a request takes one
of ``slots`` slots, every step decodes one token for each running choice in one forward pass, a
finished or cancelled choice frees its slot at once and the next waiting one joins. A request's
tokens do not depend on what else runs (see :mod:`scratchgpt.generation.slots`).

Requests that cannot start yet wait in a bounded queue (a full queue is refused at once, so the
HTTP layer can answer 503 with Retry-After); each has a deadline, and a cancelled request
(client gone) leaves its slots between two steps. Other work (classification) runs as a plain
function on the same thread, between two steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from scratchgpt.errors import ConfigError
from scratchgpt.generation.slots import DEFAULT_PREFILL_CHUNK, SlotDecoder, SlotEvent, SlotRequest
from scratchgpt.serving.metrics import EngineMetrics
from scratchgpt.serving.model import Choice

Emit = Callable[[Any], None]
JobFn = Callable[[Emit, Callable[[], bool]], Any]

log = logging.getLogger("scratchgpt.serving")


class QueueFullError(RuntimeError):
    """The queue already holds as many waiting requests as it may."""


class JobTimeoutError(RuntimeError):
    """A request ran past its time limit."""


class JobCancelledError(RuntimeError):
    """A request was cancelled (its client went away) before it finished."""


@dataclass(eq=False)
class Job:
    """One request: ``fn(emit, should_stop)`` runs on the worker; what it emits, then its result
    (or error), arrive in order through :meth:`events`."""

    fn: JobFn | None
    deadline: float
    loop: asyncio.AbstractEventLoop
    events_q: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancel_event: threading.Event = field(default_factory=threading.Event)
    request_id: str = ""
    submitted: float = field(default_factory=time.monotonic)

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


@dataclass(eq=False)
class GenerationJob(Job):
    """A generation request: choices ``sequences[i]`` to decode, each in its own slot. Emits
    ``(index, piece)`` as text arrives and ``(index, None)`` when a choice ends; its result is
    the list of :class:`Choice`, by index."""

    model: Any = None
    tokenizer: Any = None
    sequences: Sequence[SlotRequest] = ()
    pending: deque[int] = field(default_factory=deque)  # choices not started yet
    texts: dict[int, list[str]] = field(default_factory=dict)
    choices: dict[int, Choice] = field(default_factory=dict)
    new_tokens: dict[int, int] = field(default_factory=dict)  # by choice, so far
    first_token_at: float | None = None
    last_token_at: dict[int, float] = field(default_factory=dict)


class Engine:
    """The worker thread, its queue of at most ``max_queue`` waiting requests, and ``slots``
    choices decoded at once; each request must finish within ``timeout`` seconds of being
    submitted. :meth:`load` names the model to warm up at start (``ready`` until then False)."""

    def __init__(
        self,
        *,
        max_queue: int = 16,
        timeout: float = 60.0,
        slots: int = 8,
        prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
    ) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.max_queue = max_queue
        self.timeout = timeout
        self.slots = slots
        self.prefill_chunk = prefill_chunk
        self._waiting: deque[Job] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop_by: float | None = None  # set by shutdown(): cancel what runs past it
        self._jobs: list[GenerationJob] = []  # started: choices pending or in slots
        self._owner: dict[int, tuple[GenerationJob, int]] = {}  # slot -> (job, choice)
        self._model: Any = None
        self._tokenizer: Any = None
        self._decoder: SlotDecoder | None = None
        self._warm = False
        self._fn_running = False
        self.stats = {"completed": 0, "cancelled": 0, "timed_out": 0, "failed": 0, "rejected": 0}
        self.metrics = EngineMetrics(self)

    # ----------------------------------------------------------------------------------------
    # Outside the worker

    def load(self, model: Any, tokenizer: Any) -> None:
        """The model generation requests use: the worker prepares its slots and warms it up
        (one prefill and one decode step) as it starts."""
        self._model, self._tokenizer = model, tokenizer

    @property
    def ready(self) -> bool:
        """Whether the model (if one was loaded) is warmed up and requests run at full speed."""
        return self._model is None or self._warm

    @property
    def queued(self) -> int:
        """Requests waiting to start."""
        return len(self._waiting)

    @property
    def active_slots(self) -> int:
        """Slots holding a choice being generated."""
        return len(self._owner)

    @property
    def running(self) -> bool:
        """Whether any work is in progress now."""
        return self._fn_running or bool(self._owner)

    def start(self) -> None:
        """Start the worker thread (idempotent; after :meth:`shutdown`, only :meth:`stop`
        makes the engine take requests again)."""
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._work, name="scratchgpt-generation", daemon=True
                )
                self._thread.start()

    def shutdown(self, grace: float = 30.0) -> None:
        """Refuse new requests from now on and cancel those still queued or running after
        ``grace`` seconds; returns at once (an earlier deadline is kept)."""
        with self._cond:
            deadline = time.monotonic() + grace
            if self._stop_by is None or deadline < self._stop_by:
                self._stop_by = deadline
            self._cond.notify()

    def stop(self, grace: float = 30.0) -> None:
        """:meth:`shutdown`, then wait for the worker to finish."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            self.shutdown(grace)
            thread.join(timeout=grace + 30)
        self._thread = None
        self._stop_by = None  # stopped: a later start() serves again

    def submit(
        self,
        fn: JobFn,
        *,
        timeout: float | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> Job:
        """Queue ``fn`` to run alone on the worker; raises :class:`QueueFullError` when
        ``max_queue`` requests already wait. Its events go to ``loop`` (default: the running
        one)."""
        limit = self.timeout if timeout is None else timeout
        job = Job(fn, time.monotonic() + limit, loop or asyncio.get_running_loop())
        return self._enqueue(job)

    def submit_generation(
        self,
        model: Any,
        tokenizer: Any,
        sequences: Sequence[SlotRequest],
        *,
        request_id: str = "",
        timeout: float | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> GenerationJob:
        """Queue the choices ``sequences`` of one request (choice ``i`` is ``sequences[i]``);
        raises :class:`QueueFullError` when ``max_queue`` requests already wait."""
        if not sequences:
            raise ValueError("a generation request needs at least one sequence")
        limit = self.timeout if timeout is None else timeout
        job = GenerationJob(
            None,
            time.monotonic() + limit,
            loop or asyncio.get_running_loop(),
            request_id=request_id,
            model=model,
            tokenizer=tokenizer,
            sequences=list(sequences),
            pending=deque(range(len(sequences))),
        )
        return self._enqueue(job)  # type: ignore[return-value]

    def _enqueue(self, job: Job) -> Job:
        self.start()
        with self._cond:
            if self._stop_by is not None:
                self._count("rejected")
                raise QueueFullError("the server is shutting down")
            if len(self._waiting) >= self.max_queue:
                self._count("rejected")
                raise QueueFullError(f"{self.max_queue} requests are already waiting")
            self._waiting.append(job)
            self._cond.notify()
        return job

    def retry_after(self) -> int:
        """Seconds a refused client should wait: a rough guess from the queue length."""
        return max(1, min(60, self.queued + 1))

    # ----------------------------------------------------------------------------------------
    # The worker

    def _work(self) -> None:
        if self._model is not None:
            try:
                self._decoder_for(self._model, self._tokenizer).warm_up()
            except Exception:  # the requests will meet the same error and report it
                log.exception("warming up the model failed")
        self._warm = True
        while True:
            with self._cond:
                while not self._waiting and not self._jobs and self._stop_by is None:
                    self._cond.wait()
                if self._stop_by is not None and not self._waiting and not self._jobs:
                    return
                stopping = self._stop_by is not None and time.monotonic() > self._stop_by
            if stopping:
                self._cancel_everything()
                continue
            self._drop_stopped()
            self._admit()
            if self._decoder is not None and self._decoder.busy:
                try:
                    # Tokens go out as each pass makes them: a first token does not wait for
                    # the other prefills of the step.
                    self._decoder.step(emit=self._deliver)
                except Exception as e:  # every running request gets it; the next ones run anew
                    for job in list(self._jobs):
                        self._stop_job(job, "failed", e)
                    continue

    def _decoder_for(self, model: Any, tokenizer: Any) -> SlotDecoder:
        if self._decoder is None:
            self._decoder = SlotDecoder(
                model, tokenizer, slots=self.slots, prefill_chunk=self.prefill_chunk
            )
        elif self._decoder.model is not model:
            raise ConfigError("this engine decodes one model; it got a request for another")
        return self._decoder

    def _count(self, status: str) -> None:
        self.stats[status] += 1
        self.metrics.requests.labels(status=status).inc()

    def _end(self, job: Job, status: str, error: Exception) -> None:
        self._count(status)
        job._put("error", error)
        self._log(job, status)

    def _skip_if_stopped(self, job: Job) -> bool:
        """End a job not started yet whose client left or whose time is up."""
        if job.timed_out():
            self._end(job, "timed_out", JobTimeoutError("time limit reached while queued"))
        elif job.cancel_event.is_set():
            self._end(job, "cancelled", JobCancelledError("cancelled before it started"))
        else:
            return False
        return True

    def _admit(self) -> None:
        """Start what can start: waiting choices of started requests first, then queued
        requests in order while a slot is free (a plain function runs at once)."""
        for job in self._jobs:
            self._start_choices(job)
        while True:
            with self._cond:
                if not self._waiting:
                    return
                job = self._waiting[0]
                free = self._decoder is None or self._decoder.free_slots > 0
                if job.fn is None and not free:
                    return
                self._waiting.popleft()
            if self._skip_if_stopped(job):
                continue
            if job.fn is not None:
                self._run_fn(job)
                continue
            assert isinstance(job, GenerationJob)
            try:
                self._decoder_for(job.model, job.tokenizer)
            except Exception as e:
                self._end(job, "failed", e)
                continue
            self._jobs.append(job)
            self._start_choices(job)

    def _start_choices(self, job: GenerationJob) -> None:
        decoder = self._decoder
        assert decoder is not None
        while job.pending and decoder.free_slots > 0:
            index = job.pending.popleft()
            try:
                slot = decoder.add(job.sequences[index])
            except Exception as e:  # a choice that cannot run ends its request
                self._stop_job(job, "failed", e)
                return
            self._owner[slot] = (job, index)
            job.texts[index] = []

    def _run_fn(self, job: Job) -> None:
        self._fn_running = True
        try:
            assert job.fn is not None
            result = job.fn(lambda item, j=job: j._put("item", item), job.should_stop)
        except Exception as e:  # delivered to the request that caused it
            self._end(job, "failed", e)
        else:
            if job.timed_out():
                self._end(job, "timed_out", JobTimeoutError("time limit reached"))
            elif job.cancel_event.is_set():
                self._end(job, "cancelled", JobCancelledError("cancelled"))
            else:
                self._count("completed")
                job._put("done", result)
        finally:
            self._fn_running = False

    def _stop_job(self, job: GenerationJob, status: str, error: Exception) -> None:
        """End a started request now: free its slots, tell its client."""
        for slot, (owner, _) in list(self._owner.items()):
            if owner is job:
                del self._owner[slot]
                if self._decoder is not None:
                    self._decoder.remove(slot)
        if job in self._jobs:
            self._jobs.remove(job)
        self._end(job, status, error)

    def _drop_stopped(self) -> None:
        for job in list(self._jobs):
            if job.timed_out():
                self._stop_job(job, "timed_out", JobTimeoutError("time limit reached"))
            elif job.cancel_event.is_set():
                self._stop_job(job, "cancelled", JobCancelledError("cancelled"))

    def _cancel_everything(self) -> None:
        """Past the shutdown grace period: end every request still queued or running."""
        error = JobCancelledError("the server is shutting down")
        for job in list(self._jobs):
            self._stop_job(job, "cancelled", error)
        with self._cond:
            waiting, self._waiting = list(self._waiting), deque()
        for job in waiting:
            self._end(job, "cancelled", error)

    def _deliver(self, events: list[SlotEvent]) -> None:
        now = time.monotonic()
        for ev in events:
            job, index = self._owner[ev.slot]
            if ev.token is not None:
                self.metrics.tokens.inc()
            if job.first_token_at is None:
                job.first_token_at = now
                self.metrics.ttft.observe(now - job.submitted)
            last = job.last_token_at.get(index)
            if last is not None:
                self.metrics.inter_token.observe(now - last)
            job.last_token_at[index] = now
            job.new_tokens[index] = ev.new_tokens
            if ev.piece:
                job.texts[index].append(ev.piece)
                job._put("item", (index, ev.piece))
            if ev.finish_reason is None:
                continue
            del self._owner[ev.slot]
            text = "".join(job.texts[index])
            job.choices[index] = Choice(index, text, ev.finish_reason, ev.new_tokens)
            job._put("item", (index, None))
            if len(job.choices) == len(job.sequences):
                self._jobs.remove(job)
                self._count("completed")
                job._put("done", [job.choices[i] for i in range(len(job.sequences))])
                self._log(job, "completed")

    def _log(self, job: Job, status: str) -> None:
        """One line per request: id, tokens, time to first token, total time, how it ended."""
        if not isinstance(job, GenerationJob):
            return
        first = job.first_token_at
        reasons = ",".join(sorted({c.finish_reason for c in job.choices.values()}))
        log.info(
            "request %s prompt_tokens=%d completion_tokens=%d ttft=%s total=%.3fs finish=%s",
            job.request_id or "-",
            sum(len(s.prompt) for s in job.sequences),
            sum(job.new_tokens.values()),
            "-" if first is None else f"{first - job.submitted:.3f}s",
            time.monotonic() - job.submitted,
            reasons if status == "completed" else status,
        )
