"""Faults under load: what clients see when a worker is killed or the server is stopped.

    python bench/bench_faults.py [--code DIR] [--clients 16] [--n 16] [--seconds 12]
                                 [--scenarios load,kill1,kill2,term] [--json OUT]

Each scenario starts `bentoml serve service.service:DCGAN` from the code in DIR (default:
this checkout; give another checkout to measure the code before a change) on a free
loopback port, serving that checkout's models/pretrained/dcgan-mnist.onnx, and runs
`--clients` threads, each on its own kept-alive connection asking POST /sample with
`n` images, for `--seconds`:

- `load`: nothing happens (the baseline);
- `kill1`, `kill2`: one worker (of 1, of 2) gets SIGKILL a third of the way in (and the
  run goes on for at least 15 s after it: BentoML's supervisor checks its workers every
  10 s);
- `term`: the server's supervisor gets SIGTERM half-way (as Kubernetes sends it); the
  clients go on (reconnecting) until it has exited.

Per scenario: requests answered 200, 503s, failures by kind (`reset`: ReadError or
RemoteProtocolError, a request lost on an established connection; `refused`:
ConnectError, nothing sent; `timeout`), p50/p99/max latency of the 200s, the outage
(first to last non-200 after the fault), and for `term` the shutdown time (SIGTERM to exit) and
how long /readyz took to turn 503; for the kills, whether the log has a line about the
dead worker. Prints a Markdown table. Loopback only; each scenario is bounded by
`--seconds` plus the server's start and stop.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_service import Server  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
KINDS = {"ReadError": "reset", "RemoteProtocolError": "reset", "WriteError": "reset",
         "ConnectError": "refused", "ReadTimeout": "timeout", "ConnectTimeout": "timeout",
         "PoolTimeout": "timeout", "WriteTimeout": "timeout"}


def client(url: str, n: int, k: int, stop: threading.Event, outcomes: list) -> None:
    with httpx.Client(timeout=10) as http:
        seed = 1000 * k
        while not stop.is_set():
            sent = time.monotonic()
            try:
                status = http.post(url + "/sample", json={"n": n, "seed": seed}).status_code
            except httpx.HTTPError as exc:
                status = KINDS.get(type(exc).__name__, type(exc).__name__)
                time.sleep(0.05)  # a refused client does not spin
            outcomes.append((sent, time.monotonic() - sent, status))
            seed += 1


def run(code: Path, scenario: str, clients: int, n: int, seconds: float) -> dict:
    workers = 2 if scenario == "kill2" else 1
    # the code under test (this checkout or another) serves its own bundled generator
    server = Server("service.service:DCGAN", {
        "DCGAN_MODELS": f"mnist={code / 'models/pretrained/dcgan-mnist.onnx'}",
        "BENTOML_CONFIG_OPTIONS": f"services.DCGAN.workers={workers}",
    }, f"faults-{scenario}", cwd=code)
    server.wait_ready()
    proc, url, log = server.proc, server.url, Path(server.log.name)
    outcomes: list = []
    stop = threading.Event()
    threads = [threading.Thread(target=client, args=(url, n, k, stop, outcomes), daemon=True)
               for k in range(clients)]
    for thread in threads:
        thread.start()
    result: dict = {"scenario": scenario, "workers": workers}
    fault = None
    try:
        if scenario.startswith("kill"):
            time.sleep(seconds / 3)
            victim = next(c.pid for c in psutil.Process(proc.pid).children()
                          if "--worker-id" in c.cmdline())
            fault = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            time.sleep(max(seconds * 2 / 3, 15))  # BentoML's supervisor looks every 10 s
            text = log.read_text(errors="replace")
            result["log_line"] = next((line.split("] ", 2)[-1] for line in text.splitlines()
                                       if str(victim) in line and "died" in line), None)
        elif scenario == "term":
            time.sleep(seconds / 2)
            fault = time.monotonic()
            os.kill(proc.pid, signal.SIGTERM)
            readyz = None
            while proc.poll() is None and time.monotonic() - fault < 60:
                if readyz is None:
                    try:
                        if httpx.get(url + "/readyz", timeout=1).status_code == 503:
                            readyz = time.monotonic() - fault
                    except httpx.HTTPError:
                        pass
                time.sleep(0.01)
            result["shutdown_s"] = round(time.monotonic() - fault, 2) if proc.poll() is not None else None
            result["readyz_503_after_s"] = None if readyz is None else round(readyz, 3)
        else:
            time.sleep(seconds)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
        if proc.poll() is None:
            server.stop()
    if scenario == "term":  # after the exit every client is refused: count up to the exit
        outcomes = [o for o in outcomes if o[0] <= fault + result["shutdown_s"]]
    ok = sorted(o[1] for o in outcomes if o[2] == 200)
    bad = [o for o in outcomes if o[2] != 200]
    result.update(
        requests=len(outcomes), ok=len(ok), status_503=sum(o[2] == 503 for o in bad),
        failed={kind: sum(o[2] == kind for o in bad) for kind in sorted({str(o[2]) for o in bad
                                                                        if not isinstance(o[2], int)})},
        p50_ms=round(1000 * statistics.median(ok), 1) if ok else None,
        p99_ms=round(1000 * ok[int(0.99 * (len(ok) - 1))], 1) if ok else None,
        max_ms=round(1000 * ok[-1], 1) if ok else None,
    )
    if fault is not None and bad:
        after = [o[0] + o[1] for o in bad if o[0] + o[1] >= fault]
        result["outage_s"] = round(max(after) - min(after), 2) if after else 0.0
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, default=ROOT)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=12)
    parser.add_argument("--scenarios", default="load,kill1,kill2,term")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = []
    print("| scenario | workers | requests | 200 | 503 | failed | p50 ms | p99 ms | max ms | outage s | other |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for scenario in args.scenarios.split(","):
        r = run(args.code.resolve(), scenario, args.clients, args.n, args.seconds)
        results.append(r)
        failed = ", ".join(f"{v} {k}" for k, v in r["failed"].items()) or "0"
        other = "; ".join(f"{k}: {r[k]}" for k in ("shutdown_s", "readyz_503_after_s", "log_line") if k in r)
        print(f"| {scenario} | {r['workers']} | {r['requests']} | {r['ok']} | {r['status_503']} | "
              f"{failed} | {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} | {r.get('outage_s', '')} | {other} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
