"""`helium bench serve`: a `helium serve` process on a free loopback port, loaded by 1, 2, 4... streaming clients.

Per level: total tokens/s across streams, the server's CPU time per token (which other load on the machine
barely moves), per stream the time to first token and the gaps between streamed pieces (p50/p99); with a soak,
16 clients asking in a loop for a while and the server's RSS at start, every minute and at the end.
The clients are Python threads in this process sharing one httpx client (making a client costs ~0.1 s of this
process's CPU, which would count in every stream's time to first token), the server its own process.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Level:
    """One concurrency level: n streams started together."""

    streams: int
    tokens_per_s: float  # all streams' tokens / the level's wall time
    per_stream_tokens_per_s: float  # median of each stream's tokens / its own time
    ttft_p50_ms: float
    ttft_max_ms: float
    gap_p50_ms: float  # between one streamed piece and the next
    gap_p99_ms: float
    server_cpu_ms_per_token: float  # the server process's user + system CPU time over the level / its tokens


@dataclass
class ServeBench:
    model: str
    tokens: int
    levels: list[Level] = field(default_factory=list)
    soak_s: float = 0.0
    soak_requests: int = 0
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    rss_every_minute_mb: list[float] = field(default_factory=list)
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def to_dict(self) -> dict:
        return asdict(self)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of a process (Linux /proc), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_stream(client: httpx.Client, url: str, model: str, tokens: int, seed: int) -> tuple[float, list[float], int, float]:
    """(time to first piece, gaps between pieces, tokens, seconds) of one streamed completion."""
    body = {"model": model, "prompt": "Once upon a time", "max_tokens": tokens, "stream": True, "seed": seed,
            "ignore_eos": True, "stream_options": {"include_usage": True}}  # fmt: skip
    start = time.perf_counter()
    arrivals, count = [], 0
    with client.stream("POST", url + "/v1/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                count = chunk["usage"]["completion_tokens"]
            elif chunk["choices"] and chunk["choices"][0]["text"]:
                arrivals.append(time.perf_counter())
    end = time.perf_counter()
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    return (arrivals[0] - start if arrivals else end - start), gaps, count, end - start


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_level(client: httpx.Client, url: str, model: str, n: int, tokens: int, pid: int) -> Level:
    start, cpu = time.perf_counter(), cpu_seconds(pid)
    with ThreadPoolExecutor(n) as pool:
        runs = list(pool.map(lambda i: one_stream(client, url, model, tokens, i), range(n)))
    wall, cpu = time.perf_counter() - start, cpu_seconds(pid) - cpu
    total = sum(c for _, _, c, _ in runs)
    gaps = [g for _, gs, _, _ in runs for g in gs]
    ttfts = [t for t, _, _, _ in runs]
    return Level(
        streams=n,
        tokens_per_s=total / wall,
        per_stream_tokens_per_s=statistics.median(c / s for _, _, c, s in runs),
        ttft_p50_ms=1000 * statistics.median(ttfts),
        ttft_max_ms=1000 * max(ttfts),
        gap_p50_ms=1000 * percentile(gaps, 0.5),
        gap_p99_ms=1000 * percentile(gaps, 0.99),
        server_cpu_ms_per_token=1000 * cpu / max(total, 1),
    )


def soak(
    client: httpx.Client, url: str, model: str, clients: int, seconds: float, tokens: int, pid: int, rss: list[float]
) -> int:
    """clients threads asking for stories in a loop for seconds (the server's RSS appended to rss every minute);
    returns how many finished."""
    done, stop = [0], time.monotonic() + seconds
    lock = threading.Lock()

    def watch() -> None:
        while time.monotonic() + 60 < stop:
            time.sleep(60)
            rss.append(round(rss_mb(pid), 1))

    def loop(i: int) -> None:
        while time.monotonic() < stop:
            one_stream(client, url, model, tokens, i)
            with lock:
                done[0] += 1

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(loop, range(clients)))
    watcher.join()
    return done[0]


def start_server(model: str | None, port: int, max_batch: int, extra: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "helium_tui.cli", "serve", "--port", str(port), "--max-batch", str(max_batch), *extra]
    cmd += ["--model", model] if model else []
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stderr.readline()
    if "serving" not in line:
        proc.kill()
        raise ValueError(f"the server did not start: {line.strip() or proc.stderr.read().strip()}")
    return proc


def bench_serve(
    model: str | None, streams: list[int], tokens: int, soak_s: float, extra: list[str]
) -> ServeBench:
    """Start a server, measure each level, optionally soak; the server is stopped whatever happens."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(model, port, max(max(streams), 16 if soak_s else 1), extra)
    client = httpx.Client(limits=httpx.Limits(max_connections=128, max_keepalive_connections=128))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                name = httpx.get(url + "/v1/models").json()["data"][0]["id"]
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise ValueError("the server did not answer in 60 s") from None
                time.sleep(0.2)
        one_stream(client, url, name, 8, 0)  # warm-up
        report = ServeBench(name, tokens)
        report.levels = [run_level(client, url, name, n, tokens, proc.pid) for n in streams]
        if soak_s:
            report.rss_start_mb = rss_mb(proc.pid)
            report.soak_requests = soak(client, url, name, 16, soak_s, tokens, proc.pid, report.rss_every_minute_mb)
            report.soak_s, report.rss_end_mb = soak_s, rss_mb(proc.pid)
        report.load_average = os.getloadavg()
        return report
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
