"""A streamed answer (SSE or NDJSON) that cancels its stories the moment the client disconnects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.types import Receive, Scope, Send

from helium_server.service import Batch


class EventStream:
    """An ASGI response sending chunks as they come; a disconnect (seen on receive, or a failed send)
    cancels the batch, so its rows leave the running batch before their next token."""

    def __init__(self, batch: Batch, chunks: AsyncIterator[bytes], media_type: str) -> None:
        self.batch, self.chunks, self.media_type = batch, chunks, media_type

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            self.batch.cancel()

        watcher = asyncio.create_task(watch())
        headers = [(b"content-type", self.media_type.encode()), (b"cache-control", b"no-cache"),
                   (b"x-accel-buffering", b"no")]  # fmt: skip
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            async for chunk in self.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the client went away mid-send
            pass
        finally:
            watcher.cancel()
            self.batch.cancel()
            await self.chunks.aclose()  # type: ignore[attr-defined]
