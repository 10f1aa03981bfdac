"""The web page at / in a real headless Chromium, driven over the DevTools protocol
against a real `bentoml serve`: it draws a grid of samples for a seed, its slider walks
between two seeds (ending on their own samples), it reuses an answer it has already
had (asking with its ETag: 304), it shows refusals, and it throws no JavaScript error."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
from test_service_runtime import export_tiny
from test_service_server import BentoServer, metric

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian package `chromium`)")


class Browser:
    """A headless Chromium and one page, spoken to over the DevTools protocol."""

    def __init__(self, profile: Path) -> None:
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-extensions", "--disable-dev-shm-usage", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.profile = profile
        self.errors: list[str] = []
        self._next_id = 0

    async def connect(self, session: aiohttp.ClientSession) -> None:
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.time() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            assert time.time() < deadline and self.proc.poll() is None, "chromium did not start"
            await asyncio.sleep(0.1)
        port = port_file.read_text().split()[0]
        async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
            pages = [t for t in await response.json() if t["type"] == "page"]
        self.ws = await session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)
        for domain in ("Page", "Runtime", "Log"):
            await self.send(f"{domain}.enable")

    async def send(self, method: str, **params) -> dict:
        self._next_id += 1
        await self.ws.send_str(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:
            message = json.loads((await self.ws.receive()).data)
            if message.get("id") == self._next_id:
                assert "error" not in message, message
                return message.get("result", {})
            self._note(message)

    def _note(self, event: dict) -> None:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            self.errors.append(json.dumps(params["exceptionDetails"])[:500])
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append(json.dumps(params.get("args"))[:500])
        elif (method == "Log.entryAdded" and params["entry"]["level"] == "error"
              and params["entry"].get("source") != "network"):  # the 400 below is on purpose
            self.errors.append(params["entry"].get("text", "")[:500])

    async def js(self, expression: str):
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                                 awaitPromise=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        # Until the page has loaded, the elements the expression reads may not exist yet.
        guarded = f"(() => {{ try {{ return {expression}; }} catch (e) {{ return false; }} }})()"
        while not await self.js(guarded):
            assert time.time() < deadline, f"timed out waiting for: {expression}"
            await asyncio.sleep(0.1)

    @classmethod
    def run(cls, profile: Path, scenario, timeout: float) -> list[str]:
        """Start a browser, run `scenario(browser)` (a coroutine function) within
        `timeout` seconds, close it; returns the page's errors."""
        browser = cls(profile)
        try:
            asyncio.run(asyncio.wait_for(scenario(browser), timeout=timeout))
        finally:
            browser.close()
        return browser.errors

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


GRID_READY = """(() => {
  const imgs = [...document.querySelectorAll('#grid img')];
  return imgs.length === 16 && imgs.every(i => i.complete && i.naturalWidth === 16);
})()"""
WALK_READY = """!document.getElementById('slider').disabled
  && document.getElementById('frame').complete
  && document.getElementById('frame').naturalWidth === 16"""


VISIBLE = "document.getElementById('{}').getBoundingClientRect().width > 0"


def _slide_to(k: int) -> str:
    return f"""(() => {{ const s = document.getElementById('slider'); s.value = {k};
      s.dispatchEvent(new Event('input')); return document.getElementById('frame').src; }})()"""


PLAIN_QUALITY = {"fd_ratio": 1.309, "fd2_ratio": 2.003, "precision": 0.862, "precision_floor": 0.961,
                 "precision2": 0.877, "precision2_floor": 0.958, "recall": 0.957,
                 "recall_floor": 0.963, "recall2": 0.973, "recall2_floor": 0.957}


@pytest.fixture(scope="module")
def page_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("page-model")
    model = export_tiny(folder / "tiny.onnx")
    plain = export_tiny(folder / "plain.onnx", num_classes=0)
    from training.export import read_card, rewrite_card

    card = read_card(plain)  # figures as an export measures them, for the model line
    card.quality = {**card.quality, **PLAIN_QUALITY}
    rewrite_card(plain, card)
    server = BentoServer(tmp_path_factory.mktemp("page-home"), DCGAN_MODELS=f"{model},{plain}")
    try:
        server.wait()
        yield server
    finally:
        server.stop()


