"""The latent-space endpoints in-process (BentoML's ASGI app, real ONNX Runtime): what a
client sends to /project, /edit, /combine and /directions and gets back, how every kind
of bad picture or request is refused (4xx naming the field and the limit, never 5xx),
(models without sidecars, or with another model's: tests/test_latent_sidecars.py)."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from latent_fixtures import NZ, digit_png, export_latent_model
from PIL import Image
from test_service_runtime import serving_app


@pytest.fixture(scope="module")
def latent_model(tmp_path_factory):
    return export_latent_model(tmp_path_factory.mktemp("latent") / "tiny.onnx")


@pytest.fixture(scope="module")
def api(latent_model):
    with pytest.MonkeyPatch.context() as monkeypatch:
        with serving_app(monkeypatch, latent_model) as client:
            assert client.get("/model").json()["ready"]
            yield client


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def pixels(text: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))))


def refused(response, status: int, field: str, *says: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["detail"][0]["loc"] == [field] if field else True, body
    assert field in body["error"], body
    for words in says:
        assert words in body["error"], body


# --- /project ------------------------------------------------------------------------------

def test_project_gives_latents_reconstructions_and_distances(api):
    body = api.post("/project", json={"images": [b64(digit_png(0)), b64(digit_png(1))]}).json()
    assert np.asarray(body["latents"]).shape == (2, NZ)
    assert [pixels(p).shape for p in body["reconstructions"]] == [(16, 16)] * 2
    # the reconstruction is the generator's image of the latent: /combine of it alone
    again = api.post("/combine", json={"terms": [{"latent": body["latents"][1]}]}).json()
    assert again["image"] == body["reconstructions"][1]
    # the distance is the RMS pixel difference between what the model saw and made
    seen, made = (pixels(p).astype(float) / 255 for p in (body["inputs"][0], body["reconstructions"][0]))
    assert body["distances"][0] == pytest.approx(np.sqrt(((seen - made) ** 2).mean()), abs=0.01)


def test_a_multipart_upload_gives_what_json_gives(api):
    as_json = api.post("/project", json={"images": [b64(digit_png(2)), b64(digit_png(3))],
                                         "search": 2}).json()
    upload = api.post("/project", files=[("images", ("a.png", digit_png(2), "image/png")),
                                         ("images", ("b.png", digit_png(3), "image/png"))],
                      data={"search": "2"})
    assert upload.status_code == 200, upload.text
    assert upload.json()["latents"] == as_json["latents"]


def test_search_never_makes_a_projection_worse_and_replays(api):
    image = b64(digit_png(4))
    first = api.post("/project", json={"images": [image], "search": 5}).json()
    again = api.post("/project", json={"images": [image], "search": 5}).json()
    assert first["latents"] == again["latents"], "the search is seeded"
    assert first["distances"][0] < first["search"]["distances_before"][0]


def test_pictures_are_converted_as_the_training_data_was(api):
    """A dark digit on white, bigger, in colour with alpha, is the same digit to the model."""
    plain = api.post("/project", json={"images": [b64(digit_png(5))]}).json()
    rgba = digit_png(5, invert=True, size=28, mode="RGBA")
    other = api.post("/project", json={"images": [b64(rgba)]}).json()
    assert other["inputs"] == plain["inputs"] and other["latents"] == plain["latents"]
    big = api.post("/project", json={"images": [b64(digit_png(5, invert=True, size=280))]}).json()
    diff = np.abs(pixels(big["inputs"][0]).astype(int) - pixels(plain["inputs"][0])).mean()
    assert diff < 12, "a 280x280 drawing of the digit comes out near the 28x28 one"
    kept = api.post("/project", json={"images": [b64(digit_png(5, invert=True))], "invert": "no",
                                      "fit": "crop"}).json()
    assert pixels(kept["inputs"][0]).mean() > 128, "invert=no keeps a light ground"


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with one tiny compressed row: what a
    decompression bomb looks like before it is decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("data, says", [
    (b"hello, not an image", "not a PNG or JPEG image"),
    (b"GIF89a" + b"\x00" * 40, "not a PNG or JPEG image"),
    (png_header(3000, 3000), "at most 4194304 pixels per image, got 3000x3000"),
    (png_header(50_000, 50_000), "at most 4194304 pixels per image"),
    (png_header(0, 0), "images[0]"),
], ids=["text", "gif", "bomb", "huge-bomb", "zero"])
def test_bad_pictures_are_refused_naming_the_field(api, data, says):
    refused(api.post("/project", json={"images": [b64(data)]}), 400, "images[0]", says)


def test_a_truncated_picture_is_refused(api):
    whole = digit_png(6, size=200)
    refused(api.post("/project", json={"images": [b64(digit_png(0)), b64(whole[: len(whole) // 2])]}),
            400, "images[1]", "truncated or corrupt")


@pytest.mark.parametrize("body, field, says", [
    ({"images": []}, "images", "a list of 1 to 16"),
    ({"images": ["aGVsbG8="] * 17}, "images", "a list of 1 to 16"),
    ({"images": ["!!!"]}, "images[0]", "not base64"),
    ({"images": ["aGVsbG8="], "search": 51}, "search", "from 0 to 50"),
    ({"images": ["aGVsbG8="], "fit": "stretch"}, "fit", "one of auto, digit, crop"),
    ({"images": ["aGVsbG8="], "colour": 1}, "colour", "unknown field"),
], ids=["none", "too-many", "base64", "search", "fit", "unknown"])
def test_bad_project_requests_name_the_field(api, body, field, says):
    refused(api.post("/project", json=body), 400, field, says)


def test_bad_uploads_are_refused(api):
    refused(api.post("/project", files=[("photo", ("a.png", digit_png(0), "image/png"))]),
            400, "photo", "name each picture images")
    refused(api.post("/project", files=[("images", ("a.png", digit_png(0), "image/png"))],
                     data={"search": "lots"}), 400, "search", "from 0 to 50")
    files = [("images", (f"{k}.png", digit_png(0), "image/png")) for k in range(17)]
    response = api.post("/project", files=files)
    refused(response, 400, "images", "1 to 16 pictures")
    refused(api.post("/project", content=b"x" * 100, headers={"content-type": "text/plain"}),
            415, "", "multipart/form-data")
    big = api.post("/project", content=b"x" * (8 * 1024 * 1024 + 1),
                   headers={"content-type": "application/json"})
    assert big.status_code == 413 and "at most 8388608 bytes" in big.json()["error"]


# --- /directions, /edit, /combine ---------------------------------------------------------

def test_directions_list_sefa_and_class_means(api):
    body = api.get("/directions").json()
    assert [d["name"] for d in body["sefa"]] == ["sefa0", "sefa1", "sefa2", "sefa3"]
    values = [d["eigenvalue"] for d in body["sefa"]]
    assert values == sorted(values, reverse=True)
    assert all(abs(np.linalg.norm(d["vector"]) - 1) < 1e-5 for d in body["sefa"])
    assert len(body["classes"]) == 10 and len(body["classes"][3]["mean"]) == NZ


def test_an_edit_moves_a_seed_along_a_direction(api):
    edit = api.post("/edit", json={"start": 5, "direction": "sefa1", "strengths": [-2, 0, 2],
                                   "format": "array"}).json()
    sample = api.post("/sample", json={"n": 1, "seed": 5, "format": "array"}).json()
    assert edit["images"][1] == sample["images"][0], "strength 0 is the seed's sample"
    vector = np.asarray(api.get("/directions").json()["sefa"][1]["vector"])
    latents = np.asarray(edit["latents"])
    np.testing.assert_allclose(latents[2] - latents[1], 2 * vector, atol=1e-5)
    frames = api.post("/edit", json={"start": 5, "direction": "sefa1", "strengths": [-2, 0, 2]}).json()
    strip = api.post("/edit", json={"start": 5, "direction": "sefa1", "strengths": [-2, 0, 2],
                                    "format": "png"})
    assert strip.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(strip.content)).size == (3 * 18 + 2, 20)
    assert frames["frames"][1] == api.post("/sample", json={"n": 1, "seed": 5}).json()["images"][0]


def test_a_class_edit_adds_the_difference_of_class_means(api):
    body = api.post("/edit", json={"start": 1, "from_class": 3, "to_class": 8,
                                   "strengths": [0, 1], "format": "array"}).json()
    classes = api.get("/directions").json()["classes"]
    step = np.asarray(body["latents"][1]) - np.asarray(body["latents"][0])
    np.testing.assert_allclose(step, np.subtract(classes[8]["mean"], classes[3]["mean"]), atol=1e-5)


def test_combine_sums_weighted_seeds_and_latents(api):
    seeds = [np.asarray(api.post("/edit", json={"start": s, "direction": "sefa0", "strengths": [0],
                                                "format": "array"}).json()["latents"][0])
             for s in (1, 2, 3)]
    body = api.post("/combine", json={"terms": [{"seed": 1}, {"seed": 2, "weight": -1},
                                                {"latent": seeds[2].tolist(), "weight": 0.5}]}).json()
    np.testing.assert_allclose(body["latent"], seeds[0] - seeds[1] + 0.5 * seeds[2], atol=1e-5)
    alone = api.post("/combine", json={"terms": [{"seed": 7}]}).json()
    assert alone["image"] == api.post("/sample", json={"n": 1, "seed": 7}).json()["images"][0]
    png = api.post("/combine", json={"terms": [{"seed": 7}], "format": "png"})
    assert png.content == base64.b64decode(alone["image"])


@pytest.mark.parametrize("path, body, status, field, says", [
    ("/edit", {"start": 1, "direction": "sefa9", "strengths": [1]}, 400, "direction",
     "one of sefa0, sefa1, sefa2, sefa3"),
    ("/edit", {"start": 1, "direction": "sefa0", "from_class": 1, "to_class": 2, "strengths": [1]},
     400, "direction", "either direction"),
    ("/edit", {"start": 1, "from_class": 1, "to_class": 10, "strengths": [1]}, 400, "to_class",
     "from 0 to 9"),
    ("/edit", {"start": 1, "direction": "sefa0", "strengths": []}, 400, "strengths", "1 to 64"),
    ("/edit", {"start": 1, "direction": "sefa0", "strengths": [1e9]}, 400, "strengths", "-100 to 100"),
    ("/edit", {"start": [0.5] * 3, "direction": "sefa0", "strengths": [1]}, 400, "start",
     f"exactly {NZ} numbers"),
    ("/edit", {"start": 1, "direction": "sefa0", "strengths": [1], "label": 2}, 400, "label",
     "not class-conditional"),
    ("/combine", {"terms": []}, 400, "terms", "1 to 16"),
    ("/combine", {"terms": [{"seed": 1, "latent": [0.0] * NZ}]}, 400, "terms[0]", "exactly one"),
    ("/combine", {"terms": [{"seed": 1, "weight": "x"}]}, 400, "terms", "weight"),
], ids=["unknown-direction", "both", "class-range", "no-strengths", "huge-strength", "short-latent",
        "label", "no-terms", "seed-and-latent", "bad-weight"])
def test_bad_edits_and_sums_name_the_field(api, path, body, status, field, says):
    refused(api.post(path, json=body), status, field, says)



def test_the_guard_labels_an_upload_with_the_model_its_form_names():
    from pydantic import BaseModel
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from service.guard import RequestGuard

    class Body(BaseModel):
        model: str | None = None

    async def echo(request):
        return PlainTextResponse(str(len(await request.body())))

    seen = []
    app = RequestGuard(Starlette(routes=[Route("/project", echo, methods=["POST"])]),
                       routes={"/project": Body}, uploads={"/project": 4096}, max_body_bytes=64,
                       on_request=lambda endpoint, model, code, _: seen.append((endpoint, model, code)),
                       model_label=lambda name: name if name in ("tiny", "plain") else "")
    with TestClient(app) as client:
        files = [("images", ("a.png", digit_png(0), "image/png"))]
        assert client.post("/project", files=files, data={"model": "plain"}).status_code == 200
        assert client.post("/project", files=files, data={"model": "nope"}).status_code == 200
        assert client.post("/project", files=files * 40).status_code == 413  # its own limit
        assert client.post("/project", json={"model": "tiny"}).status_code == 200
        assert client.post("/project", content=b"x" * 5000,  # JSON too: the upload limit
                           headers={"content-type": "application/json"}).status_code == 413
    assert seen == [("project", "plain", 200), ("project", "", 200), ("project", "", 413),
                    ("project", "tiny", 200), ("project", "", 413)]
