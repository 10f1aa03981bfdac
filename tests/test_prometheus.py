"""Prometheus and Grafana: the alert rules pass promtool's checks and unit tests, and a
real Prometheus on loopback scrapes a real `bentoml serve` of the service (two tiny
generators, `tiny` the default and `other`) while we drive requests. Reading back through Prometheus's query API proves
the metrics are exposed, scrapeable and named as the rules and the dashboard expect,
that every rule evaluates cleanly, and that every dashboard query runs."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "rules.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "rules.test.yaml"
OPERATOR_RULES = ROOT / "deploy" / "prometheus" / "prometheusrule.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dcgan-service.json"
JOB = "dcgan-service"  # the Kubernetes Service name, which the ServiceMonitor makes the job
WINDOW = "15s"  # rate window in queries here; the server scrapes every second

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package `prometheus`)")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason="the prometheus server is not installed (Debian package `prometheus`)")

TINY_GENERATOR = """
import sys
from dataclasses import asdict
from models import build_models
from models.card import ModelCard
from training.export import export_onnx
generator, _ = build_models("dcgan", {"nz": 8, "ngf": 8, "ndf": 8, "nc": 1,
                                      "image_size": 16, "num_classes": 0})
export_onnx(generator, ModelCard(name="tiny", model=asdict(generator.config)), sys.argv[1])
"""


# --- the rule files ---------------------------------------------------------------------

@needs_promtool
def test_rules_pass_promtool_check():
    result = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_rules_unit_tests_pass():
    result = subprocess.run([PROMTOOL, "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname:\s*(\w+)", RULE_TESTS.read_text()))
    assert tested == set(_alert_names()), "every alert has unit tests"


def test_operator_rules_are_the_rule_file():
    operator = yaml.safe_load(OPERATOR_RULES.read_text())
    assert operator["kind"] == "PrometheusRule"
    assert operator["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"], (
        "deploy/prometheus/prometheusrule.yaml has drifted from rules.yaml")


def _alert_names() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [r["alert"] for g in groups for r in g["rules"] if "alert" in r]


def _rule_exprs() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [r["expr"] for g in groups for r in g["rules"]]


def _dashboard_targets() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel target, Grafana's variables filled in as
    Grafana would for 'All' namespaces and models."""
    dashboard = json.loads(DASHBOARD.read_text())
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = (target["expr"].replace("$__rate_interval", WINDOW)
                    .replace("$__interval", "5s").replace("$namespace", ".*")
                    .replace("$model", ".*"))
            assert "$" not in expr, f"{panel['title']}: unknown variable in {expr}"
            found.append((panel["title"], expr))
    assert found
    return found


