"""The real thing: `bentoml serve` on a loopback port, a generator from a throwaway
BentoML model store, and clients over HTTP. Concurrent requests are merged into
batches (the metrics show it), each still gets its own images, and none fails; the
metrics keep their names and add up over two workers, which turn ready together; a
missing model is one log line.

`BentoServer` is shared with tests/test_service_page.py.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from test_service_runtime import export_tiny

ROOT = Path(__file__).resolve().parents[1]

REGISTER = """
import shutil, sys, bentoml
with bentoml.models.create("dcgan-tiny") as model:
    shutil.copyfile(sys.argv[1], model.path_of("generator.onnx"))
print(model.tag)
"""


class BentoServer:
    """`bentoml serve service.service:DCGAN` in its own process group and BentoML home
    (each server needs its own: BentoML wipes the metrics directory of its home at start)."""

    def __init__(self, home: Path, **env: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(tempfile.mkstemp(prefix="bentoml-serve-", suffix=".log")[1])
        full_env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True", **env}
        full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # bentoml serve sets its own
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bentoml", "serve", "service.service:DCGAN",
                 "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait(self, path: str = "/readyz", timeout: float = 90) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, f"bentoml serve exited:\n{self.log()}"
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{path} not 200 after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> str:
        return httpx.get(self.url + "/metrics", timeout=10).text

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log_path.unlink(missing_ok=True)


def register_in_store(onnx_path: Path, home: Path) -> str:
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True"}
    result = subprocess.run([sys.executable, "-c", REGISTER, str(onnx_path)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def store_model(tmp_path_factory) -> tuple[Path, str]:
    """A BentoML home whose model store holds the tiny generator; (home, tag)."""
    home = tmp_path_factory.mktemp("bentoml-home")
    onnx_path = export_tiny(tmp_path_factory.mktemp("export") / "tiny.onnx")
    return home, register_in_store(onnx_path, home)


@pytest.fixture(scope="module")
def server(store_model):
    home, _ = store_model
    server = BentoServer(home, DCGAN_MODEL="dcgan-tiny:latest")
    try:
        server.wait()
        yield server
    finally:
        server.stop()


def metric(text: str, name: str, /, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total, found = 0.0, False
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total, found = total + float(match.group(3)), True
    assert found, f"no sample {name}{labels} in /metrics"
    return total


def _request(client: httpx.Client, url: str, k: int) -> tuple[str, dict, bytes, int]:
    """Request k: a mix of sizes and of both endpoints."""
    if k % 4 == 3:
        path, body, images = "/interpolate", {"start": k, "end": k + 1, "steps": 3}, 3
    else:
        path, body, images = "/sample", {"n": 1 + k % 3, "seed": 1000 + k}, 1 + k % 3
    response = client.post(url + path, json=body)
    assert response.status_code == 200, response.text
    return path, body, response.content, images


def _concurrently(url: str, requests: int, clients: int,
                  keepalive: bool = True) -> list[tuple[str, dict, bytes, int]]:
    limits = httpx.Limits(max_connections=clients,
                          max_keepalive_connections=clients if keepalive else 0)
    with httpx.Client(timeout=60, limits=limits) as client, ThreadPoolExecutor(clients) as pool:
        return list(pool.map(lambda k: _request(client, url, k), range(requests)))


def test_concurrent_clients_are_batched_and_none_fails(server):
    clients, requests = 32, 192
    results = _concurrently(server.url, requests, clients)
    assert len(results) == requests  # and every one answered 200 (asserted inside)

    text = server.metrics()
    calls = metric(text, "dcgan_inference_batch_size_count")
    single = metric(text, "dcgan_inference_batch_size_bucket", le="1.0")
    assert calls > 0 and single < calls, "some ONNX Runtime call generated more than one image"
    merged = metric(text, "bentoml_service_adaptive_batch_size_count", method_name="generate")
    merged_alone = metric(text, "bentoml_service_adaptive_batch_size_bucket",
                          method_name="generate", le="1.0")
    assert merged_alone < merged, "some call served more than one request"
    images = sum(r[3] for r in results)
    generated = (metric(text, "dcgan_images_generated_total", endpoint="sample")
                 + metric(text, "dcgan_images_generated_total", endpoint="interpolate"))
    assert generated >= images
    assert metric(text, "dcgan_inference_seconds_count") == calls

    # Batching must not mix requests up: each answer equals the one it gets alone.
    with httpx.Client(timeout=60) as client:
        for path, body, content, _ in results[::7]:
            assert client.post(server.url + path, json=body).content == content, body


def test_metrics_keep_their_names(server, store_model):
    _, tag = store_model
    bad = httpx.post(server.url + "/sample", json={"n": 0})
    assert bad.status_code == 400
    text = server.metrics()
    version = tag.split(":")[1]
    assert metric(text, "dcgan_model_info", name="tiny", version=version,
                  provider="CPUExecutionProvider") == 1
    assert metric(text, "dcgan_ready") == 1
    assert metric(text, "dcgan_requests_rejected_total", endpoint="sample", reason="invalid") >= 1
    assert metric(text, "bentoml_service_request_total", endpoint="/sample") >= 1
    assert "dcgan_inference_seconds_bucket" in text


def test_health_page_and_card_are_served(server):
    for path in ("/livez", "/readyz", "/", "/docs", "/docs.json"):
        assert httpx.get(server.url + path, timeout=10).status_code == 200, path
    document = httpx.get(server.url + "/docs.json", timeout=10).json()
    assert "/v2/models/{name}/infer" in document["paths"], "ours, not BentoML's"
    info = httpx.get(server.url + "/model", timeout=10).json()
    assert info["name"] == "tiny" and info["version"] != "file"
    assert "serving tiny" in server.log() and "CPUExecutionProvider" in server.log()


def test_two_workers_are_ready_together_and_their_metrics_add_up(store_model, tmp_path):
    home, _ = store_model
    onnx_path = next(home.glob("models/dcgan-tiny/*/generator.onnx"))
    plain = export_tiny(tmp_path / "plain.onnx", num_classes=0)
    server = BentoServer(home.parent / "two-workers-home",
                         DCGAN_MODELS=f"tiny={onnx_path},plain={plain}",
                         BENTOML_CONFIG_OPTIONS="services.DCGAN.workers=2")
    try:
        # /readyz answers for whichever worker takes the connection: at its first 200,
        # both workers must have loaded both models (before, the first worker to load
        # turned the server ready while the other still answered 503).
        deadline = time.time() + 90
        while time.time() < deadline:
            assert server.proc.poll() is None, server.log()
            try:
                if httpx.get(server.url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        log = server.log()
        assert log.count("serving tiny (") == 2 and log.count("serving plain (") == 2, log
        for _ in range(10):  # and every worker says so from then on
            assert httpx.get(server.url + "/readyz", timeout=5,
                             headers={"Connection": "close"}).status_code == 200
        assert httpx.get(server.url + "/models", timeout=5).json()["workers"] == 2
        # Which worker accepts a connection is the kernel's choice: new connections per
        # request, and more rounds until both workers have served some.
        results, workers = [], set()
        for _ in range(5):
            results += _concurrently(server.url, 48, 16, keepalive=False)
            text = server.metrics()
            workers = set(re.findall(
                r'bentoml_service_adaptive_batch_size_count\{[^}]*worker_index="(\d+)"', text))
            if len(workers) == 2:
                break
    finally:
        server.stop()
    images = sum(r[3] for r in results)
    generated = (metric(text, "dcgan_images_generated_total", endpoint="sample")
                 + metric(text, "dcgan_images_generated_total", endpoint="interpolate"))
    assert generated == images, "one counter over both workers' files"
    assert workers == {"1", "2"}, "both workers served and both are counted"
    assert metric(text, "dcgan_ready", model="tiny") == 1
    assert metric(text, "dcgan_ready", model="plain") == 1
    assert metric(text, "dcgan_model_info", model="plain", name="tiny") == 1


def test_a_missing_model_is_one_log_line_and_not_ready(tmp_path):
    server = BentoServer(tmp_path / "home", DCGAN_MODEL=str(tmp_path / "gone.onnx"))
    try:
        server.wait("/livez")
        time.sleep(1)
        assert server.proc.poll() is None, "no crash"
        assert httpx.get(server.url + "/readyz", timeout=5).status_code == 503
        assert httpx.post(server.url + "/sample", json={"n": 1}, timeout=5).status_code == 503
        log = server.log()
    finally:
        server.stop()
    lines = [line for line in log.splitlines() if "cannot serve a generator" in line]
    assert len(lines) == 1 and "gone.onnx" in lines[0] and "no such file" in lines[0]
    assert "Traceback" not in log
