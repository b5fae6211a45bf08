"""Between the protocols and the decode thread: a request's stories become jobs, their events come back.

`Service.tell` encodes the prompt, makes one job per variant (variant i with `params.for_row(i)`) and queues
them together (429 when the queue is full); `Batch` streams their events or collects each variant's result, and
cancels its jobs when the client leaves.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from starlette.requests import Request

from engine.generation.sampling import SamplingParams
from engine.generation.session import Session
from engine.generation.telling import TokenInfo
from helium_server.fields import ApiError
from helium_server.scheduler import End, Job, Piece, QueueFull, Scheduler


@dataclass
class Ask:
    """One request's story: its opening, settings, variants, stop strings and how many alternatives per token."""

    prompt: str
    params: SamplingParams
    n: int = 1
    stop: tuple[str, ...] = ()
    top: int = 0


@dataclass
class Result:
    """One variant, told: its text, why it ended, its tokens' details and counts."""

    text: str = ""
    reason: str = ""
    tokens: list[TokenInfo] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Batch:
    """A request's jobs in the scheduler: `events()` streams them, `collect()` waits for them all."""

    def __init__(self, jobs: list[Job], events: asyncio.Queue) -> None:
        self.jobs = jobs
        self.queue = events
        self.prompt_tokens = len(jobs[0].prompt_ids)

    def cancel(self) -> None:
        """Free the jobs' rows (before their next token)."""
        for job in self.jobs:
            job.cancelled.set()

    async def events(self) -> AsyncIterator[Piece | End]:
        """Every Piece and End of every job, in order; cancels what is left when the consumer stops early."""
        left = len(self.jobs)
        try:
            while left:
                event = await self.queue.get()
                left -= isinstance(event, End)
                yield event
        finally:
            self.cancel()

    async def collect(self, request: Request) -> list[Result]:
        """Each variant's result; a client that disconnects first cancels them."""
        results = [Result() for _ in self.jobs]
        gone = asyncio.create_task(_disconnected(request))
        try:
            async for event in self._until(gone):
                result = results[event.index]
                result.text += event.text
                if isinstance(event, Piece) and event.token is not None:
                    result.tokens.append(event.token)
                if isinstance(event, End):
                    result.reason = event.reason
                    result.prompt_tokens, result.completion_tokens = event.prompt_tokens, event.completion_tokens
        finally:
            gone.cancel()
        return results

    async def _until(self, gone: asyncio.Task) -> AsyncIterator[Piece | End]:
        events = self.events()
        nxt: asyncio.Future = asyncio.get_running_loop().create_future()
        try:
            while True:
                nxt = asyncio.ensure_future(anext(events))
                await asyncio.wait([nxt, gone], return_when=asyncio.FIRST_COMPLETED)
                if not nxt.done():
                    nxt.cancel()
                    self.cancel()
                    raise ApiError(499, "the client closed the connection")
                try:
                    yield nxt.result()
                except StopAsyncIteration:
                    return
        finally:
            if not nxt.done():  # cancelled while waiting (the server stopping): the generator must rest first
                nxt.cancel()
                await asyncio.gather(nxt, return_exceptions=True)
            await events.aclose()


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


class Service:
    """One served model and its scheduler, for the protocol handlers."""

    def __init__(self, session: Session, scheduler: Scheduler) -> None:
        self.session = session
        self.scheduler = scheduler
        self.name = session.name
        self.users = 0  # requests holding it (`Models.use`): it is not unloaded meanwhile

    async def tell(self, ask: Ask) -> Batch:
        """Queue ask's variants; 400 for settings the sampler refuses, 429 when the queue is full."""
        try:
            ask.params.validate()
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        tok = self.session.generator.tok
        ids = await asyncio.to_thread(tok.encode, ask.prompt)
        if not ids:
            raise ApiError(400, "the prompt is empty and this model has no start token to begin from", "prompt")
        loop, events = asyncio.get_running_loop(), asyncio.Queue()
        jobs = [
            Job(ids, ask.params.for_row(i), loop, events, index=i, stop=ask.stop, top=ask.top) for i in range(ask.n)
        ]
        try:
            self.scheduler.submit(jobs)
        except QueueFull:
            raise ApiError(429, "the server is busy: too many requests are waiting", code="rate_limit_exceeded") from None
        return Batch(jobs, events)
