"""Benchmark the service beside its two floors, in one run on one machine.

    python bench/bench_service.py [--model PATH.onnx] [--seconds 2] [--rounds 5] [--env NAME=VALUE] [--clients 1,2,4,8,16,32,64]

- framework floor: a no-op BentoML endpoint (the `Noop` service below), 1 and 8 clients;
- compute floor: raw ONNX Runtime images/s in this process, batch 1, 8 and 64, with the
  session options the service uses (measured before and after the load; the better counts);
- the service, adaptive batching on and off (two servers, measured in alternating
  rounds so that background load hits both alike; req/s is the median over rounds,
  latency percentiles are over all requests): requests/s, images/s, p50/p99 latency
  against concurrency, for n=1 and n=64; failed requests; resident memory.

Without --model it serves models/pretrained/dcgan-mnist.onnx, or, when that file is
missing, a randomly initialised generator of the same architecture (same compute).
The load client runs in this process with aiohttp and shares the CPU with the server;
that is part of what is measured. Prints a Markdown report (and --json writes the data).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import bentoml

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "models" / "pretrained" / "dcgan-mnist.onnx"
MNIST_ARCH = {"nz": 100, "ngf": 64, "ndf": 64, "nc": 1, "image_size": 32, "num_classes": 10}


@bentoml.service
class Noop:
    """The framework floor: a JSON endpoint that does nothing."""

    @bentoml.api
    async def noop(self, n: int = 1) -> dict:
        return {"n": n}


# --- servers -------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, target: str, env: dict[str, str], name: str, cwd: Path = ROOT) -> None:
        self.name, self.port = name, free_port()
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)
        # Its own BentoML home: a server wipes the metrics directory of its home at start.
        home = tempfile.mkdtemp(prefix=f"bench-{name}-home-")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", target, "--host", "127.0.0.1",
             "--port", str(self.port)],
            cwd=cwd, env={**os.environ, "BENTOML_HOME": home, **env}, stdout=self.log,
            stderr=subprocess.STDOUT, start_new_session=True,  # its own process group
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 120) -> None:
        import urllib.request

        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log.name}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} not ready after {timeout}s; see {self.log.name}")

    def rss_mb(self) -> tuple[float, float]:
        """(largest process, whole process tree) resident memory in MB."""
        import psutil

        procs = [psutil.Process(self.proc.pid)]
        procs += procs[0].children(recursive=True)
        rss = [p.memory_info().rss / 2**20 for p in procs if p.is_running()]
        return max(rss), sum(rss)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server's processes so far."""
        import psutil

        total = 0.0
        for p in [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]:
            try:
                times = p.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)


# --- load ----------------------------------------------------------------------------

async def load(server: Server, path: str, body: dict | bytes, clients: int, seconds: float,
               warmup: float, headers: dict[str, str] | None = None) -> dict:
    """`clients` closed-loop clients posting `body` (a dict as JSON, or bytes with
    `headers`) for `seconds` (after `warmup`), and the CPU time the server and this client
    spent per request answered in that window."""
    import aiohttp

    url = server.url + path
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = headers or {"Content-Type": "application/json"}
    latencies: list[float] = []
    failures = done = 0
    start_at = time.perf_counter() + warmup
    stop_at = start_at + seconds
    cpu: dict[str, tuple[float, float]] = {}

    async def probe() -> None:
        for name, at in (("start", start_at), ("stop", stop_at)):
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            cpu[name] = (server.cpu_seconds(), time.process_time())

    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as s:

        async def client() -> None:
            nonlocal failures, done
            while (now := time.perf_counter()) < stop_at:
                try:
                    async with s.post(url, data=payload, headers=headers) as r:
                        await r.read()
                        ok = r.status == 200
                except aiohttp.ClientError:
                    ok = False
                end = time.perf_counter()
                done += start_at <= end <= stop_at
                if now >= start_at:  # latency of requests sent in the window
                    latencies.append(end - now)
                    failures += not ok

        await asyncio.gather(probe(), *(client() for _ in range(clients)))
    per_request = max(done, 1)
    return {"rps": done / seconds, "latencies": latencies, "failures": failures,
            "server_cpu_ms": (cpu["stop"][0] - cpu["start"][0]) / per_request * 1000,
            "client_cpu_ms": (cpu["stop"][1] - cpu["start"][1]) / per_request * 1000}


