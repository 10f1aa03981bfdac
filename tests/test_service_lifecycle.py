"""A server's life around its requests, against a real `bentoml serve` on loopback:
SIGTERM under a stream of requests on kept-alive connections resets none of them and
turns /readyz 503 at once; a body that never ends gets 408 and does not hold the
shutdown; a worker killed under load leaves one line in the log; /readyz says why it is
not ready (the reasons are also checked in-process, where they are cheap)."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import httpx
import psutil
from test_service_runtime import serving_app
from test_service_server import BentoServer

HALF_BODY = (b"POST /sample HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
             b"Content-Length: 100\r\n\r\n{\"n\": ")


def test_readyz_says_why_it_is_not_ready(monkeypatch, tmp_path, tiny_onnx):
    missing = tmp_path / "gone.onnx"
    with serving_app(monkeypatch, None, DCGAN_MODELS=f"good={tiny_onnx},gone={missing}") as client:
        answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.text.startswith("not ready: model gone failed: ") and "gone.onnx" in answer.text
    assert "good" not in answer.text, "the model that loaded is not a reason"
    with serving_app(monkeypatch, tiny_onnx, DCGAN_BATCH_WAIT="sometimes") as client:
        answer = client.get("/readyz")
    assert answer.status_code == 503
    assert "DCGAN_BATCH_WAIT=sometimes: must be one of queue, adaptive" in answer.text


def _stream(url: str, outcomes: list, k: int) -> None:
    """One client on one kept-alive connection, asking until it is refused (or fails)."""
    with httpx.Client(timeout=30) as client:
        while True:
            try:
                answer = client.post(url + "/sample", json={"n": 2, "seed": k})
            except httpx.HTTPError as exc:
                outcomes.append((time.monotonic(), type(exc).__name__, None))
                return
            outcomes.append((time.monotonic(), answer.status_code, answer.headers.get("connection")))
            if answer.status_code != 200:
                return


def _half_body(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(HALF_BODY)
    sock.settimeout(30)
    return sock


def test_sigterm_drains_kept_alive_clients_without_a_reset(tmp_path, tiny_onnx):
    server = BentoServer(tmp_path / "home", DCGAN_MODELS=f"tiny={tiny_onnx}",
                         DCGAN_DRAIN_MS="500", DCGAN_BODY_TIMEOUT_MS="3000")
    try:
        server.wait()
        # A body that never ends: 408 naming the setting, and the connection closed.
        sock = _half_body(server.port)
        started = time.monotonic()
        answer = sock.recv(65536)
        while b"DCGAN_BODY_TIMEOUT_MS" not in answer and (more := sock.recv(65536)):
            answer += more
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert 2.5 < time.monotonic() - started < 10
        assert b"connection: close" in answer.lower() and sock.recv(100) == b"", "closed"

        outcomes: list = []
        clients = [threading.Thread(target=_stream, args=(server.url, outcomes, k)) for k in range(8)]
        for thread in clients:
            thread.start()
        time.sleep(0.5)
        stuck = _half_body(server.port)  # a request in flight that will never end
        time.sleep(1)
        sigterm = time.monotonic()
        os.kill(server.proc.pid, signal.SIGTERM)  # the supervisor only, as Kubernetes does
        readyz = None
        while readyz is None and time.monotonic() - sigterm < 2:
            probe = httpx.get(server.url + "/readyz", timeout=5)
            if probe.status_code == 503:
                readyz = (time.monotonic() - sigterm, probe.text)
        for thread in clients:
            thread.join(timeout=30)
        server.proc.wait(timeout=30)
        stopped = time.monotonic() - sigterm
        log = server.log()
        assert stuck.recv(65536).startswith(b"HTTP/1.1 408 "), "the stuck request got its 408"
    finally:
        server.stop()
    assert readyz is not None and readyz[0] < 1, "/readyz turned 503 at once"
    assert readyz[1].startswith("draining"), readyz
    assert stopped < 3 + 0.5 + 5, f"the server took {stopped:.1f} s to stop"
    assert server.proc.returncode == 0
    assert "died" not in log, "a worker stopped by the server is not a death"
    failures = [o for o in outcomes if not isinstance(o[1], int)]
    assert not failures, f"requests failed instead of a clean refusal: {failures}"
    assert sum(o[1] == 200 for o in outcomes) > 8, "the clients were served before"
    last = [o for o in outcomes if o[1] != 200]
    assert len(last) == 8 and all(o[1] == 503 and o[2] == "close" for o in last), last


def _worker_pids(supervisor: int) -> dict[int, int]:
    """BentoML's worker index -> pid, from the workers' command lines."""
    pids = {}
    for child in psutil.Process(supervisor).children():
        args = child.cmdline()
        if "--worker-id" in args:
            pids[int(args[args.index("--worker-id") + 1])] = child.pid
    return pids


def test_a_killed_worker_is_one_line_and_readyz_says_which(tmp_path, tiny_onnx):
    server = BentoServer(tmp_path / "home", DCGAN_MODELS=f"tiny={tiny_onnx}",
                         BENTOML_CONFIG_OPTIONS="services.DCGAN.workers=2")
    try:
        server.wait()
        victim = _worker_pids(server.proc.pid)[2]
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        reason = httpx.get(server.url + "/readyz", timeout=5)  # the other worker answers
        while f"(pid {victim}) died" not in server.log() and time.monotonic() - killed < 20:
            time.sleep(0.1)
        noticed = time.monotonic() - killed
        log = server.log()
        server.wait(timeout=60)  # and its replacement makes the server ready again
    finally:
        server.stop()
    assert reason.status_code == 503, "a server that lost a worker is not ready"
    assert reason.text == f"not ready: worker 2 (pid {victim}) is gone\n"
    lines = [line for line in log.splitlines() if f"pid {victim}" in line and "died" in line]
    assert len(lines) == 1, lines
    assert f"worker 2 (pid {victim}) died from SIGKILL; restarting it" in lines[0]
    # at once, not at the supervisor's next 10-second round
    assert noticed < 5, f"the death was logged {noticed:.1f} s after the kill"

