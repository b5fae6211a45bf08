"""A real HTTP server on 127.0.0.1 that answers the Hugging Face Hub's file endpoint, for pull tests.

`HEAD/GET /{repo}/resolve/{revision}/{path}` with the headers `hf_hub_download` reads (ETag = the file's sha256 as
for LFS files, X-Repo-Commit, Content-Length, ranges for resumed downloads), plus faults: a connection dropped or
the whole server dying after some bytes, a stall, corrupt bytes.
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

COMMIT = "0123456789abcdef0123456789abcdef01234567"
RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


@dataclass
class Faults:
    """What the next GETs do wrong (each fault fires once, then the server behaves)."""

    drop_after: int | None = None  # close the connection after this many body bytes
    die_after: int | None = None  # ... and shut the whole server down (port closed)
    stall_s: float = 0.0  # pause this long in the middle of the body
    corrupt: bool = False  # flip one byte of the body (the ETag still names the right sha256)


@dataclass
class FakeHub:
    """Serves `files` ({repo: {path: bytes}}) until stop(); `url` is what HF_ENDPOINT should be."""

    files: dict[str, dict[str, bytes]]
    faults: Faults = field(default_factory=Faults)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range header)
    port: int = 0

    def __post_init__(self) -> None:
        self.server: ThreadingHTTPServer | None = None
        self.connections: set[socket.socket] = set()  # open client connections (kept alive between requests)
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Listen (again) on the same port."""
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def stop(self) -> None:
        """Stop answering: close the port and every open connection, as a dead server would."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            for conn in list(self.connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.server = None

    def gets(self) -> list[tuple[str, str, str | None]]:
        """The GET requests seen so far."""
        return [r for r in self.requests if r[0] == "GET"]


def isolate_hub(monkeypatch, cache_root) -> None:
    """An empty Hugging Face cache under cache_root, no offline mode, and no telemetry request to the real Hub."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HOME", str(cache_root))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_ETAG_TIMEOUT", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")  # for subprocesses
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)  # read at import time


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def setup(self) -> None:
            super().setup()
            hub.connections.add(self.connection)

        def finish(self) -> None:
            hub.connections.discard(self.connection)
            super().finish()

        def _lookup(self) -> bytes | None:
            match = RESOLVE.match(unquote(self.path.split("?")[0]))
            if not match or match.group(2) not in ("main", COMMIT):
                return None
            return hub.files.get(match.group(1), {}).get(match.group(3))

        def _not_found(self) -> None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("X-Error-Message", "Entry not found")
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_HEAD(self) -> None:
            hub.requests.append(("HEAD", self.path, None))
            data = self._lookup()
            if data is None:
                return self._not_found()
            self.send_response(200)
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()

        def do_GET(self) -> None:
            byte_range = self.headers.get("Range")
            hub.requests.append(("GET", self.path, byte_range))
            data = self._lookup()
            if data is None:
                return self._not_found()
            start = int(re.match(r"bytes=(\d+)-", byte_range).group(1)) if byte_range else 0
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.send_header("X-Repo-Commit", COMMIT)
            self.end_headers()
            body = data[start:]
            faults = hub.faults
            if faults.corrupt:
                faults.corrupt = False
                body = body[:-1] + bytes([body[-1] ^ 0xFF])
            cut = faults.die_after if faults.die_after is not None else faults.drop_after
            if cut is not None:
                die = faults.die_after is not None
                faults.die_after = faults.drop_after = None
                self.wfile.write(body[:cut])
                self.wfile.flush()
                if die:  # stop() closes this connection too, after the port
                    threading.Thread(target=hub.stop).start()
                    while hub.server is not None:
                        time.sleep(0.01)
                else:
                    self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            if faults.stall_s:
                stall, faults.stall_s = faults.stall_s, 0.0
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                time.sleep(stall)
                body = body[len(body) // 2 :]
            self.wfile.write(body)

    return Handler