def test_grid_slider_and_errors_in_a_real_browser(page_server, tmp_path):
    async def scenario(browser: Browser) -> None:
        async with aiohttp.ClientSession() as session:
            await browser.connect(session)
            await browser.send("Page.navigate", url=page_server.url + "/")
            await browser.wait_for(GRID_READY)
            assert await browser.js("[...document.getElementById('model').options].map(o => o.value)") \
                == ["tiny", "plain"]
            assert await browser.js("document.getElementById('model').value") == "tiny"
            assert "10 classes" in await browser.js("document.getElementById('model-line').textContent")
            assert await browser.js(VISIBLE.format("label-box")) is True
            seeds = await browser.js("[...document.querySelectorAll('#grid img')].map(i => i.alt)")
            assert seeds == [f"seed {k}" for k in range(16)]

            # The walk goes from seed 1 to seed 2: its ends are those seeds' grid images.
            await browser.wait_for(WALK_READY)
            assert await browser.js("document.getElementById('slider').max") == "15"
            grid_src = "document.querySelector('#grid img[data-seed=\"{}\"]').src"
            assert await browser.js(_slide_to(0)) == await browser.js(grid_src.format(1))
            assert await browser.js(_slide_to(15)) == await browser.js(grid_src.format(2))
            await browser.js(_slide_to(7))
            assert "frame 8 / 16" in await browser.js("document.getElementById('frame-label').textContent")

            # Another seed redraws the grid.
            await browser.js("document.getElementById('seed').value = 100; "
                             "document.querySelector('#sample-form button[type=submit]').click()")
            await browser.wait_for("document.querySelector('#grid img').alt === 'seed 100'")

            # The class selector goes with a conditional model; another model redraws.
            await browser.js("document.getElementById('label').value = '7'; "
                             "document.querySelector('#sample-form button[type=submit]').click()")
            await browser.wait_for("document.querySelector('#grid img').title.endsWith('class 7')")
            await browser.js("const m = document.getElementById('model'); m.value = 'plain'; "
                             "m.dispatchEvent(new Event('change'))")
            await browser.wait_for("document.getElementById('grid').dataset.model === 'plain'")
            await browser.wait_for(GRID_READY)
            assert await browser.js(VISIBLE.format("label-box")) is False, "no classes to pick"
            assert await browser.js("document.getElementById('label').value") == ""
            line = await browser.js("document.getElementById('model-line').textContent")
            assert "unconditional" in line
            # the card's figures in both feature networks, each beside real digits' own
            assert ("FD ratio 1.31 / 2.00 (real: 1), precision 0.86 / 0.88 (real: 0.96 / 0.96), "
                    "recall 0.96 / 0.97 (real: 0.96 / 0.96)") in line
            assert await browser.js("document.querySelector('#grid img').title") == "seed 100"

            # The same grid again: the page asks with the ETag it kept and reuses its copy.
            await browser.js("document.getElementById('status').textContent = ''; "
                             "document.querySelector('#sample-form button[type=submit]').click()")
            await browser.wait_for("document.getElementById('status').textContent.startsWith('plain')")
            assert await browser.js("document.querySelector('#grid img').title") == "seed 100"
            assert metric(page_server.metrics(), "dcgan_requests_total", endpoint="sample",
                          model="plain", code="304") == 1

            # A request the server refuses (a seed past 2**63 - 1) shows its message.
            await browser.js("document.getElementById('seed').value = '99999999999999999999'; "
                             "document.querySelector('#sample-form button[type=submit]').click()")
            await browser.wait_for("document.getElementById('status').className === 'error'")
            status = await browser.js("document.getElementById('status').textContent")
            assert "seed must be an integer from 0 to 9223372036854775807" in status
            await browser.ws.close()

    errors = Browser.run(tmp_path / "profile", scenario, timeout=120)
    assert errors == [], errors
