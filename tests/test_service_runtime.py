"""Loading the generator: what an operator sees when the model is fine, missing, broken
or mislabelled (the service stays up, not ready, with one clear log line), and that
the service never imports torch.

`export_tiny` and `serving_app` are shared with the other tests/test_service_*.py files.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from dataclasses import asdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = {"nz": 8, "ngf": 8, "ndf": 8, "nc": 1, "image_size": 16, "num_classes": 10}


def export_tiny(path: Path, name: str = "tiny", arch: str = "dcgan", **model) -> Path:
    """A random-init generator (seeded), exported with its model card: the tiny DCGAN by
    default, `arch="mlp"` for a 2-D toy generator."""
    import torch

    from models import build_models
    from models.card import ModelCard
    from training.export import export_onnx

    torch.manual_seed(0)
    config = {**TINY, **model} if arch == "dcgan" else {"nz": 2, "hidden": 16, "layers": 2, **model}
    generator, _ = build_models(arch, config)
    card = ModelCard(name=name, arch=arch, model=asdict(generator.config), step=42)
    return export_onnx(generator.eval(), card, path)


@functools.cache
def _asgi_app():
    """One ASGI app per process: BentoML registers its request metrics when it builds an
    app, and a second app in the same process would register them twice."""
    from service.service import DCGAN

    return DCGAN.to_asgi()


@contextlib.contextmanager
def serving_app(monkeypatch, model: Path | str | None, wait_ready: bool = True, **env: str):
    """The service as an in-process ASGI app (BentoML's `to_asgi`) behind a test client,
    serving `model` (None: as `env` says, DCGAN_MODELS or the defaults) with the settings
    that `env` (DCGAN_* variables) gives, as a server would read them. It waits until
    every model has loaded or failed.

    The app is built once per process, with the settings of its import; each lifespan
    makes a new service instance, which takes the settings given here. The token is
    the guard's, so a token here gets a guard of its own in front of the app; limits
    shape the request models at import, so they cannot change here (a server can)."""
    from starlette.testclient import TestClient

    import service.service as svc
    from service.guard import RequestGuard

    settings, error = svc.read_settings({**({"DCGAN_MODEL": str(model)} if model else {}), **env})
    assert settings.limits == svc.LIMITS, "limits are fixed at import: test them with a server"
    monkeypatch.setattr(svc, "SETTINGS", settings)
    monkeypatch.setattr(svc, "SETTINGS_ERROR", error)
    app = _asgi_app()
    if settings.api_token:
        routes = {"/sample": svc.SampleRequest, "/interpolate": svc.InterpolateRequest}
        app = RequestGuard(app, routes=routes, max_body_bytes=settings.max_body_bytes,
                           token=settings.api_token)
    with TestClient(app) as client:
        deadline = time.time() + 30
        while wait_ready and time.time() < deadline:
            listing = client.get("/models").json()
            if listing["error"] or all(m["state"] != "loading" for m in listing["models"]):
                break
            time.sleep(0.05)
        yield client


def _wait_loaded(client, timeout: float = 30) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        info = client.get("/model").json()
        if info["ready"] or info["error"]:
            return info
        time.sleep(0.05)
    raise AssertionError("the model neither loaded nor failed")



def test_a_good_model_loads_and_reports_its_card(monkeypatch, tiny_onnx):
    with serving_app(monkeypatch, tiny_onnx) as client:
        assert client.get("/readyz").status_code == 200
        info = client.get("/model").json()
    assert info["ready"] and info["error"] is None
    assert info["name"] == "tiny" and info["card"]["step"] == 42
    assert info["providers"][0] == "CPUExecutionProvider"
    assert info["limits"]["nz"] == 8 and info["limits"]["label_range"] == [0, 9]


def _broken(client, caplog) -> tuple[dict, list[logging.LogRecord]]:
    info = _wait_loaded(client)
    assert client.get("/livez").status_code == 200, "alive: no restart loop"
    assert client.get("/readyz").status_code == 503
    response = client.post("/sample", json={"n": 1})
    assert response.status_code == 503
    assert info["error"] in response.json()["error"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    return info, errors


def _one_clean_line(errors: list[logging.LogRecord]) -> str:
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert errors[0].exc_info is None, "a sentence, not a traceback"
    return errors[0].getMessage()


def test_a_missing_file_leaves_the_server_alive_but_not_ready(monkeypatch, tmp_path, caplog):
    missing = tmp_path / "nowhere.onnx"
    with serving_app(monkeypatch, missing) as client:
        info, errors = _broken(client, caplog)
    assert "no such file" in info["error"] and "nowhere.onnx" in info["error"]
    assert "nowhere.onnx" in _one_clean_line(errors)


def test_a_corrupt_file_is_reported_in_one_line(monkeypatch, tmp_path, caplog):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"this is not a protobuf" * 10)
    with serving_app(monkeypatch, corrupt) as client:
        info, errors = _broken(client, caplog)
    assert "ONNX Runtime cannot open it" in info["error"]
    _one_clean_line(errors)


def test_a_file_without_model_card_is_refused(monkeypatch, tmp_path, tiny_onnx, caplog):
    import onnx

    model = onnx.load(str(tiny_onnx))
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    with serving_app(monkeypatch, bare) as client:
        info, errors = _broken(client, caplog)
    assert "no model card" in info["error"]
    _one_clean_line(errors)


def test_a_card_that_lies_about_the_graph_is_refused(monkeypatch, tmp_path, tiny_onnx, caplog):
    import json

    import onnx

    from models.card import CARD_KEY

    model = onnx.load(str(tiny_onnx))
    for prop in model.metadata_props:
        if prop.key == CARD_KEY:
            card = json.loads(prop.value)
            card["model"]["nz"] = 16
            prop.value = json.dumps(card)
    liar = tmp_path / "liar.onnx"
    onnx.save(model, str(liar))
    with serving_app(monkeypatch, liar) as client:
        info, errors = _broken(client, caplog)
    assert "does not match its model card" in info["error"] and "nz=16" in info["error"]
    _one_clean_line(errors)


def test_a_copied_card_over_a_graph_with_dynamic_outputs_is_refused_at_warm_up(
        monkeypatch, tmp_path, caplog):
    """A graph that makes 32x32 images under the card of a 16x16 model. When the graph
    declares its output dimensions the signature check refuses it at once; when they are
    dynamic (here: the check sees nothing, as with such a graph) the warm-up must
    (before, the model went ready and every request answered 500)."""
    import onnx

    import models.generation.onnx_generator as onnx_generator
    from models.card import CARD_KEY

    small = onnx.load(str(export_tiny(tmp_path / "small.onnx")))
    big = onnx.load(str(export_tiny(tmp_path / "big.onnx", image_size=32)))
    card = next(p.value for p in small.metadata_props if p.key == CARD_KEY)
    for prop in big.metadata_props:
        if prop.key == CARD_KEY:
            prop.value = card
    copied = tmp_path / "copied.onnx"
    onnx.save(big, str(copied))
    with pytest.raises(onnx_generator.ModelLoadError, match="does not match its model card"):
        onnx_generator.OnnxGenerator(copied, device="cpu")
    monkeypatch.setattr(onnx_generator, "check_signature", lambda *args: None)
    with serving_app(monkeypatch, copied) as client:
        info, errors = _broken(client, caplog)
    assert "gives outputs of shape [1, 1, 32, 32], but its card says [1, 1, 16, 16]" in info["error"]
    _one_clean_line(errors)


def test_cuda_asked_for_and_not_usable_stays_not_ready_with_the_reason(monkeypatch, tiny_onnx,
                                                                       caplog):
    from models.generation.onnx_generator import gpu_count

    if gpu_count():
        pytest.skip("a GPU is present: CUDA may well be usable here")
    with serving_app(monkeypatch, tiny_onnx, DCGAN_DEVICE="cuda") as client:
        info, errors = _broken(client, caplog)
    assert info["error"].startswith("device cuda was asked for, but ")
    assert "CUDA" in info["error"]
    _one_clean_line(errors)


def test_an_unknown_store_tag_is_reported(monkeypatch, caplog):
    with serving_app(monkeypatch, "dcgan-no-such-model:v1") as client:
        info, _ = _broken(client, caplog)
    assert "dcgan-no-such-model:v1" in info["error"] and "model store" in info["error"]


def test_a_bad_setting_is_reported_not_raised(monkeypatch, tiny_onnx, caplog):
    with serving_app(monkeypatch, tiny_onnx, DCGAN_BATCH_WAIT="sometimes") as client:
        info, errors = _broken(client, caplog)
    assert "DCGAN_BATCH_WAIT=sometimes: must be one of queue, adaptive" in info["error"]
    assert "DCGAN_BATCH_WAIT=sometimes" in _one_clean_line(errors)


def test_bad_settings_are_reported_together_one_line_each(monkeypatch, tiny_onnx, caplog):
    with serving_app(monkeypatch, tiny_onnx, DCGAN_MAX_BATCH_SIZE="abc", DCGAN_DEVICE="tpu",
                     DCGAN_BATCHING="maybe") as client:
        info, errors = _broken(client, caplog)
    lines = [r.getMessage() for r in errors]
    assert len(lines) == 3 and all(r.exc_info is None for r in errors), lines
    for expected in ("DCGAN_MAX_BATCH_SIZE=abc: must be an integer from 2 to 4096",
                     "DCGAN_DEVICE=tpu: must be one of auto, cpu, cuda",
                     "DCGAN_BATCHING=maybe: must be one of 1, 0, true, false"):
        assert expected in info["error"]
        assert sum(expected in line for line in lines) == 1, lines


def test_readyz_turns_200_when_every_model_is_loaded(monkeypatch, tmp_path):
    a = export_tiny(tmp_path / "a.onnx")
    b = export_tiny(tmp_path / "b.onnx", num_classes=0)
    with serving_app(monkeypatch, None, DCGAN_MODELS=f"{a},second={b}") as client:
        assert client.get("/readyz").status_code == 200
        assert [m["name"] for m in client.get("/models").json()["models"]] == ["a", "second"]
        assert client.post("/sample", json={"model": "second"}).status_code == 200


# --- which generators can be served -------------------------------------------------

def test_an_unconditional_model_has_no_labels(monkeypatch, tmp_path):
    path = export_tiny(tmp_path / "unconditional.onnx", num_classes=0)
    with serving_app(monkeypatch, path) as client:
        body = client.post("/sample", json={"n": 2, "seed": 1}).json()
        assert "labels" not in body and len(body["images"]) == 2
        refused = client.post("/sample", json={"n": 1, "label": 3})
        assert refused.status_code == 400 and "not class-conditional" in refused.json()["error"]
        walk = client.post("/interpolate", json={"start": [0.5] * 8, "end": 3, "steps": 4}).json()
        assert len(walk["frames"]) == 4 and "labels" not in walk


def test_a_toy_model_of_2d_points_serves_arrays_only(monkeypatch, tmp_path):
    path = export_tiny(tmp_path / "ring.onnx", arch="mlp")
    with serving_app(monkeypatch, path) as client:
        points = client.post("/sample", json={"n": 5, "seed": 0, "format": "array"}).json()
        assert points["shape"] == [5, 2] and len(points["images"]) == 5
        refused = client.post("/sample", json={"n": 5, "seed": 0})
        assert refused.status_code == 400
        assert "format json needs an image model" in refused.json()["error"]
        walk = client.post("/interpolate", json={"start": 0, "end": 1, "steps": 3, "format": "array"})
        assert walk.json()["shape"] == [3, 2]



def test_the_same_seed_gives_the_same_images_at_any_batch_size(tiny_onnx):
    """The dispatcher merges requests into batches of any size: a seed's image must not
    depend on what it was batched with, or the same request could give other bytes."""
    import numpy as np

    from models.generation import OnnxGenerator
    from models.latent import labels_for_seeds, latents_from_seeds

    g = OnnxGenerator(tiny_onnx, device="cpu")
    latents, labels = latents_from_seeds(range(16), 8), labels_for_seeds(range(16), 10)
    whole = g.generate(latents, labels)
    for size in (1, 5, 16):
        parts = [g.generate(latents[i:i + size], labels[i:i + size]) for i in range(0, 16, size)]
        assert np.array_equal(np.concatenate(parts), whole), size


@pytest.mark.parametrize("batching", [True, False])
def test_merged_batches_run_in_the_event_loop_and_full_ones_in_a_thread(
        monkeypatch, tiny_onnx, batching):
    import threading

    import anyio
    import numpy as np

    from models.generation import OnnxGenerator
    from service.runtime import Batcher

    g = OnnxGenerator(tiny_onnx, device="cpu")
    where = []
    generate = g.generate
    monkeypatch.setattr(g, "generate",
                        lambda z, y: where.append((len(z), threading.get_ident())) or generate(z, y))
    batcher = Batcher(g, enabled=batching, max_batch_size=16, max_latency_ms=10000,
                      on_call=lambda *a: None)
    assert batcher.inline_images == 16  # on CPU: every merged batch

    async def ask_in_turn():  # one event loop: the dispatcher belongs to it
        loop_thread = threading.get_ident()
        for n in (1, 15, 16, 40):
            images = await batcher.generate(np.zeros((n, 8), np.float32), np.zeros(n, np.int64))
            assert images.shape == (n, 1, 16, 16)
        return loop_thread

    try:
        loop_thread = anyio.run(ask_in_turn)
    finally:
        batcher.shutdown()
    inline = [(n, thread == loop_thread) for n, thread in where]
    if batching:
        assert inline == [(1, True), (15, True), (16, False), (40, False)]
    else:  # without batching every call runs in a thread, as BentoML runs a sync API
        assert inline == [(1, False), (15, False), (16, False), (40, False)]


# --- admission: a bounded queue per model ---------------------------------------------

def test_admission_bounds_the_queue_by_the_measured_rate_and_the_target():
    """Deterministic: the calls are told with their times, as a fake clock would."""
    from service.runtime import Admission, Overloaded

    queue = Admission(target_s=0.5, floor=64, name="mnist")
    assert queue.rate is None and queue.bound == 64  # cold: one batch
    queue.admit(60)
    with pytest.raises(Overloaded) as refused:
        queue.admit(16)  # 60 + 16 > 64
    assert refused.value.retry_after == 1 and queue.queued == 60, "a refusal leaves the queue"
    assert "model mnist has 60 images queued and takes at most 64" in str(refused.value)
    queue.admit(4)

    # 64 images in 1/16 s, more waiting: 1024 images/s -> 512 images in 0.5 s.
    queue.observe(10.0, 10.0625, 64)
    assert queue.rate == 1024 and queue.bound == 512
    queue.done(64)
    queue.admit(500)
    queue.admit(12)  # exactly the bound
    with pytest.raises(Overloaded) as refused:
        queue.admit(1)
    assert refused.value.retry_after == 1  # 512 images at 1024/s: 0.5 s, rounded up

    # A call of 64 while 448 more wait, then calls that each start 1/16 s after the last
    # ended: those gaps are the queue's too (parsing, encoding), so the queue drains at
    # half the rate of the calls alone, and the bound halves.
    queue.observe(10.125, 10.1875, 64)
    assert queue.rate == 1024, "the first call had nothing waiting behind it: no gap counted"
    end = 10.1875
    for _ in range(3):
        queue.observe(end + 0.0625, end + 0.125, 64)
        end += 0.125
    assert queue.rate == 512 and queue.bound == 256
    queue.done(64 * 4)
    assert queue.queued == 256
    with pytest.raises(Overloaded) as refused:
        queue.admit(1)
    # The queue empties; a call with nothing behind it is quick, but says nothing of the
    # rate at which a busy queue drains: the bound stays.
    queue.done(256)
    queue.admit(16)
    queue.observe(20.0, 20.0078125, 16)
    assert queue.rate == 512 and queue.bound == 256

    # A slower generator: the retry time follows the queue (here 2.3 s of work -> 3 s).
    slow = Admission(target_s=5, floor=8)
    slow.observe(0.0, 1.0, 100)  # 100 images/s, nothing waiting
    slow.admit(230)
    with pytest.raises(Overloaded) as refused:
        slow.admit(300)
    assert refused.value.retry_after == 3


def test_admission_takes_any_request_into_an_empty_queue_and_0_means_no_bound():
    from service.runtime import Admission, Overloaded

    queue = Admission(target_s=0.001, floor=4)
    queue.admit(100)  # bigger than the bound: it could never be admitted otherwise
    with pytest.raises(Overloaded):
        queue.admit(1)
    queue.done(100)
    queue.admit(1)
    unbounded = Admission(target_s=0, floor=4)
    for _ in range(100):
        unbounded.admit(64)
    assert unbounded.bound is None and unbounded.queued == 6400


def test_a_full_queue_answers_503_with_retry_after_at_once_while_admitted_requests_succeed(
        monkeypatch, tiny_onnx):
    """One request holds the generator (it blocks until released); the queue takes one
    batch (8 images: the target is too short for more). Requests that would overfill it
    get 503 at once on every route that generates, and those admitted all succeed."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from models.generation import OnnxGenerator
    from service import metrics

    with serving_app(monkeypatch, tiny_onnx, DCGAN_LATENCY_TARGET_MS="1",
                     DCGAN_MAX_BATCH_SIZE="8", DCGAN_INLINE_IMAGES="0") as client:
        entered, release = threading.Event(), threading.Event()
        generate = OnnxGenerator.generate

        def held(self, latents, labels=None):
            entered.set()
            assert release.wait(10)
            return generate(self, latents, labels)

        monkeypatch.setattr(OnnxGenerator, "generate", held)
        # What the DCGANOverloaded alert reads: 503s by model, and the rejections' reason.
        answered_503 = metrics.get().requests.labels(endpoint="sample", model="tiny", code="503")
        rejected = metrics.get().requests_rejected.labels(
            endpoint="sample", reason="overloaded", model="tiny")
        before = rejected._value.get(), answered_503._value.get()
        waits_before = _queue_waits("tiny")
        with ThreadPoolExecutor(2) as pool:
            try:
                first = pool.submit(client.post, "/sample", json={"n": 6, "seed": 1})
                assert entered.wait(30)
                too_big = client.post("/sample", json={"n": 3})  # 6 + 3 > 8
                second = pool.submit(client.post, "/sample", json={"n": 2, "seed": 7})  # fits
                deadline = time.time() + 10
                while client.get("/model").json()["batching"]["queue"]["queued_images"] < 8:
                    assert time.time() < deadline, "the second request was not admitted"
                    time.sleep(0.01)
                refusals = [
                    client.post("/sample", json={"n": 1}),
                    client.post("/interpolate", json={"start": 0, "end": 1, "steps": 2}),
                    client.post("/combine", json={"terms": [{"seed": 1, "weight": 1}], "label": 2}),
                    client.post("/v2/models/tiny/infer", json={"inputs": [
                        {"name": "seed", "datatype": "INT64", "shape": [1], "data": [3]}]}),
                ]
            finally:
                release.set()
            admitted = [first.result(timeout=30), second.result(timeout=30)]
    assert too_big.status_code == 503 and too_big.headers["retry-after"] == "1"
    assert ("model tiny has 6 images queued and takes at most 8 (about 1 ms of work); this "
            "request asks for 3; retry after 1 s") in too_big.json()["error"]
    for response in refusals:
        assert response.status_code == 503, (response.request.url, response.text)
        assert response.headers["retry-after"] == "1"
        assert "overloaded" in response.json()["error"]
        assert "model tiny has 8 images queued and takes at most 8" in response.json()["error"]
    assert [r.status_code for r in admitted] == [200, 200]
    assert len(admitted[0].json()["images"]) == 6 and admitted[1].json()["seeds"] == [7, 8]
    assert (rejected._value.get(), answered_503._value.get()) == (before[0] + 2, before[1] + 2)
    assert _queue_waits("tiny") == waits_before + 2, "each admitted request's wait is observed"


def _queue_waits(model: str) -> float:
    from service import metrics

    return next((sample.value for family in metrics.get().queue_wait.collect()
                for sample in family.samples
                if sample.name.endswith("_count") and sample.labels["model"] == model), 0.0)


def test_a_card_holding_nan_is_still_sent_as_json(monkeypatch, tmp_path):
    """A file written by another tool may carry NaN in its card (Python's json writes
    it); /model and /models send it as null instead of failing with a 500. (Here, not
    beside a module's running app: one service instance at a time in a process.)"""
    import json

    import onnx

    path = export_tiny(tmp_path / "tiny.onnx")
    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    card = json.loads(props["dcgan.card"])
    card["quality"]["fd_ratio"] = float("nan")
    props["dcgan.card"] = json.dumps(card)  # NaN, as json.dumps writes it by default
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(path))
    with serving_app(monkeypatch, path) as client:
        described = client.get("/model")
        listing = client.get("/models")
    assert described.status_code == 200 and described.json()["card"]["quality"]["fd_ratio"] is None
    assert listing.status_code == 200 and listing.json()["models"][0]["card"]["fd_ratio"] is None
