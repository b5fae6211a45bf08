"""`helium serve --studio`: the Textual studio in a real headless browser (Debian's Chromium), with a screenshot.

Chromium is driven over the DevTools protocol: it opens the page, textual-serve starts a studio for the tab,
and the test waits until the page shows more than the loading splash, then keeps the screenshot
(tests' tmp dir, or $HELIUM_TEST_ARTIFACTS when set).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("textual_serve")
aiohttp = pytest.importorskip("aiohttp")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium)")
ROOT = Path(__file__).resolve().parents[1]
SPLASH_BYTES = 20_000  # textual-serve's loading page is a ~11 KB PNG; the studio far more


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            assert time.monotonic() < deadline, f"{url} did not answer"
            time.sleep(0.2)


async def screenshot_when_drawn(debug_port: int, url: str, seconds: float) -> bytes:
    """Open url in the browser and return a PNG once the page shows more than the splash."""
    async with aiohttp.ClientSession() as http:
        targets = await (await http.get(f"http://127.0.0.1:{debug_port}/json")).json()
        page = next(t for t in targets if t["type"] == "page")
        async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            ids = iter(range(1, 1_000_000))

            async def call(method: str, **params) -> dict:
                n = next(ids)
                await ws.send_str(json.dumps({"id": n, "method": method, "params": params}))
                async for msg in ws:
                    data = json.loads(msg.data)
                    if data.get("id") == n:
                        return data.get("result", {})
                raise RuntimeError("the browser closed the connection")

            await call("Page.navigate", url=url)
            deadline, png = time.monotonic() + seconds, b""
            while time.monotonic() < deadline:
                await asyncio.sleep(2)
                png = base64.b64decode((await call("Page.captureScreenshot", format="png"))["data"])
                if len(png) > SPLASH_BYTES:
                    await asyncio.sleep(3)  # let the studio finish its first layout
                    return base64.b64decode((await call("Page.captureScreenshot", format="png"))["data"])
            return png


@pytest.mark.slow
def test_the_studio_runs_in_a_headless_browser(tmp_path, tiny_bundle):
    port, debug_port = free_port(), free_port()
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen([sys.executable, "-m", "helium_tui.cli", "serve", "--studio", "--port", str(port),
                               "--model", str(tiny_bundle)], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    browser = subprocess.Popen([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,800",
                                "--hide-scrollbars", f"--remote-debugging-port={debug_port}",
                                f"--user-data-dir={tmp_path / 'chromium'}", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        assert "serving the studio on http://127.0.0.1:" in server.stderr.readline()
        wait_http(f"http://127.0.0.1:{port}/", 30)
        wait_http(f"http://127.0.0.1:{debug_port}/json", 30)
        png = asyncio.run(screenshot_when_drawn(debug_port, f"http://127.0.0.1:{port}/", 90))
        out = Path(os.environ.get("HELIUM_TEST_ARTIFACTS", tmp_path)) / "studio-browser.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(png)
        assert png.startswith(b"\x89PNG") and len(png) > SPLASH_BYTES, f"only the loading page: {out}"
    finally:
        browser.kill()
        server.send_signal(signal.SIGINT)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


def test_the_studio_is_not_served_beyond_loopback_without_no_auth():
    from typer.testing import CliRunner

    from helium_tui.cli import app

    r = CliRunner().invoke(app, ["serve", "--studio", "--host", "0.0.0.0"])
    assert r.exit_code == 2 and "add --no-auth" in r.output
    r = CliRunner().invoke(app, ["serve", "--studio", "--api-key", "k"])
    assert r.exit_code == 2 and "no API key check" in r.output
