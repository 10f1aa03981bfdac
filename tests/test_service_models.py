"""Many generators in one service (DCGAN_MODELS): every request may name its model,
GET /models lists them with their state, a model that cannot load is reported and
refused by name while the others serve, and readiness waits for all of them. The
default configuration serves every bundled generator side by side."""

from __future__ import annotations

import base64
import hashlib
import io

import numpy as np
import pytest
from PIL import Image
from test_service_runtime import export_tiny, serving_app

from service.readiness import WorkerReadiness


def pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    """A conditional `tiny` (the default), an unconditional 32x32 `plain`, and `gone`,
    whose file is missing."""
    folder = tmp_path_factory.mktemp("three")
    tiny = export_tiny(folder / "tiny.onnx")
    plain = export_tiny(folder / "dcgan-plain.onnx", name="plain-card", num_classes=0, image_size=32)
    spec = f"{tiny},{plain},gone={folder / 'gone.onnx'}"
    with pytest.MonkeyPatch.context() as monkeypatch:
        with serving_app(monkeypatch, None, DCGAN_MODELS=spec) as client:
            yield client, tiny, plain


def test_models_lists_every_model_with_its_state(three):
    client, tiny, plain = three
    listing = client.get("/models").json()
    assert listing["default"] == "tiny" and listing["ready"] is False, "gone never loads"
    models = {m["name"]: m for m in listing["models"]}
    assert list(models) == ["tiny", "plain", "gone"], "in the order configured"
    assert models["tiny"]["ready"] and models["plain"]["ready"]
    assert models["tiny"]["num_classes"] == 10 and models["tiny"]["classes"] == list(range(10))
    assert models["plain"]["num_classes"] == 0 and models["plain"]["output_shape"] == [1, 32, 32]
    assert models["plain"]["card"]["name"] == "plain-card" and models["plain"]["card"]["step"] == 42
    assert models["tiny"]["digest"] == "sha256:" + hashlib.sha256(tiny.read_bytes()).hexdigest()
    assert models["tiny"]["version"] == "file" and models["tiny"]["file"] == "tiny.onnx"
    gone = models["gone"]
    assert gone["state"] == "failed" and not gone["ready"]
    assert "gone.onnx" in gone["error"] and "no such file" in gone["error"]
    assert "\n" not in gone["error"]


def test_each_request_goes_to_the_model_it_names(three):
    client, _, _ = three
    default = client.post("/sample", json={"n": 2, "seed": 5}).json()
    tiny = client.post("/sample", json={"n": 2, "seed": 5, "model": "tiny"}).json()
    assert default["images"] == tiny["images"] and default["model"]["name"] == "tiny"
    assert default["labels"] == [5, 6]
    plain = client.post("/sample", json={"n": 2, "seed": 5, "model": "plain"}).json()
    assert plain["model"]["name"] == "plain" and "labels" not in plain
    assert pixels(plain["images"][0]).shape == (32, 32)
    walk = client.post("/interpolate", json={"start": 1, "end": 2, "steps": 3, "model": "plain"})
    assert walk.status_code == 200 and walk.json()["shape"] == [1, 32, 32]
    refused = client.post("/sample", json={"n": 1, "label": 3, "model": "plain"})
    assert refused.status_code == 400 and "not class-conditional" in refused.json()["error"]


def test_an_unknown_model_is_a_404_listing_the_known_ones(three):
    client, _, _ = three
    for path, body in (("/sample", {"model": "nope"}),
                       ("/interpolate", {"start": 1, "end": 2, "model": "nope"})):
        response = client.post(path, json=body)
        assert response.status_code == 404, response.text
        error = response.json()["error"]
        assert "'nope'" in error and "tiny, plain, gone" in error
        assert response.json()["detail"][0]["loc"] == ["model"]
    assert client.get("/model", params={"name": "nope"}).status_code == 404
    bad = client.post("/sample", json={"model": 7})
    assert bad.status_code == 400 and "model must be the name of a served model" in bad.json()["error"]


def test_a_model_that_failed_gets_503_naming_it_and_the_others_serve(three):
    client, _, _ = three
    response = client.post("/sample", json={"n": 1, "model": "gone"})
    assert response.status_code == 503
    assert response.json()["error"].startswith("model gone is not ready: ")
    assert "no such file" in response.json()["error"]
    assert client.post("/sample", json={"n": 1, "model": "plain"}).status_code == 200
    assert client.get("/readyz").status_code == 503, "not every configured model is loaded"


def test_model_takes_a_name_and_defaults_to_the_first(three):
    client, _, _ = three
    assert client.get("/model").json()["name"] == "tiny"
    plain = client.get("/model", params={"name": "plain"}).json()
    assert plain["name"] == "plain" and plain["ready"] and plain["limits"]["num_classes"] == 0
    assert plain["limits"]["label_range"] is None and plain["card"]["name"] == "plain-card"
    gone = client.get("/model", params={"name": "gone"}).json()
    assert gone["ready"] is False and "no such file" in gone["error"]


def test_workers_are_ready_together(tmp_path):
    """Two workers' files in one directory: a model counts as ready once both list it;
    a worker that died counts as nothing ready."""
    first = WorkerReadiness(2, 1, directory=tmp_path)
    second = WorkerReadiness(2, 2, directory=tmp_path)
    first.publish(["a", "b"])
    assert first.ready_everywhere() == frozenset(), "worker 2 has nothing yet"
    second.publish(["a"])
    assert first.ready_everywhere() == second.ready_everywhere() == {"a"}
    second.publish(["a", "b"])
    assert first.ready_everywhere() == {"a", "b"}
    (tmp_path / "worker-2.json").write_text('{"pid": 999999999, "ready": ["a", "b"]}')
    assert first.ready_everywhere() == frozenset(), "a dead worker serves nothing"
    second.withdraw()
    assert not (tmp_path / "worker-2.json").exists()
    alone = WorkerReadiness(1, None)
    alone.publish(["a"])
    assert alone.ready_everywhere() == {"a"}


def test_models_that_load_at_once_are_all_published(tmp_path):
    """Each model's loading thread adds it: none may write over another's news."""
    import threading

    mine, theirs = WorkerReadiness(2, 1, directory=tmp_path), WorkerReadiness(2, 2, directory=tmp_path)
    names = [f"m{k}" for k in range(40)]
    threads = [threading.Thread(target=mine.add, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    theirs.publish(names)
    assert theirs.ready_everywhere() == set(names)

