"""The HTTP API, in-process through BentoML's ASGI app: what a client sends and gets
back from /sample, /interpolate, /model, the docs and the page, and how every kind of
bad input is refused (4xx naming the field, never 5xx)."""

from __future__ import annotations

import base64
import io
import random

import numpy as np
import pytest
from PIL import Image

from models.latent import MAX_SEED, latent_from_seed


def png_pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


# --- /sample ------------------------------------------------------------------------

def test_sample_returns_pngs_with_their_seeds_and_labels(client):
    response = client.post("/sample", json={"n": 4, "seed": 3})
    assert response.status_code == 200
    body = response.json()
    assert body["seed"] == 3 and body["seeds"] == [3, 4, 5, 6]
    assert body["labels"] == [3, 4, 5, 6], "a conditional model draws class seed % 10"
    assert body["shape"] == [1, 16, 16]
    assert body["model"] == {"name": "tiny", "version": "file", "step": 42}
    pixels = [png_pixels(b) for b in body["images"]]
    assert all(p.shape == (16, 16) and p.dtype == np.uint8 for p in pixels)
    assert len({p.tobytes() for p in pixels}) == 4


def test_the_same_request_gives_the_same_bytes_and_a_seed_the_same_image_whatever_n(client):
    first = client.post("/sample", json={"n": 4, "seed": 10})
    again = client.post("/sample", json={"n": 4, "seed": 10})
    assert first.content == again.content
    alone = client.post("/sample", json={"n": 1, "seed": 12}).json()
    assert alone["images"][0] == first.json()["images"][2]


def test_requests_bigger_than_a_batch_give_the_same_images(client):
    big = client.post("/sample", json={"n": 100, "seed": 0}).json()["images"]  # batches: 64
    tail = client.post("/sample", json={"n": 36, "seed": 64}).json()["images"]
    assert len(big) == 100 and big[64:] == tail


def test_without_a_seed_a_random_one_is_returned_and_replays(client):
    drawn = client.post("/sample", json={"n": 2}).json()
    replay = client.post("/sample", json={"n": 2, "seed": drawn["seed"]}).json()
    assert replay["images"] == drawn["images"]


def test_sample_as_one_png_grid(client):
    response = client.post("/sample", json={"n": 6, "seed": 0, "format": "png", "columns": 3})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.headers["x-seed"] == "0"
    grid = Image.open(io.BytesIO(response.content))
    assert grid.size == (3 * 18 + 2, 2 * 18 + 2)  # 16-pixel tiles, 2-pixel padding
    tiles = client.post("/sample", json={"n": 6, "seed": 0}).json()["images"]
    np.testing.assert_array_equal(np.asarray(grid)[2:18, 20:36], png_pixels(tiles[1]))


