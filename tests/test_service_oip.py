"""The Open Inference Protocol (KServe v2 REST) against a real `bentoml serve` on
loopback, driven by a client nobody here wrote: Triton's `tritonclient.http`, in JSON
and in binary tensors. The same seed gives the pixels of POST /sample; every limit of
the native API holds, refusals take the protocol's form, and the token guards infer."""

from __future__ import annotations

import base64
import gzip
import io
import json
import random

import httpx
import numpy as np
import pytest
from PIL import Image
from test_service_runtime import export_tiny
from test_service_server import BentoServer, metric

from models.latent import latents_from_seeds

http = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def auth() -> dict[str, str]:
    """The token header, in a dict of its own: tritonclient adds its headers to the one
    it is given."""
    return dict(AUTH)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Two generators, `tiny` (class-conditional, 16x16, the default) and `plain`
    (unconditional), behind a token."""
    folder = tmp_path_factory.mktemp("oip-models")
    tiny = export_tiny(folder / "tiny.onnx")
    plain = export_tiny(folder / "plain.onnx", num_classes=0)
    server = BentoServer(tmp_path_factory.mktemp("oip-home"), DCGAN_MODELS=f"{tiny},{plain}",
                         DCGAN_API_TOKEN=TOKEN)
    try:
        server.wait()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def client(server):
    triton = http.InferenceServerClient(server.url.removeprefix("http://"))
    yield triton
    triton.close()


def sample_pixels(server, **body) -> np.ndarray:
    """POST /sample's PNGs as one (N, 1, H, W) uint8 array."""
    response = httpx.post(server.url + "/sample", json=body, headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    return np.stack([np.asarray(Image.open(io.BytesIO(base64.b64decode(b))))[None]
                     for b in response.json()["images"]])


def seeds_input(seeds, binary=True):
    tensor = http.InferInput("seed", [len(seeds)], "INT64")
    tensor.set_data_from_numpy(np.asarray(seeds, np.int64), binary_data=binary)
    return tensor


# --- health and metadata ------------------------------------------------------------------

def test_server_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "dcgan-service" and "binary_tensor_data" in meta["extensions"]


def test_model_metadata_and_readiness(client):
    tiny = client.get_model_metadata("tiny")
    assert tiny["platform"] == "onnxruntime_onnx" and tiny["versions"] == ["file"]
    assert tiny["inputs"] == [{"name": "seed", "datatype": "INT64", "shape": [-1]},
                              {"name": "z", "datatype": "FP32", "shape": [-1, 8]},
                              {"name": "label", "datatype": "INT64", "shape": [-1]}]
    outputs = {o["name"]: o for o in tiny["outputs"]}
    assert outputs["images"] == {"name": "images", "datatype": "UINT8", "shape": [-1, 1, 16, 16]}
    assert set(outputs) == {"images", "seed", "z", "label"}
    plain = client.get_model_metadata("plain", model_version="file")
    assert [i["name"] for i in plain["inputs"]] == ["seed", "z"], "no label: unconditional"
    assert client.is_model_ready("tiny") and client.is_model_ready("plain", "file")
    assert not client.is_model_ready("nope") and not client.is_model_ready("tiny", "v9")
    with pytest.raises(InferenceServerException, match="'nope' is not served here.*tiny, plain"):
        client.get_model_metadata("nope")
    with pytest.raises(InferenceServerException, match="has no version 'v9'"):
        client.get_model_metadata("tiny", model_version="v9")


# --- inference ------------------------------------------------------------------------------

@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_a_seed_gives_the_pixels_of_sample(server, client, binary):
    outputs = [http.InferRequestedOutput(name, binary_data=binary)
               for name in ("images", "seed", "label")]
    result = client.infer("tiny", [seeds_input([3, 4, 5], binary)], outputs=outputs, headers=auth())
    images = result.as_numpy("images")
    assert images.dtype == np.uint8 and images.shape == (3, 1, 16, 16)
    np.testing.assert_array_equal(images, sample_pixels(server, n=3, seed=3))
    np.testing.assert_array_equal(result.as_numpy("seed"), [3, 4, 5])
    np.testing.assert_array_equal(result.as_numpy("label"), [3, 4, 5]), "seed % 10"
    response = result.get_response()
    assert response["model_name"] == "tiny" and response["model_version"] == "file"


def test_labels_truncation_and_the_default_outputs(server, client):
    label = http.InferInput("label", [2], "INT64")
    label.set_data_from_numpy(np.asarray([7, 7], np.int64))
    result = client.infer("tiny", [seeds_input([10, 11]), label], headers=auth(),
                          parameters={"truncation": 0.7})
    np.testing.assert_array_equal(result.as_numpy("images"),
                                  sample_pixels(server, n=2, seed=10, label=7, truncation=0.7))
    names = {o["name"] for o in result.get_response()["outputs"]}
    assert names == {"images", "seed", "label"}, "images, the input echoed, the labels"


def test_latent_vectors_in_binary_give_the_images_of_their_seeds(server, client):
    z = http.InferInput("z", [2, 8], "FP32")
    z.set_data_from_numpy(latents_from_seeds([20, 21], 8))
    label = http.InferInput("label", [2], "INT64")
    label.set_data_from_numpy(np.asarray([0, 1], np.int64))
    result = client.infer("tiny", [z, label], headers=auth(),
                          outputs=[http.InferRequestedOutput("images"), http.InferRequestedOutput("z")])
    np.testing.assert_array_equal(result.as_numpy("images"), sample_pixels(server, n=2, seed=20))
    np.testing.assert_array_equal(result.as_numpy("z"), latents_from_seeds([20, 21], 8))


def test_another_model_by_name_and_version(server, client):
    result = client.infer("plain", [seeds_input([0, 1])], model_version="file", headers=auth())
    np.testing.assert_array_equal(result.as_numpy("images"),
                                  sample_pixels(server, n=2, seed=0, model="plain"))
    assert result.as_numpy("label") is None


def test_float_images_on_request_and_compressed_bodies(server, client):
    body = {"inputs": [{"name": "seed", "datatype": "INT64", "shape": [2], "data": [7, 8]}],
            "outputs": [{"name": "images", "parameters": {"datatype": "FP32"}}], "id": "r1"}
    response = httpx.post(server.url + "/v2/models/tiny/infer", json=body, headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["id"] == "r1" and answer["outputs"][0]["datatype"] == "FP32"
    floats = np.asarray(answer["outputs"][0]["data"], np.float32).reshape(2, 1, 16, 16)
    arrays = httpx.post(server.url + "/sample", json={"n": 2, "seed": 7, "format": "array"},
                        headers=AUTH, timeout=30).json()
    np.testing.assert_array_equal(floats, np.asarray(arrays["images"], np.float32))
    # tritonclient's own gzip: the same images
    result = client.infer("tiny", [seeds_input([7, 8])], headers=auth(),
                          request_compression_algorithm="gzip")
    np.testing.assert_array_equal(result.as_numpy("images"), sample_pixels(server, n=2, seed=7))


# --- refusals -------------------------------------------------------------------------------

def infer_body(**overrides):
    body = {"inputs": [{"name": "seed", "datatype": "INT64", "shape": [1], "data": [1]}]}
    return {**body, **overrides}


def seed_tensor(data, shape=None, datatype="INT64", name="seed"):
    return {"name": name, "datatype": datatype, "shape": shape or [len(data)], "data": data}


BAD = [
    (infer_body(inputs=[seed_tensor(list(range(129)))]), "N must be an integer from 1 to 128"),
    (infer_body(inputs=[seed_tensor([], shape=[0])]), "N must be an integer from 1 to 128"),
    (infer_body(inputs=[seed_tensor([-1])]), "seed must be an integer from 0 to 9223372036854775807"),
    (infer_body(inputs=[seed_tensor([1.5])]), "input seed: data must be integers"),
    (infer_body(inputs=[seed_tensor([1], datatype="INT32")]), "input seed must have datatype INT64"),
    (infer_body(inputs=[seed_tensor([1, 2], shape=[3])]), "data must hold 3 values"),
    (infer_body(inputs=[seed_tensor([0.5] * 10, shape=[2, 5], datatype="FP32", name="z"),
                        seed_tensor([1, 1], name="label")]), "input z must have shape [N, 8]"),
    (infer_body(inputs=[seed_tensor([0.5] * 8, shape=[1, 8], datatype="FP32", name="z")]),
     "label is required for a class-conditional model when z is given"),
    (infer_body(inputs=[seed_tensor([1e9] * 8, shape=[1, 8], datatype="FP32", name="z"),
                        seed_tensor([1], name="label")]), "input z must hold finite numbers from -100 to 100"),
    (infer_body(inputs=[seed_tensor([1]), seed_tensor([10], name="label")]),
     "label must be an integer from 0 to 9, got 10"),
    (infer_body(inputs=[seed_tensor([1]), seed_tensor([1, 2], name="label")]), "input label must have shape [1]"),
    (infer_body(inputs=[seed_tensor([1]), seed_tensor([0.1] * 8, shape=[1, 8], datatype="FP32", name="z")]),
     "give exactly one of the inputs seed and z"),
    (infer_body(inputs=[seed_tensor([1], name="noise")]), "unknown input 'noise' (accepted: seed, z, label)"),
    (infer_body(inputs=[]), "inputs must be a list of tensors"),
    (infer_body(parameters={"truncation": 0}), "parameter truncation must be a number from 0.05 to 4.0"),
    (infer_body(parameters={"truncaton": 1}), "unknown request parameter 'truncaton'"),
    (infer_body(outputs=[{"name": "pixels"}]), "unknown output 'pixels'"),
    (infer_body(outputs=[{"name": "images", "parameters": {"datatype": "FP16"}}]),
     "output images: datatype must be FP32 or UINT8"),
    (infer_body(extra=1), "unknown request field 'extra'"),
]


@pytest.mark.parametrize("body,says", BAD, ids=[f"bad-{i}" for i in range(len(BAD))])
def test_bad_requests_are_400_in_the_protocols_form(server, body, says):
    response = httpx.post(server.url + "/v2/models/tiny/infer", json=body, headers=AUTH, timeout=30)
    assert response.status_code == 400, response.text
    assert list(response.json()) == ["error"] and says in response.json()["error"]


def test_a_label_for_an_unconditional_model_is_refused(server):
    body = infer_body(inputs=[seed_tensor([1]), seed_tensor([1], name="label")])
    response = httpx.post(server.url + "/v2/models/plain/infer", json=body, headers=AUTH, timeout=30)
    assert response.status_code == 400 and "not class-conditional" in response.json()["error"]


@pytest.mark.parametrize("size,extra,header,says", [
    (8, b"\x00" * 8, "abc", "Inference-Header-Content-Length must be an integer"),
    (8, b"\x00" * 8, "9999", "Inference-Header-Content-Length must be an integer"),
    (4, b"\x00" * 4, None, "binary_data_size must be 8 bytes"),
    (8, b"\x00" * 4, None, "ends 4 bytes short"),
    (8, b"\x00" * 16, None, "holds 8 bytes beyond"),
])
def test_broken_binary_bodies_are_400(server, size, extra, header, says):
    head = json.dumps({"inputs": [{"name": "seed", "datatype": "INT64", "shape": [1],
                                   "parameters": {"binary_data_size": size}}]}).encode()
    headers = {**AUTH, "Inference-Header-Content-Length": header or str(len(head))}
    response = httpx.post(server.url + "/v2/models/tiny/infer", content=head + extra,
                          headers=headers, timeout=30)
    assert response.status_code == 400, response.text
    assert says in response.json()["error"], response.json()["error"]


def test_unknown_models_versions_tokens_and_sizes(server):
    url = server.url + "/v2/models"
    unknown = httpx.post(f"{url}/nope/infer", json=infer_body(), headers=AUTH, timeout=30)
    assert unknown.status_code == 404 and "tiny, plain" in unknown.json()["error"]
    version = httpx.post(f"{url}/tiny/versions/v9/infer", json=infer_body(), headers=AUTH, timeout=30)
    assert version.status_code == 404 and "has no version 'v9'" in version.json()["error"]
    anonymous = httpx.post(f"{url}/tiny/infer", json=infer_body(), timeout=30)
    assert anonymous.status_code == 401 and list(anonymous.json()) == ["error"]
    big = httpx.post(f"{url}/tiny/infer", content=b"x" * (64 * 1024 + 1), headers=AUTH, timeout=30)
    assert big.status_code == 413 and "at most 65536 bytes" in big.json()["error"]
    bomb = gzip.compress(json.dumps(infer_body(id="x" * 200_000)).encode())
    inflated = httpx.post(f"{url}/tiny/infer", content=bomb, timeout=30,
                          headers={**AUTH, "Content-Encoding": "gzip"})
    assert inflated.status_code == 413 and "once decompressed" in inflated.json()["error"]
    assert httpx.get(f"{url}/tiny", timeout=30).status_code == 200, "metadata needs no token"


def test_random_garbage_never_gets_a_5xx(server):
    rng = random.Random(0)
    values = [None, True, -1, 0, 1, 2**70, 1e308, "", "x", [], [1], {}, {"a": 1}, [[1]], [1.5]]
    keys = ["name", "datatype", "shape", "data", "parameters"]
    for _ in range(60):
        tensor = {rng.choice(keys): rng.choice(values) for _ in range(rng.randint(1, 5))}
        body = {"inputs": [tensor], rng.choice(["parameters", "outputs", "id"]): rng.choice(values)}
        response = httpx.post(server.url + "/v2/models/tiny/infer", json=body, headers=AUTH,
                              timeout=30)
        assert response.status_code < 500, (body, response.text)


def test_infer_is_counted_by_model(server, client):
    client.infer("plain", [seeds_input([0, 1, 2])], headers=auth())
    text = server.metrics()
    assert metric(text, "dcgan_images_generated_total", endpoint="infer", model="plain") >= 3
    assert metric(text, "dcgan_requests_total", endpoint="infer", model="plain", code="200") >= 1
    assert metric(text, "dcgan_requests_total", endpoint="infer", model="tiny", code="400") >= 1
    assert metric(text, "dcgan_requests_rejected_total", endpoint="infer", reason="unknown_model",
                  model="") >= 1
    assert metric(text, "dcgan_ready", model="plain") == 1