def summarise(runs: list[dict]) -> dict:
    """Rounds of one point -> median req/s, latency percentiles over all requests."""
    latencies = sorted(x for r in runs for x in r["latencies"])

    def q(f: float) -> float:
        return latencies[min(len(latencies) - 1, int(f * len(latencies)))] * 1000 if latencies else float("nan")

    def median(key: str) -> float:
        values = sorted(r[key] for r in runs)
        return values[len(values) // 2]

    return {"rps": median("rps"), "rps_rounds": [round(r["rps"], 1) for r in runs],
            "requests": len(latencies), "p50_ms": q(0.5), "p99_ms": q(0.99),
            "failures": sum(r["failures"] for r in runs),
            "server_cpu_ms": median("server_cpu_ms"), "client_cpu_ms": median("client_cpu_ms")}


def raw_onnx(g, seconds: float) -> dict[int, dict[str, float]]:
    """Images/s of the bare ONNX Runtime session `g`, at batch 1, 8 and 64."""
    return {n: raw_rate(g, n, seconds) for n in (1, 8, 64)}


def bare_generator(model: Path):
    """The generator as the service opens it (same session options), in this process."""
    sys.path.insert(0, str(ROOT))
    from models.generation import OnnxGenerator
    from service.settings import Settings

    settings = Settings.from_env(os.environ)
    return OnnxGenerator(model, device=settings.device, threads=settings.ort_threads,
                         version="bench")


def raw_rate(g, n: int, seconds: float) -> dict[str, float]:
    """Images/s and CPU ms per image of `g` called with batches of `n` for `seconds`."""
    import numpy as np

    latents = np.random.default_rng(0).standard_normal((n, g.card.nz)).astype(np.float32)
    labels = np.zeros(n, np.int64)
    for _ in range(3):
        g.generate(latents, labels)
    calls, t0, cpu0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        g.generate(latents, labels)
        calls += 1
    return {"images_per_s": calls * n / (time.perf_counter() - t0),
            "cpu_ms_per_image": (time.process_time() - cpu0) / (calls * n) * 1000}


def ensure_model(path: str | None) -> Path:
    if path:
        return Path(path)
    if BUNDLED.is_file():
        return BUNDLED
    target = Path(tempfile.gettempdir()) / "bench-dcgan-mnist-random.onnx"
    if not target.is_file():
        sys.path.insert(0, str(ROOT))
        import torch

        from models import build_models
        from models.card import ModelCard
        from training.export import export_onnx

        torch.manual_seed(0)
        generator, _ = build_models("dcgan", MNIST_ARCH)
        card = ModelCard(name="mnist-random-init", model=asdict(generator.config))
        export_onnx(generator.eval(), card, target)
    return target


# --- report ----------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="generator .onnx (default: the bundled one)")
    ap.add_argument("--seconds", type=float, default=2.0, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds before each")
    ap.add_argument("--rounds", type=int, default=5, help="runs per point (median req/s)")
    ap.add_argument("--clients", default="1,2,4,8,16,32,64")
    ap.add_argument("--sizes", default="1,64", help="n per request")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="an environment variable for both service servers (repeatable), "
                         "e.g. DCGAN_INLINE_IMAGES=0 to compare a setting")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    extra = dict(item.split("=", 1) for item in args.env)
    clients = [int(c) for c in args.clients.split(",")]
    sizes = [int(n) for n in args.sizes.split(",")]
    model = ensure_model(args.model)
    env = {"DCGAN_MODEL": str(model), "BENTOML_DO_NOT_TRACK": "True"}
    servers = {
        "noop": Server("bench.bench_service:Noop", env, "noop"),
        "on": Server("service.service:DCGAN", {**env, **extra, "DCGAN_BATCHING": "1"}, "batching-on"),
        "off": Server("service.service:DCGAN", {**env, **extra, "DCGAN_BATCHING": "0"}, "batching-off"),
    }
    results: dict = {"model": str(model.name), "machine": machine(), "noop": {}, "service": {},
                     "load_average_before": os.getloadavg()[0]}
    # A SIGTERM (a timeout, say) must still stop the servers: make it an exception.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        for server in servers.values():
            server.wait_ready()
        bare = bare_generator(model)
        results["raw_onnx"] = raw_onnx(bare, 2.0)
        results["raw_rounds"] = {}
        results["gpu"] = bare.provider == "CUDAExecutionProvider"
        for n in sizes:
            for c in clients:
                # Rounds alternate who goes first, so that background load hits all alike;
                # the no-op floor is measured inside the same rounds for n=1.
                targets = [("on", "/sample", {"n": n, "seed": 0}), ("off", "/sample", {"n": n, "seed": 0})]
                if n == 1 and c in (1, 8):
                    targets.append(("noop", "/noop", {"n": 1}))
                if n > 1:  # the compute floor at this batch size, inside the same rounds
                    targets.append(("raw", "", {}))
                runs: dict[str, list[dict]] = {name: [] for name, _, _ in targets}
                for k in range(args.rounds):
                    for name, path, body in targets if k % 2 == 0 else targets[::-1]:
                        if name == "raw":
                            runs[name].append(raw_rate(bare, min(n, 64), args.seconds))
                            continue
                        runs[name].append(asyncio.run(
                            load(servers[name], path, body, c, args.seconds, args.warmup)))
                if "raw" in runs:
                    results["raw_rounds"][f"n={n} c={c}"] = [r["images_per_s"] for r in runs.pop("raw")]
                for name, found in runs.items():
                    r = summarise(found)
                    if name == "noop":
                        results["noop"][c] = r
                        continue
                    r["images_per_s"] = r["rps"] * n
                    results["service"][f"{name} n={n} c={c}"] = r
                    print(f"{name:>3} n={n:<3} c={c:<3} {r['rps']:8.1f} req/s {r['images_per_s']:8.0f} img/s "
                          f"p50 {r['p50_ms']:7.1f} ms p99 {r['p99_ms']:7.1f} ms failed {r['failures']} "
                          f"cpu/req server {r['server_cpu_ms']:.2f} client {r['client_cpu_ms']:.2f} ms",
                          file=sys.stderr)
        results["rss_mb"] = {k: servers[k].rss_mb() for k in ("on", "off")}
        # The compute floor again, after the load: on a shared machine one measurement can
        # land in a busy moment, and a floor is what the hardware can do, so the best counts.
        again = raw_onnx(bare, 2.0)
        for n, v in again.items():
            if v["images_per_s"] > results["raw_onnx"][n]["images_per_s"]:
                results["raw_onnx"][n] = v
        results["load_average_after"] = os.getloadavg()[0]
    finally:
        for server in servers.values():
            server.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(report(results, clients, sizes, " ".join(sys.argv)))


def machine() -> str:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime

    return (f"{cpus} CPUs ({model or platform.processor()}), Python {platform.python_version()}, "
            f"BentoML {bentoml.__version__}, ONNX Runtime {onnxruntime.__version__}")


def paired_median(rates: list[float], floors: list[float]) -> float:
    """Median over rounds of rate / floor, the two measured back to back in each round."""
    ratios = sorted(a / b for a, b in zip(rates, floors))
    return ratios[len(ratios) // 2]


def report(r: dict, clients: list[int], sizes: list[int], command: str) -> str:
    s, raw, noop = r["service"], r["raw_onnx"], r["noop"]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = [f"Command: `{command}`  ", f"Machine: {r['machine']}  ",
             f"Load average (1 min) before and after: {r['load_average_before']:.1f}, "
             f"{r['load_average_after']:.1f}  ", f"Model: {r['model']}", "",
             "| floor | figure | CPU per request or image |", "|---|---|---|"]
    for c, v in noop.items():
        lines.append(f"| no-op BentoML endpoint, {c} client(s) | {v['rps']:.0f} req/s, p50 {v['p50_ms']:.1f} ms "
                     f"| server {v['server_cpu_ms']:.2f} ms + client {v['client_cpu_ms']:.2f} ms |")
    for n, v in raw.items():
        lines.append(f"| raw ONNX Runtime, batch {n} | {v['images_per_s']:.0f} images/s | {v['cpu_ms_per_image']:.2f} ms |")
    lines += ["", "| n | clients | batching | req/s | images/s | p50 ms | p99 ms | failed | CPU ms/req server + client |",
              "|---|---|---|---|---|---|---|---|---|"]
    for n in sizes:
        for c in clients:
            for mode in ("on", "off"):
                v = s[f"{mode} n={n} c={c}"]
                lines.append(f"| {n} | {c} | {mode} | {v['rps']:.1f} | {v['images_per_s']:.0f} | "
                             f"{v['p50_ms']:.1f} | {v['p99_ms']:.1f} | {v['failures']} | "
                             f"{v['server_cpu_ms']:.2f} + {v['client_cpu_ms']:.2f} |")
    cpu = lambda v: v["server_cpu_ms"] + v["client_cpu_ms"]  # noqa: E731
    lines += ["", "Wall: the median over rounds of the ratio of the two rates measured back to back "
              f"in each round. CPU: the rate {cpus} CPUs would "
              "sustain at the measured CPU time per request, server and load client together, "
              "which background load on a shared machine disturbs much less.", "",
              "| goal | wall | CPU | met (wall / CPU) |", "|---|---|---|---|"]

    def goal(text: str, wall: float, by_cpu: float, floor: float, fmt: str = "{:.0%}") -> None:
        ok = lambda x: "yes" if x >= floor else "NO"  # noqa: E731
        lines.append(f"| {text} | {fmt.format(wall)} | {fmt.format(by_cpu)} | {ok(wall)} / {ok(by_cpu)} |")

    if 1 in sizes and 8 in clients and 8 in noop:
        v = s["on n=1 c=8"]
        goal("n=1 req/s at 8 clients >= 70% of the no-op endpoint's (median of the paired rounds)",
             paired_median(v["rps_rounds"], noop[8]["rps_rounds"]), cpu(noop[8]) / cpu(v), 0.7)
    if 64 in sizes:
        best = max(clients, key=lambda c: s[f"on n=64 c={c}"]["images_per_s"])
        v = s[f"on n=64 c={best}"]
        # wall: against the floor measured in the same rounds (median of the paired ratios)
        goal(f"n=64 images/s at saturation ({best} clients) >= 70% of raw ONNX Runtime at batch 64 "
             "(measured in the same rounds)",
             paired_median([rps * 64 for rps in v["rps_rounds"]], r["raw_rounds"][f"n=64 c={best}"]),
             raw[64]["cpu_ms_per_image"] * 64 / cpu(v), 0.7)
    keys = [(n, c) for n in sizes for c in clients]
    wall = min(s[f"on n={n} c={c}"]["rps"] / s[f"off n={n} c={c}"]["rps"] for n, c in keys)
    by_cpu = min(cpu(s[f"off n={n} c={c}"]) / cpu(s[f"on n={n} c={c}"]) for n, c in keys)
    goal("batching on never slower than off (worst on/off ratio of medians)", wall, by_cpu, 1.0, "{:.2f}")
    # Rounds are paired (on and off back to back): a point where on lost every pair is
    # slower beyond the machine's noise; one where it lost some is within it.
    lost = [(n, c) for n, c in keys
            if all(a < b for a, b in zip(s[f"on n={n} c={c}"]["rps_rounds"],
                                         s[f"off n={n} c={c}"]["rps_rounds"]))]
    lines += ["", "Batching on against off, round by round (req/s ratios of the paired rounds):", "",
              "| n | clients | on/off per round | on slower in every round |", "|---|---|---|---|"]
    for n, c in keys:
        pairs = zip(s[f"on n={n} c={c}"]["rps_rounds"], s[f"off n={n} c={c}"]["rps_rounds"])
        ratios = ", ".join(f"{a / b:.2f}" for a, b in pairs)
        lines.append(f"| {n} | {c} | {ratios} | {'YES' if (n, c) in lost else 'no'} |")
    lines.append("")
    lines.append(f"Points where batching on was slower in every round: {len(lost)} of {len(keys)}"
                 + (f" ({', '.join(f'n={n} c={c}' for n, c in lost)})" if lost else "") + ".  ")
    if 32 in clients:
        failed = sum(s[f"{m} n={n} c=32"]["failures"] for m in ("on", "off") for n in sizes)
        lines.append(f"Failed requests at 32 clients: {failed}.  ")
    lines.append(f"Failed requests in the whole run: {sum(v['failures'] for v in s.values())}.  ")
    rss = max(v[0] for v in r["rss_mb"].values())
    lines.append(f"Resident memory of the serving process after the run: {rss:.0f} MB "
                 f"(whole server tree: {max(v[1] for v in r['rss_mb'].values()):.0f} MB).  ")
    if not r.get("gpu"):
        lines.append("GPU: not measured (the service ran on the CPU provider).")
    return "\n".join(lines)

if __name__ == "__main__":
    main()
