"""The latent space through a real `bentoml serve` on loopback: a multipart upload to
/project over HTTP, and the page in a real headless Chromium, where a person draws two
digits, sees their reconstructions, walks between them and moves a seed along the
SeFa directions (no JavaScript error on the way)."""

from __future__ import annotations

import base64
import os

import aiohttp
import httpx
import pytest
from latent_fixtures import digit_png, export_latent_model
from test_service_page import CHROMIUM, Browser
from test_service_server import BentoServer


@pytest.fixture(scope="module")
def latent_server(tmp_path_factory):
    model = export_latent_model(tmp_path_factory.mktemp("latent-page") / "tiny.onnx")
    server = BentoServer(tmp_path_factory.mktemp("latent-home"), DCGAN_MODEL=str(model))
    try:
        server.wait()
        yield server
    finally:
        server.stop()


def test_a_multipart_upload_over_http(latent_server):
    files = [("images", ("a.png", digit_png(0), "image/png")),
             ("images", ("b.jpg", digit_png(1, invert=True, size=90, mode="RGB"), "image/png"))]
    upload = httpx.post(latent_server.url + "/project", files=files, data={"search": "3"}, timeout=60)
    assert upload.status_code == 200, upload.text
    as_json = httpx.post(latent_server.url + "/project", timeout=60, json={
        "images": [base64.b64encode(data).decode() for _, (_, data, _) in files], "search": 3})
    assert upload.json()["latents"] == as_json.json()["latents"]
    bomb = httpx.post(latent_server.url + "/project", timeout=60,
                      files=[("images", ("x.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, "image/png"))])
    assert bomb.status_code == 400 and "images[0]" in bomb.json()["error"]


STROKES = {  # (x, y) points on a 168-pixel pad: a one and a zero
    "pad-a": [(84, 30), (84, 60), (84, 100), (84, 140)],
    "pad-b": [(84, 30), (120, 50), (130, 90), (115, 130), (84, 142), (52, 128), (38, 90), (50, 48), (84, 30)],
}


async def draw(browser: Browser, pad: str, points) -> None:
    box = await browser.js(f"(() => {{ const r = document.getElementById('{pad}').getBoundingClientRect();"
                           " return [r.left, r.top]; })()")
    for kind, (x, y) in [("mousePressed", points[0]), *[("mouseMoved", p) for p in points[1:]],
                         ("mouseReleased", points[-1])]:
        await browser.send("Input.dispatchMouseEvent", type=kind, x=box[0] + x, y=box[1] + y,
                           button="left", buttons=1 if kind != "mouseReleased" else 0, clickCount=1)


MORPH_READY = """!document.getElementById('morph-slider').disabled
  && document.getElementById('morph-frame').complete
  && document.getElementById('morph-frame').naturalWidth === 16"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian package `chromium`)")
def test_draw_two_digits_walk_between_them_and_slide_directions(latent_server, tmp_path):
    async def scenario(browser: Browser) -> None:
        async with aiohttp.ClientSession() as session:
            await browser.connect(session)
            await browser.send("Emulation.setDeviceMetricsOverride", width=1000, height=1500,
                               deviceScaleFactor=1, mobile=False)
            await browser.send("Page.navigate", url=latent_server.url + "/")
            await browser.wait_for("!document.getElementById('project-section').hidden")
            await browser.wait_for("document.querySelectorAll('#direction-sliders input').length === 4")
            await browser.wait_for("document.getElementById('edit-frame').naturalWidth === 16")
            for pad, points in STROKES.items():
                await browser.js(f"document.getElementById('{pad}').scrollIntoView()")
                await draw(browser, pad, points)
            inked = await browser.js("""[...document.querySelectorAll('.pad')].map(p => {
                const d = p.getContext('2d').getImageData(0, 0, p.width, p.height).data;
                let n = 0; for (let i = 0; i < d.length; i += 4) n += d[i] > 128; return n; })""")
            assert all(n > 300 for n in inked), f"the strokes drew on both pads: {inked}"

            await browser.js("document.querySelector('#project-form button[type=submit]').click()")
            await browser.wait_for(MORPH_READY)
            captions = await browser.js("[...document.querySelectorAll('#projections figcaption')]"
                                        ".map(c => c.textContent)")
            assert len(captions) == 4 and "reconstruction (RMS" in captions[1]
            # the walk starts at the first reconstruction and ends at the second
            recon = await browser.js("[...document.querySelectorAll('#projections img')].map(i => i.src)")
            slide = """(k => { const s = document.getElementById('morph-slider'); s.value = k;
                s.dispatchEvent(new Event('input')); return document.getElementById('morph-frame').src; })"""
            assert await browser.js(f"{slide}(0)") == recon[1]
            assert await browser.js(f"{slide}(15)") == recon[3]

            # a direction slider redraws the edited image
            before = await browser.js("document.getElementById('edit-frame').src")
            await browser.js("""(() => { const s = document.getElementById('slider-sefa0'); s.value = 4;
                s.dispatchEvent(new Event('change')); })()""")
            await browser.wait_for(f"document.getElementById('edit-frame').src !== {before!r}")
            assert "sefa0 +4" in await browser.js("document.getElementById('edit-label').textContent")
            await browser.js(f"{slide}(7)")
            shot = await browser.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
            (tmp_path / "page.png").write_bytes(base64.b64decode(shot["data"]))
            if os.environ.get("SCREENSHOT_DIR"):  # to look at it
                path = os.path.join(os.environ["SCREENSHOT_DIR"], "latent-page.png")
                (tmp_path / "page.png").replace(path)
            await browser.ws.close()

    errors = Browser.run(tmp_path / "profile", scenario, timeout=180)
    assert errors == [], errors