def _metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (ours and BentoML's, plus `up`)."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    return set(re.findall(r"\b((?:dcgan|bentoml)_[a-z0-9_]+|up)\s*\{", without_strings))


# --- a live service, scraped by a live Prometheus ---------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(what: str, check, timeout: float, proc: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.3)
    pytest.fail(f"{what} not up after {timeout:.0f} s:\n{log.read_text()[-4000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process we started in its own session, with everything it spawned."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


class Stack:
    def __init__(self, service_url: str, prometheus_url: str, httpx, sent: dict[str, int]):
        self.service_url, self.prometheus_url, self.httpx, self.sent = (
            service_url, prometheus_url, httpx, sent)

    def query(self, expr: str) -> dict:
        response = self.httpx.get(f"{self.prometheus_url}/api/v1/query", params={"query": expr},
                                  timeout=10)
        body = response.json()
        assert body.get("status") == "success", f"{expr}\n -> {body}"
        return body["data"]

    def value(self, expr: str) -> float:
        result = self.query(expr)["result"]
        assert len(result) == 1, f"{expr} -> {result}"
        return float(result[0]["value"][1])


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if PROMETHEUS is None:
        pytest.skip("the prometheus server is not installed (Debian package `prometheus`)")
    httpx = pytest.importorskip("httpx")
    tmp = tmp_path_factory.mktemp("prometheus-stack")
    model, other = tmp / "tiny.onnx", tmp / "other.onnx"
    for path in (model, other):
        subprocess.run([sys.executable, "-c", TINY_GENERATOR, str(path)], cwd=ROOT, check=True,
                       timeout=120, capture_output=True)

    service_port, prometheus_port = _free_port(), _free_port()
    service_log = tmp / "serve.log"
    env = {**os.environ, "DCGAN_MODELS": f"{model},{other}", "BENTOML_HOME": str(tmp / "bentoml"),
           "BENTOML_DO_NOT_TRACK": "true"}
    env.pop("DCGAN_API_TOKEN", None)
    env.pop("DCGAN_MODEL", None)
    with service_log.open("wb") as out:
        service = subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", "service.service:DCGAN",
             "--host", "127.0.0.1", "--port", str(service_port)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    processes = [service]
    try:
        service_url = f"http://127.0.0.1:{service_port}"
        _wait("bentoml serve", lambda: httpx.get(f"{service_url}/readyz", timeout=2)
              .status_code == 200, 120, service, service_log)

        config = tmp / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": JOB, "static_configs": [
                {"targets": [f"127.0.0.1:{service_port}"]}]}],
        }))
        prometheus_log = tmp / "prometheus.log"
        with prometheus_log.open("wb") as out:
            prometheus = subprocess.Popen(
                [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{prometheus_port}"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        processes.append(prometheus)
        prometheus_url = f"http://127.0.0.1:{prometheus_port}"
        _wait("prometheus", lambda: httpx.get(f"{prometheus_url}/-/ready", timeout=2)
              .status_code == 200, 60, prometheus, prometheus_log)

        # One request per endpoint first, scraped before the rest: a counter series is
        # born at its first increment, and rate() needs a sample from before the load.
        sent = _drive(httpx, service_url, sizes=[1], interpolations=1)
        stack = Stack(service_url, prometheus_url, httpx, sent)
        _wait("the first requests to show in Prometheus",
              lambda: len(stack.query(f'dcgan_images_generated_total{{job="{JOB}"}}')["result"])
              == len(sent), 30, prometheus, prometheus_log)
        for endpoint, images in _drive(httpx, service_url).items():
            sent[endpoint] += images
        # Wait until Prometheus has scraped everything we sent, and a few samples more so
        # that rate() has points on both sides.
        expected = sum(sent.values())
        _wait("the images to show in Prometheus",
              lambda: stack.value(f'sum(dcgan_images_generated_total{{job="{JOB}"}})') == expected,
              30, prometheus, prometheus_log)
        time.sleep(3)
        yield stack
    finally:
        for proc in reversed(processes):
            _stop(proc)


def _drive(httpx, url: str, sizes=(1, 2, 3, 4, 5, 6, 7, 8) * 3,
           interpolations: int = 4) -> dict[str, int]:
    """Concurrent sample and interpolation requests, plus one invalid request; returns
    the images asked for, by endpoint."""

    def sample(i_n):
        i, n = i_n
        response = httpx.post(f"{url}/sample", json={"n": n, "seed": i, "format": "json"},
                              timeout=60)
        assert response.status_code == 200, response.text
        assert len(response.json()["images"]) == n
        return n

    def interpolate(i):
        response = httpx.post(f"{url}/interpolate", json={"start": i, "end": i + 1, "steps": 4},
                              timeout=60)
        assert response.status_code == 200, response.text
        return 4

    def infer(i):  # the other model, through the Open Inference Protocol
        body = {"inputs": [{"name": "seed", "datatype": "INT64", "shape": [2], "data": [i, i + 1]}]}
        response = httpx.post(f"{url}/v2/models/other/infer", json=body, timeout=60)
        assert response.status_code == 200, response.text
        return 2

    with ThreadPoolExecutor(max_workers=8) as pool:
        sampled = sum(pool.map(sample, enumerate(sizes)))
        interpolated = sum(pool.map(interpolate, range(interpolations)))
        inferred = sum(pool.map(infer, range(interpolations)))
    bad = httpx.post(f"{url}/sample", json={"n": 0}, timeout=30)
    assert bad.status_code == 400, bad.text
    return {"sample": sampled, "interpolate": interpolated, "infer": inferred}


@needs_prometheus
def test_prometheus_reads_the_rate_of_generated_images(stack):
    by_endpoint = {r["metric"]["endpoint"].strip("/"): float(r["value"][1]) for r in
                   stack.query(f'sum by (endpoint) (dcgan_images_generated_total{{job="{JOB}"}})')
                   ["result"]}
    assert by_endpoint == {k: float(v) for k, v in stack.sent.items()}
    by_model = {r["metric"]["model"]: float(r["value"][1]) for r in
                stack.query(f'sum by (model) (dcgan_images_generated_total{{job="{JOB}"}})')["result"]}
    assert by_model == {"tiny": stack.sent["sample"] + stack.sent["interpolate"],
                        "other": stack.sent["infer"]}
    rate = stack.value(f'sum(rate(dcgan_images_generated_total{{job="{JOB}"}}[1m]))')
    assert rate > 0


@needs_prometheus
def test_prometheus_reads_latency_quantiles(stack):
    for metric, selector in (("dcgan_inference_seconds", f'job="{JOB}"'),
                             ("bentoml_service_request_duration_seconds",
                              f'job="{JOB}", endpoint="/sample"')):
        p99 = stack.value(f"histogram_quantile(0.99, sum by (le) "
                          f"(rate({metric}_bucket{{{selector}}}[1m])))")
        assert math.isfinite(p99) and 0 < p99 < 60, f"{metric}: p99 = {p99}"
    batches = stack.value(f'sum(dcgan_inference_batch_size_count{{job="{JOB}"}})')
    images = stack.value(f'sum(dcgan_inference_batch_size_sum{{job="{JOB}"}})')
    assert images == sum(stack.sent.values()) and 1 <= batches <= images


@needs_prometheus
def test_service_reports_ready_model_and_rejections(stack):
    ready = {r["metric"]["model"]: float(r["value"][1])
             for r in stack.query(f'dcgan_ready{{job="{JOB}"}}')["result"]}
    assert ready == {"tiny": 1, "other": 1}
    info = stack.query(f'dcgan_model_info{{job="{JOB}"}} == 1')["result"]
    assert sorted(r["metric"]["model"] for r in info) == ["other", "tiny"]
    assert {"model", "name", "version", "provider"} <= set(info[0]["metric"])
    # _drive sent one invalid request per call: the warm-up and the load.
    assert stack.value(f'sum(dcgan_requests_rejected_total{{job="{JOB}", reason="invalid", '
                       f'model="tiny"}})') == 2
    assert stack.value(f'sum(dcgan_requests_total{{job="{JOB}", model="tiny", code="400"}})') == 2
    assert stack.value(f'sum(dcgan_requests_total{{job="{JOB}", model="other", code="200"}})') == 5
    assert stack.value(f'sum(bentoml_service_request_total{{job="{JOB}", endpoint="/sample", '
                       f'http_response_code="400"}})') == 2


@needs_prometheus
def test_every_metric_the_rules_and_dashboard_use_is_exposed(stack):
    exposed = set(stack.httpx.get(f"{stack.prometheus_url}/api/v1/label/__name__/values",
                                  timeout=10).json()["data"])
    used = set().union(*(_metric_names(e) for e in _rule_exprs()),
                       *(_metric_names(e) for _, e in _dashboard_targets()))
    assert {"dcgan_images_generated_total", "dcgan_inference_seconds_bucket", "dcgan_ready",
            "dcgan_requests_total", "dcgan_request_duration_seconds_bucket",
            "bentoml_service_request_total", "up"} <= used
    missing = sorted(used - exposed)
    assert not missing, f"used by rules or dashboard but not exposed: {missing}"


@needs_prometheus
def test_rules_evaluate_cleanly_and_stay_quiet_on_a_healthy_service(stack):
    deadline = time.monotonic() + 15
    while True:  # every rule has been evaluated at least once
        groups = stack.httpx.get(f"{stack.prometheus_url}/api/v1/rules", timeout=10).json()[
            "data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        if rules and not any(r["lastEvaluation"].startswith("0001") for r in rules):
            break
        assert time.monotonic() < deadline, rules
        time.sleep(0.5)
    assert sorted(r["name"] for r in rules) == sorted(_alert_names())
    for rule in rules:
        assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"
        assert rule["state"] == "inactive", f"{rule['name']} is {rule['state']} on a healthy service"


@needs_prometheus
def test_every_dashboard_query_runs(stack):
    empty = []
    for title, expr in _dashboard_targets():
        data = stack.query(expr)  # fails on any query error
        if not data["result"]:
            empty.append(title)
    # With traffic served, only panels about trouble may be empty.
    allowed_empty = {"Overload", "Server error ratio", "Server errors and overload by model"}
    assert not set(empty) - allowed_empty, f"panels without data on live traffic: {empty}"
