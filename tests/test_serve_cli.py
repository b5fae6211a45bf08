"""`helium serve` as a user runs it: a startup line naming the address and model, requests, a clean SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(bundle) -> tuple[subprocess.Popen, int, str]:
    """`helium serve` on a free port, answering: the process, its port and its first stderr line."""
    port = free_port()
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "helium_tui.cli", "serve", "--model", str(bundle), "--port", str(port),
           "--device", "cpu", "--threads", "1"]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    line = proc.stderr.readline()
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/v1/models")
            return proc, port, line
        except httpx.ConnectError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise AssertionError(f"the server did not answer: {line}{proc.stderr.read()}") from None
            time.sleep(0.1)


@pytest.mark.slow
def test_serve_starts_says_where_and_stops_cleanly_on_sigterm(tiny_bundle):
    proc, port, line = start_serve(tiny_bundle)
    try:
        assert "serving tiny-bundle" in line and f"http://127.0.0.1:{port}" in line, line
        r = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json={"model": "tiny-bundle", "prompt": "Tom", "max_tokens": 3})
        assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] > 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        rest = proc.stderr.read()
        assert "server stopped" in rest and "Traceback" not in rest
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_sigterm_mid_story_answers_503_and_logs_no_error(tiny_bundle):
    proc, port, _ = start_serve(tiny_bundle)
    answers: list[httpx.Response] = []
    long = {"model": "tiny-bundle", "prompt": "Tom", "max_tokens": 32_000, "ignore_eos": True}
    asker = threading.Thread(target=lambda: answers.append(httpx.post(
        f"http://127.0.0.1:{port}/v1/completions", json=long, timeout=30)))  # fmt: skip
    try:
        asker.start()
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        asker.join(timeout=20)
        rest = proc.stderr.read()
        assert answers and answers[0].status_code == 503, answers and answers[0].text
        assert "stopped" in answers[0].json()["error"]["message"]
        assert "failed" not in rest and "ERROR" not in rest and "Traceback" not in rest, rest
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_bench_serve_measures_each_level(tiny_bundle):
    from benchmarks.serve import bench_serve

    r = bench_serve(str(tiny_bundle), [1, 2], 6, soak_s=1, extra=["--device", "cpu", "--threads", "1"])
    assert [lv.streams for lv in r.levels] == [1, 2] and r.model == "tiny-bundle"
    assert all(lv.tokens_per_s > 0 and lv.ttft_p50_ms > 0 for lv in r.levels)
    # the server's CPU comes from /proc in clock ticks (10 ms): a level this small may cost less than one
    assert all(lv.server_cpu_ms_per_token >= 0 for lv in r.levels)
    assert r.soak_requests > 0 and r.rss_end_mb > 0