def test_sample_as_float_arrays_matches_the_pngs(client):
    arrays = client.post("/sample", json={"n": 2, "seed": 7, "format": "array"}).json()
    images = np.asarray(arrays["images"], np.float32)
    assert arrays["shape"] == [2, 1, 16, 16] and images.shape == (2, 1, 16, 16)
    assert images.min() >= -1 and images.max() <= 1
    pngs = client.post("/sample", json={"n": 2, "seed": 7}).json()["images"]
    expected = np.clip(np.rint((images[0, 0] + 1) * 127.5), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(png_pixels(pngs[0]), expected)


def test_label_and_truncation_change_the_images(client):
    plain = client.post("/sample", json={"n": 3, "seed": 0}).json()
    sevens = client.post("/sample", json={"n": 3, "seed": 0, "label": 7}).json()
    assert sevens["labels"] == [7, 7, 7] and sevens["images"] != plain["images"]
    truncated = client.post("/sample", json={"n": 3, "seed": 0, "truncation": 0.5}).json()
    assert truncated["images"] != plain["images"]


# --- /interpolate -------------------------------------------------------------------

def test_interpolation_frames_start_and_end_at_the_samples_of_the_seeds(client):
    body = client.post("/interpolate", json={"start": 1, "end": 2, "steps": 6}).json()
    assert len(body["frames"]) == 6 and body["method"] == "slerp"
    assert body["labels"] == [1, 1, 1, 2, 2, 2], "each end keeps its class, switching halfway"
    one = client.post("/sample", json={"n": 1, "seed": 1}).json()["images"][0]
    two = client.post("/sample", json={"n": 1, "seed": 2}).json()["images"][0]
    assert body["frames"][0] == one and body["frames"][-1] == two
    paths = {
        method: np.asarray(client.post("/interpolate", json={
            "start": 1, "end": 2, "steps": 6, "method": method, "format": "array"}).json()["latents"])
        for method in ("slerp", "lerp")
    }
    np.testing.assert_array_equal(paths["slerp"][[0, -1]], paths["lerp"][[0, -1]])
    norms = {m: np.linalg.norm(p[2]) for m, p in paths.items()}
    assert norms["lerp"] < norms["slerp"], "a straight line cuts inside the Gaussian shell"


def test_interpolation_from_latent_vectors_with_a_label(client):
    start = latent_from_seed(5, 8).tolist()
    body = client.post("/interpolate", json={"start": start, "end": 6, "steps": 3, "label": 5}).json()
    assert body["labels"] == [5, 5, 5]
    sample = client.post("/sample", json={"n": 1, "seed": 5, "label": 5}).json()["images"][0]
    assert body["frames"][0] == sample


def test_interpolation_as_strip_gif_and_arrays(client):
    strip = client.post("/interpolate", json={"start": 1, "end": 2, "steps": 5, "format": "png"})
    assert strip.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(strip.content)).size == (5 * 18 + 2, 18 + 2)
    gif = client.post("/interpolate", json={"start": 1, "end": 2, "steps": 5, "format": "gif"})
    assert gif.headers["content-type"] == "image/gif"
    animation = Image.open(io.BytesIO(gif.content))
    assert animation.n_frames == 5 and animation.size == (16, 16)
    arrays = client.post("/interpolate", json={"start": 1, "end": 2, "steps": 5, "format": "array"}).json()
    assert arrays["shape"] == [5, 1, 16, 16]
    np.testing.assert_allclose(arrays["latents"][0], latent_from_seed(1, 8), rtol=0, atol=0)
    np.testing.assert_allclose(arrays["latents"][-1], latent_from_seed(2, 8), rtol=0, atol=0)


# --- /model, docs, page ---------------------------------------------------------------

def test_model_reports_card_providers_and_limits(client):
    info = client.get("/model").json()
    assert info["ready"] and info["name"] == "tiny" and info["file"] == "tiny.onnx"
    assert info["providers"] == ["CPUExecutionProvider"]
    assert info["card"]["model"]["nz"] == 8
    limits = info["limits"]
    assert limits["max_n"] >= 64 and limits["max_steps"] >= 16
    assert limits["label_range"] == [0, 9] and limits["max_body_bytes"] > 0
    assert info["batching"]["enabled"] and info["auth_required"] is False


def test_openapi_document_has_both_endpoints_with_examples_and_limits(client):
    spec = client.get("/docs.json").json()

    def request_schema(path: str) -> dict:
        ref = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        return spec["components"]["schemas"][ref["$ref"].rsplit("/", 1)[1]]

    sample = request_schema("/sample")
    assert sample["example"]["n"] == 16
    assert sample["properties"]["n"]["maximum"] == 128
    assert "example" in request_schema("/interpolate")
    assert client.get("/docs").status_code == 200


def test_the_page_and_its_assets_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="slider"' in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200


# --- bad input ----------------------------------------------------------------------

BAD_SAMPLES = [
    ({"n": 0}, "n", "from 1 to 128"),
    ({"n": 1000}, "n", "from 1 to 128"),
    ({"n": "3"}, "n", "integer"),
    ({"n": 2.5}, "n", "integer"),
    ({"seed": -1}, "seed", f"from 0 to {MAX_SEED}"),
    ({"seed": 2**64}, "seed", f"from 0 to {MAX_SEED}"),
    ({"seed": MAX_SEED, "n": 2}, "seed", "must not exceed"),
    ({"truncation": 0}, "truncation", "from 0.05 to 4.0"),
    ({"truncation": 100}, "truncation", "from 0.05 to 4.0"),
    ({"label": 10}, "label", "from 0 to 9"),
    ({"label": -1}, "label", "from 0"),
    ({"format": "bmp"}, "format", "json, png, array"),
    ({"columns": 0}, "columns", "from 1"),
    ({"count": 3}, "count", "unknown field"),
]

