"""Resident memory of a service worker under load, and what caps it.

    python bench/bench_memory.py [--seconds 60] [--clients 64] [--rounds 2]
        [--variant NAME[:VAR=VALUE,...]] ...

Each variant is a real `bentoml serve` of models/pretrained/dcgan-mnist.onnx on loopback
with the environment variables given (none: the service as shipped), loaded by
`--clients` closed-loop clients for `--seconds`, each asking /sample for a mixed load
(n from 1 to 64; JSON PNGs, one PNG grid or float arrays) with fresh seeds, while the
worker's resident memory is sampled every second. Variants alternate within each round
(the first goes first in even rounds, last in odd ones), so background load hits them
alike. Reported per run: the worker's resident memory when ready, after `--warmup`
seconds of load, its peak and its end value; growth is end over warm-up; throughput in
requests and images per second, so that a cap that costs speed shows.

Without --variant it compares `bare` (no caps: a plain `bentoml serve`) with `bento`
(the environment bentofile.yaml gives the container, `envs`: MALLOC_ARENA_MAX=2).
Another cap to try, say: `--variant mmap:MALLOC_MMAP_THRESHOLD_=131072`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_service import BUNDLED, ROOT, Server, machine  # noqa: E402

# (n, format, weight): mostly small JSON requests, some as large as a request may be
# (n=128, twice a batch: it goes to ONNX Runtime alone) and some arrays (64 images as
# floats are about 1.3 MB of JSON).
MIX = [(1, "json", 4), (4, "json", 4), (16, "json", 3), (64, "json", 1), (128, "json", 1),
       (16, "png", 2), (128, "png", 1), (4, "array", 2), (64, "array", 1)]


def worker_rss_mb(server: Server) -> float:
    """Resident memory of the worker: the largest process of the server's tree."""
    return server.rss_mb()[0]


async def run_load(server: Server, clients: int, seconds: float, warmup: float) -> dict:
    """Closed-loop clients for `seconds`, the worker's memory sampled every second."""
    import aiohttp

    rng = random.Random(0)
    mix = [(n, fmt) for n, fmt, weight in MIX for _ in range(weight)]
    url = server.url + "/sample"
    latencies: list[float] = []
    samples: list[tuple[float, float]] = []
    counts = {"requests": 0, "images": 0, "failures": 0}
    start = time.perf_counter()
    stop_at = start + seconds

    async def sampler() -> None:
        while (now := time.perf_counter()) < stop_at:
            samples.append((now - start, worker_rss_mb(server)))
            await asyncio.sleep(1.0)
        samples.append((time.perf_counter() - start, worker_rss_mb(server)))

    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as s:

        async def client() -> None:
            while (sent := time.perf_counter()) < stop_at:
                n, fmt = rng.choice(mix)
                body = {"n": n, "seed": rng.randrange(2**31), "format": fmt}
                try:
                    async with s.post(url, json=body) as r:
                        await r.read()
                        ok = r.status == 200
                except aiohttp.ClientError:
                    ok = False
                latencies.append(time.perf_counter() - sent)
                counts["requests"] += 1
                counts["images"] += n if ok else 0
                counts["failures"] += not ok

        await asyncio.gather(sampler(), *(client() for _ in range(clients)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    at_warmup = next((rss for t, rss in samples if t >= warmup), samples[-1][1])
    return {
        "rss_warmup_mb": at_warmup, "rss_end_mb": samples[-1][1],
        "rss_peak_mb": max(rss for _, rss in samples),
        "growth_after_warmup": samples[-1][1] / at_warmup - 1,
        "rps": counts["requests"] / elapsed, "images_per_s": counts["images"] / elapsed,
        "failures": counts["failures"],
        "p50_ms": latencies[len(latencies) // 2] * 1000 if latencies else float("nan"),
        "p99_ms": latencies[int(0.99 * (len(latencies) - 1))] * 1000 if latencies else float("nan"),
        "samples": [(round(t, 1), round(rss, 1)) for t, rss in samples],
    }


def one_run(name: str, env: dict[str, str], args) -> dict:
    """One server with `env` over the defaults (an empty value unsets a variable)."""
    env = {"DCGAN_MODELS": str(BUNDLED), "BENTOML_DO_NOT_TRACK": "True", **env}
    unset = [var for var, value in env.items() if not value]
    saved = {var: os.environ.pop(var) for var in unset if var in os.environ}
    try:
        server = Server("service.service:DCGAN", {k: v for k, v in env.items() if v}, name)
    finally:
        os.environ.update(saved)
    try:
        server.wait_ready()
        time.sleep(1.0)
        ready = worker_rss_mb(server)
        result = asyncio.run(run_load(server, args.clients, args.seconds, args.warmup))
    finally:
        server.stop()
    result.update(variant=name, rss_ready_mb=ready, load_average=os.getloadavg()[0])
    print(f"{name:>10}: ready {ready:6.1f} MB, after {args.warmup:g} s {result['rss_warmup_mb']:6.1f}, "
          f"peak {result['rss_peak_mb']:6.1f}, end {result['rss_end_mb']:6.1f} MB "
          f"(growth {result['growth_after_warmup']:+.0%}); {result['rps']:6.1f} req/s "
          f"{result['images_per_s']:6.0f} img/s p50 {result['p50_ms']:.0f} ms "
          f"p99 {result['p99_ms']:.0f} ms failed {result['failures']}; "
          f"load {result['load_average']:.2f}", file=sys.stderr)
    return result


def bento_envs() -> dict[str, str]:
    """The environment bentofile.yaml gives the Bento's container."""
    import yaml

    bentofile = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    return {env["name"]: str(env["value"]) for env in bentofile.get("envs", [])}


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """"name:VAR=VALUE,VAR=VALUE" -> (name, env); an empty VALUE unsets the variable."""
    name, _, rest = text.partition(":")
    env = dict(item.split("=", 1) for item in rest.split(",") if item)
    return name, env


def report(runs: list[dict], args, command: str) -> str:
    lines = [f"`{command}`", "", f"Machine: {machine()}; {args.clients} clients, "
             f"{args.seconds:g} s per run, warm-up value after {args.warmup:g} s of load.", "",
             "| variant | round | ready MB | warm-up MB | peak MB | end MB | growth | req/s | img/s "
             "| p50 ms | p99 ms | failed | load avg |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(
            f"| {r['variant']} | {r['round']} | {r['rss_ready_mb']:.0f} | {r['rss_warmup_mb']:.0f} "
            f"| {r['rss_peak_mb']:.0f} | {r['rss_end_mb']:.0f} | {r['growth_after_warmup']:+.0%} "
            f"| {r['rps']:.1f} | {r['images_per_s']:.0f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} "
            f"| {r['failures']} | {r['load_average']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="load per run")
    ap.add_argument("--warmup", type=float, default=10.0,
                    help="seconds of load after which the warm-up value is taken")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--variant", action="append", default=[], metavar="NAME[:VAR=VALUE,...]",
                    help="a server configuration (repeatable); default: the service as shipped")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    variants = [parse_variant(v) for v in args.variant] or [
        ("bare", {"MALLOC_ARENA_MAX": ""}), ("bento", bento_envs())]
    # A SIGTERM (a timeout, say) must still stop the servers: make it an exception.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    runs = []
    for k in range(args.rounds):
        for name, env in variants if k % 2 == 0 else variants[::-1]:
            runs.append({**one_run(name, env, args), "round": k + 1})
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1))
    print(report(runs, args, " ".join(["python", *sys.argv])))


if __name__ == "__main__":
    main()
