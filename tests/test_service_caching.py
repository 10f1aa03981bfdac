"""HTTP caching of the answers a request determines (service/caching.py), in-process:
the same request gives the same strong ETag, any change that changes the bytes (seed,
model, format, options) another; If-None-Match gets 304 without any inference; a seed
the server draws gets no tag and `no-store`; Cache-Control follows the settings."""

from __future__ import annotations

import pytest
from test_service_runtime import export_tiny, serving_app

CACHEABLE = [
    ("/sample", {"n": 2, "seed": 5}),
    ("/interpolate", {"start": 1, "end": 2, "steps": 3}),
    ("/combine", {"terms": [{"seed": 1}, {"seed": 2, "weight": -0.5}], "label": 3, "format": "png"}),
]


@pytest.fixture(scope="module")
def client(tiny_onnx, tmp_path_factory):
    """The service with three models: `tiny` (the default), `same` (the same file under
    another name) and `other` (another generator of the same shape)."""
    other = export_tiny(tmp_path_factory.mktemp("other") / "other.onnx", ngf=4)
    models = f"tiny={tiny_onnx},same={tiny_onnx},other={other}"
    with pytest.MonkeyPatch.context() as monkeypatch:
        with serving_app(monkeypatch, None, DCGAN_MODELS=models) as client:
            yield client


def inferences(model: str = "tiny") -> float:
    """ONNX Runtime calls made so far for `model` in this process."""
    from service import metrics

    return metrics.get().inference_batch_size.labels(model=model)._sum.get() or 0.0


@pytest.mark.parametrize("path, body", CACHEABLE, ids=[p for p, _ in CACHEABLE])
def test_a_determined_answer_has_a_strong_etag_and_a_matching_request_gets_304(client, path, body):
    first = client.post(path, json=body)
    assert first.status_code == 200
    tag = first.headers["etag"]
    assert tag.startswith('"') and tag.endswith('"') and not tag.startswith("W/")
    assert first.headers["cache-control"] == "public, max-age=86400, immutable"
    again = client.post(path, json=body)
    assert again.headers["etag"] == tag and again.content == first.content

    before = inferences()
    cached = client.post(path, json=body, headers={"If-None-Match": f'"other", W/{tag}'})
    assert cached.status_code == 304 and cached.content == b""
    assert cached.headers["etag"] == tag
    assert cached.headers["cache-control"] == first.headers["cache-control"]
    assert inferences() == before, "a 304 must not run the generator"
    stale = client.post(path, json=body, headers={"If-None-Match": '"not-this-one"'})
    assert stale.status_code == 200 and stale.content == first.content


def test_the_tag_follows_the_bytes_not_the_spelling_of_the_request(client):
    def tag(body):
        response = client.post("/sample", json=body)
        assert response.status_code == 200, response.text
        return response.headers["etag"]

    base = tag({"n": 2, "seed": 5})
    # defaults spelled out, keys reordered, the default model named: the same answer
    assert tag({"format": "json", "model": "tiny", "seed": 5, "n": 2, "label": None}) == base
    others = [tag({"n": 2, "seed": 6}), tag({"n": 3, "seed": 5}),
              tag({"n": 2, "seed": 5, "format": "png"}), tag({"n": 2, "seed": 5, "format": "array"}),
              tag({"n": 2, "seed": 5, "label": 1}), tag({"n": 2, "seed": 5, "truncation": 1.5})]
    assert len({base, *others}) == 7
    start = client.post("/interpolate", json={"start": 1, "end": 2, "steps": 3}).headers["etag"]
    lerp = client.post("/interpolate", json={"start": 1, "end": 2, "steps": 3, "method": "lerp"})
    assert lerp.headers["etag"] != start


def test_a_seed_the_server_draws_is_not_cacheable(client):
    response = client.post("/sample", json={"n": 1})
    assert response.status_code == 200
    assert "etag" not in response.headers
    assert response.headers["cache-control"] == "no-store"
    refused = client.post("/sample", json={"n": 0, "seed": 1})
    assert refused.status_code == 400 and "etag" not in refused.headers


def test_each_model_has_its_own_tags(client):
    tags = {name: client.post("/sample", json={"seed": 1, "model": name}).headers["etag"]
            for name in ("tiny", "same", "other")}
    assert len(set(tags.values())) == 3
    assert client.post("/sample", json={"seed": 1}).headers["etag"] == tags["tiny"]
    # the tag of one model's answer never validates another's
    before = inferences("other")
    answer = client.post("/sample", json={"seed": 1, "model": "other"},
                         headers={"If-None-Match": tags["tiny"]})
    assert answer.status_code == 200 and inferences("other") > before


def test_open_inference_protocol_answers_are_tagged_too(client):
    def infer(seeds, **headers):
        body = {"inputs": [{"name": "seed", "datatype": "INT64", "shape": [len(seeds)], "data": seeds}]}
        return client.post("/v2/models/tiny/infer", json=body, headers=headers)

    first = infer([1, 2])
    assert first.status_code == 200 and first.headers["cache-control"].startswith("public")
    tag = first.headers["etag"]
    assert infer([1, 2]).headers["etag"] == tag and infer([2, 1]).headers["etag"] != tag
    before = inferences()
    cached = infer([1, 2], **{"If-None-Match": tag})
    assert cached.status_code == 304 and cached.content == b"" and inferences() == before
