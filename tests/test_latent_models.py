"""The latent space with many models served (DCGAN_MODELS): each model has its own
encoder and directions, found beside its own file, and every latent-space request may
name its model, as /sample does."""

from __future__ import annotations

import base64
import shutil

import pytest
from latent_fixtures import digit_png, export_latent_model
from test_service_runtime import serving_app


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def latent_model(tmp_path_factory):
    return export_latent_model(tmp_path_factory.mktemp("latent-models") / "tiny.onnx")


def test_each_served_model_has_its_own_latent_space(latent_model, tmp_path):
    plain = tmp_path / "plain.onnx"  # the same generator, without sidecars beside it
    shutil.copyfile(latent_model, plain)
    spec = f"tiny={latent_model},plain={plain}"
    picture = {"images": [b64(digit_png(0))]}
    with pytest.MonkeyPatch.context() as monkeypatch:
        with serving_app(monkeypatch, None, DCGAN_MODELS=spec) as client:
            tiny, bare = (client.get(f"/model?name={n}").json() for n in ("tiny", "plain"))
            assert tiny["encoder"] is True and tiny["directions"][:1] == ["sefa0"]
            assert bare["encoder"] is False and bare["directions"] == []
            assert bare["sidecar_problems"] == tiny["sidecar_problems"] == []
            # absent: the default (the first); named: that model
            assert client.post("/project", json=picture).json()["model"]["name"] == "tiny"
            response = client.post("/project", json={**picture, "model": "plain"})
            assert response.status_code == 400 and "no encoder" in response.json()["error"]
            upload = client.post("/project", files=[("images", ("a.png", digit_png(0), "image/png"))],
                                 data={"model": "tiny", "search": "1"})
            assert upload.status_code == 200 and upload.json()["model"]["name"] == "tiny"
            assert client.get("/directions?model=tiny").json()["model"]["name"] == "tiny"
            assert client.get("/directions?name=plain").status_code == 404
            edit = {"start": 3, "direction": "sefa0", "strengths": [0, 1]}
            assert client.post("/edit", json={**edit, "model": "tiny"}).json()["model"]["name"] == "tiny"
            assert client.post("/edit", json={**edit, "model": "plain"}).status_code in (400, 404)
            combined = client.post("/combine", json={"terms": [{"seed": 1}], "model": "plain"})
            assert combined.status_code == 200 and combined.json()["model"]["name"] == "plain"
            # an unknown model: 404 naming the served ones, on every latent-space route
            for response in (client.post("/project", json={**picture, "model": "nope"}),
                             client.post("/edit", json={**edit, "model": "nope"}),
                             client.post("/combine", json={"terms": [{"seed": 1}], "model": "nope"}),
                             client.get("/directions?model=nope")):
                assert response.status_code == 404 and "tiny, plain" in response.json()["error"]
