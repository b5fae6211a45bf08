"""A real HTTP server on 127.0.0.1 that answers the Hugging Face Hub's file and listing endpoints, for Hub tests.

`HEAD/GET /{repo}/resolve/{revision}/{path}` with the headers the Hub sends (ETag = the file's sha256 as for LFS
files, X-Repo-Commit, Content-Length, ranges for resumed downloads) and `GET /api/models/{repo}/revision/{rev}`
(the repo's commit and file names), plus faults (a connection dropped or the whole server dying after some bytes,
a stall, corrupt bytes) and lies (`Lies`: a hostile mirror's ETag, commit, file names, redirect, size, a drip).
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

COMMIT = "0123456789abcdef0123456789abcdef01234567"
RESOLVE = re.compile(r"^/((?:datasets/)?[^/]+/[^/]+)/resolve/([^/]+)/(.+)$")  # a dataset's repo key: datasets/O/N
LISTING = re.compile(r"^/api/models/([^/]+/[^/]+)(?:/(revision|tree)/([^/]+))?$")


@dataclass
class Faults:
    """What the next GETs do wrong (each fault fires once, then the server behaves)."""

    drop_after: int | None = None  # close the connection after this many body bytes
    die_after: int | None = None  # ... and shut the whole server down (port closed)
    stall_s: float = 0.0  # pause this long in the middle of the body
    corrupt: bool = False  # flip one byte of the body (the ETag still names the right sha256)


@dataclass
class Lies:
    """What a hostile mirror answers instead of the truth (None: the truth); every lie holds until changed."""

    etag: str | None = None  # the ETag of every file (HEAD and GET)
    commit: str | None = None  # X-Repo-Commit, and the commit a listing names
    siblings: list[str] = field(default_factory=list)  # extra file names in a listing (served as b"evil")
    redirect: str | None = None  # GETs answer 302 to this Location (URL or path; {path}: the path asked for)
    size: int | None = None  # Content-Length of every HEAD and GET (the body stays the real bytes)
    drip_s: float = 0.0  # send bodies in 64 pieces, this long apart


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up mid-answer (as the tests' refusals do) is not an error worth a traceback on stderr,
    where a later test reading stderr would find it."""

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


@dataclass
class FakeHub:
    """Serves `files` ({repo: {path: bytes}}) until stop(); `url` is what HF_ENDPOINT should be."""

    files: dict[str, dict[str, bytes]]
    faults: Faults = field(default_factory=Faults)
    lies: Lies = field(default_factory=Lies)
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
        self.server = _QuietServer(("127.0.0.1", self.port), _handler(self))
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
            if not match or match.group(2) not in ("main", COMMIT, hub.lies.commit):
                return None
            if match.group(3) in hub.lies.siblings:
                return b"evil"
            return hub.files.get(match.group(1), {}).get(match.group(3))

        def _file_headers(self, data: bytes, length: int) -> None:
            """ETag, X-Repo-Commit and Content-Length: the truth unless hub.lies says otherwise."""
            lies = hub.lies
            self.send_header("ETag", f'"{lies.etag or hashlib.sha256(data).hexdigest()}"')
            self.send_header("X-Repo-Commit", lies.commit or COMMIT)
            self.send_header("Content-Length", str(lies.size if lies.size is not None else length))

        def _listing(self) -> bool:
            """Answer `GET /api/models/{repo}/revision/{rev}` (True) like the Hub's model_info."""
            match = LISTING.match(unquote(self.path.split("?")[0]))
            if not match or match.group(1) not in hub.files:
                return False
            files = {**hub.files[match.group(1)], **dict.fromkeys(hub.lies.siblings, b"evil")}
            if match.group(2) == "tree":  # huggingface_hub's snapshot_download lists this way
                answer = [{"type": "file", "path": n, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                          for n, b in files.items()]  # fmt: skip
            else:
                answer = {"id": match.group(1), "sha": hub.lies.commit or COMMIT,
                          "siblings": [{"rfilename": n} for n in files]}  # fmt: skip
            body = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return True

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
            self._file_headers(data, len(data))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()

        def do_GET(self) -> None:
            byte_range = self.headers.get("Range")
            hub.requests.append(("GET", self.path, byte_range))
            if self._listing():
                return None
            data = self._lookup()
            if data is None:
                return self._not_found()
            if hub.lies.redirect is not None:
                self.send_response(302)
                self.send_header("Location", hub.lies.redirect.replace("{path}", self.path))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            start = int(re.match(r"bytes=(\d+)-", byte_range).group(1)) if byte_range else 0
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self._file_headers(data, len(data) - start)
            self.end_headers()
            body = data[start:]
            if hub.lies.drip_s:
                return self._drip(body)
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

        def _drip(self, body: bytes) -> None:
            """The body in 64 pieces, hub.lies.drip_s apart (a slow link)."""
            step = max(1, -(-len(body) // 64))
            for i in range(0, len(body), step):
                self.wfile.write(body[i : i + step])
                self.wfile.flush()
                time.sleep(hub.lies.drip_s)

    return Handler
