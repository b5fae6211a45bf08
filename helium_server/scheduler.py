"""The decode thread: one model, a bounded queue of jobs, and a running batch they join and leave between tokens.

Each job is one story (one `Slots` row) with its own settings, seed, stop strings and logprobs; its text goes
back to the asyncio side as `Piece`s and one `End`, through the job's queue. A cancelled job (its client left)
frees its row before the next token. Each served model has its own thread; several decode in parallel (a native
step releases the GIL).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass, field

import torch

from engine.generation.generate import Generator, SlotRow, Slots
from engine.generation.sampling import SamplingParams
from engine.generation.telling import TokenInfo, token_info
from engine.model.tokenizer import StreamDecoder

log = logging.getLogger("helium.serve")


@dataclass
class Piece:
    """Text of one job, as it streams (empty while a stop string may be starting), with its token's details."""

    index: int
    text: str
    token: TokenInfo | None = None


@dataclass
class End:
    """A job's last event: why it ended ("eos", "stop" (a stop string), "length", "cancelled", "error"), the
    rest of its text, its token counts."""

    index: int
    reason: str
    text: str
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Job:
    """One story to tell; `events` receives its Pieces and End on `loop`."""

    prompt_ids: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue
    index: int = 0  # which of a request's n variants
    stop: tuple[str, ...] = ()
    top: int = 0  # > 0: each Piece carries a TokenInfo with this many alternatives
    cancelled: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)  # its End has been sent

    def send(self, event: Piece | End) -> None:
        """Hand an event to the asyncio side (dropped when its loop has closed)."""
        if isinstance(event, End):
            self.ended.set()
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:
            pass


class QueueFull(Exception):
    """More jobs are waiting than the queue holds: answer 429."""


class Live:
    """A job while it is told: its decoder, its text so far and how much of it has been sent."""

    def __init__(self, job: Job, gen: Generator) -> None:
        self.job = job
        self.decoder = StreamDecoder(gen.tok, job.prompt_ids)
        self.text = ""
        self.sent = 0
        self.count = 0
        self.hold = max((len(s) for s in job.stop), default=1) - 1  # a stop string may be starting here

    def push(self, token: int, info: TokenInfo | None) -> str | None:
        """Take one generated token; returns a finish reason once the job is done."""
        self.count += 1
        self.text += self.decoder.push(token)
        cut = self._stop_at()
        if cut is not None:
            self.text = self.text[:cut]
            self.job.send(Piece(self.job.index, "", info))
            return "stop"
        safe = max(self.sent, len(self.text) - self.hold)
        self.job.send(Piece(self.job.index, self.text[self.sent : safe], info))
        self.sent = safe
        return "length" if self.count >= self.job.params.max_new_tokens else None

    def end(self, reason: str) -> None:
        """Send the rest of the text and the End."""
        if reason != "stop":
            self.text += self.decoder.flush()
            cut = self._stop_at()
            if cut is not None:
                self.text, reason = self.text[:cut], "stop"
        job = self.job
        job.send(End(job.index, reason, self.text[self.sent :], len(job.prompt_ids), self.count))

    def _stop_at(self) -> int | None:
        """Where the first stop string starts in the text, if one has appeared."""
        hits = [i for s in self.job.stop if (i := self.text.find(s, max(0, self.sent - len(s)))) >= 0]
        return min(hits) if hits else None