BAD_WALKS = [
    ({"end": 2}, "start", "required"),
    ({"start": "abc", "end": 2}, "start", "a seed"),
    ({"start": 1.5, "end": 2}, "start", "a seed"),
    ({"start": [0.1, 0.2], "end": 2, "label": 1}, "start", "exactly 8 numbers"),
    ({"start": [0.1] * 8, "end": 2}, "label", "required"),
    ({"start": 1, "end": [0.1] * 5000}, "end", "up to 4096"),
    ({"start": 1, "end": 2, "steps": 1}, "steps", "from 2 to 64"),
    ({"start": 1, "end": 2, "steps": 1000}, "steps", "from 2 to 64"),
    ({"start": 1, "end": 2, "method": "cubic"}, "method", "slerp, lerp"),
    ({"start": 1, "end": 2, "format": "mp4"}, "format", "frames, png, gif, array"),
]


@pytest.mark.parametrize("body,field,says", BAD_SAMPLES, ids=[f"sample-{b}" for b, _, _ in BAD_SAMPLES])
def test_bad_sample_requests_name_the_field_and_the_range(client, body, field, says):
    response = client.post("/sample", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert field in error and says in error, error


@pytest.mark.parametrize("body,field,says", BAD_WALKS, ids=[f"walk-{i}" for i in range(len(BAD_WALKS))])
def test_bad_interpolations_name_the_field_and_the_range(client, body, field, says):
    response = client.post("/interpolate", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert field in error and says in error, error


@pytest.mark.parametrize("raw,field", [
    (b'{"truncation": NaN}', "truncation"),
    (b'{"start": [NaN, 0, 0, 0, 0, 0, 0, 0], "end": 1, "label": 0}', "start"),
    (b'{"start": [Infinity, 0, 0, 0, 0, 0, 0, 0], "end": 1, "label": 0}', "start"),
])
def test_non_finite_numbers_are_refused(client, raw, field):
    path = "/sample" if b"truncation" in raw else "/interpolate"
    response = client.post(path, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400 and field in response.json()["error"]


@pytest.mark.parametrize("content,headers,status", [
    (b"{not json", {"content-type": "application/json"}, 400),
    (b"[1, 2]", {"content-type": "application/json"}, 400),
    (b"[" * 50000 + b"]" * 50000, {"content-type": "application/json"}, 413),
    (b"[" * 20000 + b"]" * 20000, {"content-type": "application/json"}, 400),
    (b'{"n": 1}', {"content-type": "text/plain"}, 415),
    (b"x" * (64 * 1024 + 1), {"content-type": "application/json"}, 413),
])
def test_malformed_bodies_are_refused_before_any_work(client, content, headers, status):
    response = client.post("/sample", content=content, headers=headers)
    assert response.status_code == status, response.text
    assert "request body" in response.json()["error"]


def test_a_body_streamed_without_length_is_still_bounded(client):
    def chunks():
        for _ in range(100):
            yield b" " * 1024

    response = client.post("/sample", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_random_garbage_never_gets_a_5xx(client):
    rng = random.Random(0)
    values = [None, True, -1, 0, 1, 2**70, 1e308, -0.0, "", "x", [], [1], {}, {"a": 1}, [[1]]]
    fields = ["n", "seed", "truncation", "label", "format", "columns", "start", "end",
              "steps", "method"]
    for _ in range(150):
        body = {rng.choice(fields): rng.choice(values) for _ in range(rng.randint(1, 4))}
        for path in ("/sample", "/interpolate"):
            response = client.post(path, json=body)
            assert response.status_code < 500, (path, body, response.text)


def test_wrong_methods_and_paths_are_4xx(client):
    assert client.get("/sample").status_code == 405
    assert client.post("/nowhere", json={}).status_code == 404
