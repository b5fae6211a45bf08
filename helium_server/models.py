"""The models a server answers for: the one it starts with and, unless told `--one-model`, every installed model by
name, loaded on first use; past the memory budget the least recently used idle models are unloaded.

A request's model name is looked up among the installed names only (Ollama's ':latest' ignored): it never reaches
the filesystem as a path. Each loaded model has its own decode thread and batch; they decode in parallel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from engine.bundles.bundle import stored_quantization
from engine.bundles.registry import list_models
from engine.generation.runtime import dtype_name, pick_device, pick_dtype
from engine.generation.session import Session, open_session
from engine.humanize import human_bytes
from helium_server.fields import ApiError
from helium_server.scheduler import Scheduler
from helium_server.service import Service

log = logging.getLogger("helium.serve")
NAMES_SHOWN = 8  # installed names a 404 lists


@dataclass(frozen=True)
class Loader:
    """How the server opens another installed model: as it opened the first (device, dtype, weights, threads)."""

    device: str = "auto"
    dtype: str = "auto"
    quantize: str | None = None  # None: as the bundle stores its weights
    threads: int | None = None

    @classmethod
    def like(cls, session: Session) -> Loader:
        """Open others on session's device, in its dtype, with its threads (weights as each bundle stores them)."""
        return cls(str(session.device), session.dtype_name, None, session.threads)

    def installed(self) -> dict[str, Path]:
        """Every installed model's name and bundle directory."""
        return {m.name: m.path for m in list_models()}

    def open(self, path: Path) -> Session:
        return open_session(str(path), device=self.device, dtype=self.dtype, compile=False, quantize=self.quantize,
                            threads=self.threads)  # fmt: skip

    def precision(self, path: Path) -> str:
        """What a model not loaded yet would compute in: 'INT8', 'INT4' or its activations' dtype."""
        quantize = self.quantize or stored_quantization(path)
        if quantize != "none":
            return quantize.upper()
        return dtype_name(pick_dtype(pick_device(self.device), self.dtype)).upper()


@dataclass
class Listed:
    """A model a request may name: its bundle, and its Service while loaded."""

    name: str
    path: Path | None
    service: Service | None = None