class Scheduler:
    """The one thread that decodes: admits queued jobs into free rows, steps the batch, ends rows."""

    def __init__(self, gen: Generator, max_batch: int, max_queue: int) -> None:
        self.gen = gen
        self.max_batch = max_batch
        self.inbox: queue.Queue[Job] = queue.Queue()
        self.max_queue = max_queue
        self._submit = threading.Lock()
        self._open: list[Job] = []  # submitted jobs, until their End
        self.stopping = threading.Event()
        self.active = 0  # rows decoding now (read by /metrics-like callers; written by the thread)
        self.thread = threading.Thread(target=self._run, name="helium-decode", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """End every job ("cancelled") and the thread."""
        self.stopping.set()
        self.thread.join(timeout)

    def submit(self, jobs: list[Job]) -> None:
        """Queue a request's jobs together, or raise QueueFull."""
        with self._submit:
            if self.stopping.is_set() or self.inbox.qsize() + len(jobs) > self.max_queue:
                raise QueueFull
            self._open = [job for job in self._open if not job.ended.is_set()] + jobs
            for job in jobs:
                self.inbox.put(job)

    def busy(self) -> bool:
        """Whether a submitted job has not ended yet (queued, decoding, or between the two)."""
        with self._submit:
            self._open = [job for job in self._open if not job.ended.is_set()]
            return bool(self._open)

    def _run(self) -> None:
        with self.gen.lock, torch.inference_mode():
            slots = Slots(self.gen, self.max_batch)
            live: dict[int, tuple[SlotRow, Live]] = {}
            while not self.stopping.is_set():
                try:
                    self._admit(slots, live)
                    self._drop_cancelled(slots, live)
                    self.active = len(slots.rows)
                    if slots.rows:
                        self._step(slots, live)
                except Exception as exc:  # a bug or out of memory: end what is running, keep serving
                    log.error("decode failed: %s: %s", type(exc).__name__, exc)
                    for row, state in list(live.values()):
                        state.end("error")
                        slots.remove(row)
                    live.clear()
            for _row, state in live.values():
                state.end("cancelled")
            while not self.inbox.empty():
                job = self.inbox.get_nowait()
                job.send(End(job.index, "cancelled", "", len(job.prompt_ids), 0))

    def _admit(self, slots: Slots, live: dict[int, tuple[SlotRow, Live]]) -> None:
        """Fill free rows from the queue (waiting a little when nothing runs): the jobs waiting now join together
        (`Slots.join` prefills those as long as each other in one forward) and each picks its first token."""
        jobs: list[Job] = []
        while len(slots.rows) + len(jobs) < self.max_batch:
            try:
                job = self.inbox.get(timeout=0.05) if not slots.rows and not jobs else self.inbox.get_nowait()
            except queue.Empty:
                break
            if job.cancelled.is_set():
                job.send(End(job.index, "cancelled", "", len(job.prompt_ids), 0))
            else:
                jobs.append(job)
        if not jobs:
            return
        try:
            joined = slots.join([(job.prompt_ids, job.params) for job in jobs])
        except Exception as exc:  # out of memory in their prefill, say: these jobs fail, the others go on
            log.error("prefill failed: %s: %s", type(exc).__name__, exc)
            for job in jobs:
                job.send(End(job.index, "error", "", len(job.prompt_ids), 0))
            return
        for job, (row, token, logits) in zip(jobs, joined, strict=True):
            state = Live(job, self.gen)
            live[id(row)] = (row, state)
            self._take(slots, live, row, state, token, logits)

    def _drop_cancelled(self, slots: Slots, live: dict[int, tuple[SlotRow, Live]]) -> None:
        for key, (row, state) in list(live.items()):
            if state.job.cancelled.is_set():
                state.end("cancelled")
                slots.remove(row)
                del live[key]

    def _step(self, slots: Slots, live: dict[int, tuple[SlotRow, Live]]) -> None:
        rows = list(slots.rows)
        ids, logits = slots.step()
        for i, (row, token) in enumerate(zip(rows, ids, strict=True)):
            self._take(slots, live, row, live[id(row)][1], token, logits[i])

    def _take(self, slots: Slots, live, row: SlotRow, state: Live, token: int, logits: torch.Tensor) -> None:
        """One picked token of a row: its end token, text, details; the row leaves when it is done."""
        job = state.job
        if job.params.stop_at_eos and token == self.gen.tok.eos_id:
            reason: str | None = "eos"
        else:
            info = token_info(self.gen.tok, token, logits, job.top) if job.top else None
            reason = state.push(token, info)
        if reason is not None:
            state.end(reason)
            slots.remove(row)
            del live[id(row)]