class Models:
    """The served models: `use(name)` gives a loaded model's Service (loading it first if need be) and keeps it
    from being unloaded while the request holds it."""

    def __init__(
        self, first: Session, max_batch: int, max_queue: int, loader: Loader | None = None, others: bool = False,
        budget: int | None = None,
    ) -> None:  # fmt: skip
        self.max_batch, self.max_queue = max_batch, max_queue
        self.loader = loader or Loader.like(first)
        self.others = others  # every installed model may be named, not only the first
        self.budget = budget  # bytes the loaded models may hold together (None: no limit)
        self.first = first.name
        self.paths: dict[str, Path | None] = {first.name: first.bundle.path}
        self.loaded: OrderedDict[str, Service] = OrderedDict()  # least recently used first
        self.sizes: dict[str, int] = {}  # bytes each model held when last loaded
        self._locks: dict[str, asyncio.Lock] = {}
        self._measured(first)
        self._add(first)

    # -- what a request may name

    def listed(self) -> list[Listed]:
        """The loaded models (least recently used first), then the other installed ones by name."""
        out = [Listed(name, self.paths.get(name), service) for name, service in self.loaded.items()]
        if self.others:
            out += [Listed(n, p) for n, p in sorted(self.loader.installed().items()) if n not in self.loaded]
        elif self.first not in self.loaded:
            out.append(Listed(self.first, self.paths[self.first]))
        return out

    def find(self, name: str | None) -> Listed:
        """The model a request names (no name: the one the server started with, as llama.cpp's server does); 404
        when it is none of ours."""
        key = (name or self.first).removesuffix(":latest")
        if key in self.loaded:
            return Listed(key, self.paths.get(key), self.loaded[key])
        if key == self.first:
            return Listed(key, self.paths[key])
        installed = self.loader.installed() if self.others else {}
        if key and key in installed:
            return Listed(key, installed[key])
        names = [m.name for m in self.listed()]
        shown = ", ".join(names[:NAMES_SHOWN]) + (f" and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else "")
        raise ApiError(404, f"model '{name}' is not served here (this server serves: {shown})", param="model",
                       code="model_not_found")  # fmt: skip

    # -- loading and unloading

    @contextlib.asynccontextmanager
    async def use(self, name: str | None) -> AsyncIterator[Service]:
        """The named model's Service, loaded and marked in use until the block ends (its queued jobs keep it in use
        after that, until they end)."""
        key = self.find(name).name
        async with self._locks.setdefault(key, asyncio.Lock()):
            service = self.loaded.get(key) or await self._load(key)
            self.loaded.move_to_end(key)
            service.users += 1
        try:
            yield service
        finally:
            service.users -= 1

    async def unload(self, name: str | None) -> bool:
        """Unload the named model now (Ollama's keep_alive 0); False when it was not loaded. 409 while in use."""
        key = self.find(name).name
        async with self._locks.setdefault(key, asyncio.Lock()):
            service = self.loaded.get(key)
            if service is None:
                return False
            if not self._idle(service):
                raise ApiError(409, f"model '{key}' is telling stories now; unload it when they have ended")
            await self._drop(key)
            return True

    def held(self) -> int:
        """Bytes the loaded models hold together."""
        return sum(self.sizes[name] for name in self.loaded)

    async def _load(self, key: str) -> Service:
        """Open key's bundle (making room first when its size is known from an earlier load), then unload the
        least recently used idle models until the budget holds; 503 when it cannot."""
        if key in self.sizes:
            await self._make_room(self.sizes[key], key)
        path = self.paths.get(key) or self.find(key).path
        try:
            session, size = await asyncio.to_thread(self._open, path)
        except Exception as exc:  # a damaged or vanished bundle: the request fails, the server goes on
            log.error("loading %s failed: %s: %s", key, type(exc).__name__, exc)
            raise ApiError(503, f"model '{key}' could not be loaded: {exc}") from None
        self.paths[key] = path
        if self.budget is not None and size > self.budget:
            raise ApiError(503, f"model '{key}' needs {human_bytes(size)}, more than the server's memory budget "
                                f"({human_bytes(self.budget)}, --memory-budget)")  # fmt: skip
        if not await self._make_room(size, key):
            raise ApiError(503, f"model '{key}' needs {human_bytes(size)} and the models in use hold "
                                f"{human_bytes(self.held())} of the {human_bytes(self.budget or 0)} budget: try again "
                                "when their stories end", code="server_busy")  # fmt: skip
        service = self._add(session)
        service.scheduler.start()
        log.warning("loaded %s (%s)", key, human_bytes(size))
        return service

    def _open(self, path: Path) -> tuple[Session, int]:
        session = self.loader.open(path)
        return session, self._measured(session)

    def _measured(self, session: Session) -> int:
        """The bytes session holds with its KV cache made for the decode thread's batch, recorded in `sizes`."""
        session.generator.ensure_cache(self.max_batch)
        self.sizes[session.name] = size = session.memory_bytes()
        return size

    async def _make_room(self, need: int, keep: str) -> bool:
        """Unload idle models, least recently used first, until need more bytes fit the budget."""
        if self.budget is None:
            return True
        for name in [n for n in self.loaded if n != keep]:
            if self.held() + need <= self.budget:
                break
            if self._idle(self.loaded[name]):
                await self._drop(name)
        return self.held() + need <= self.budget

    def _idle(self, service: Service) -> bool:
        """Not in use, and loadable again (a model opened from memory, not a bundle, stays)."""
        return service.users == 0 and not service.scheduler.busy() and self.paths.get(service.name) is not None

    async def _drop(self, name: str) -> None:
        service = self.loaded.pop(name)
        await asyncio.to_thread(service.scheduler.stop)
        log.warning("unloaded %s (%s)", name, human_bytes(self.sizes.get(name, 0)))

    def _add(self, session: Session) -> Service:
        service = Service(session, Scheduler(session.generator, self.max_batch, self.max_queue))
        self.loaded[session.name] = service
        return service

    # -- the app's lifespan

    def start(self) -> None:
        for service in self.loaded.values():
            service.scheduler.start()

    def stop(self) -> None:
        for service in self.loaded.values():
            service.scheduler.stop()

    def halt(self) -> None:
        """End every story now ("cancelled": waiting requests get 503), without waiting: the server is stopping."""
        for service in self.loaded.values():
            service.scheduler.stopping.set()
