"""Overload: does admission keep the latency of admitted requests bounded?

    python bench/bench_overload.py [--seconds 4] [--rounds 3] [--clients 1,2,4,8,16] [--json out.json]

One `bentoml serve` on loopback with the bundled generator `models/pretrained/dcgan-mnist.onnx`
only, and closed-loop aiohttp clients in this process, each asking `POST /sample` for
n=16 images (default JSON answer), again and again:

1. the saturating load: the fewest clients whose images/s is within 10% of the best
   level measured (images/s stops rising there);
2. that load, 4x and 16x it (`--multiples`), in alternating rounds: requests answered,
   200s, 503s, other failures, p50/p99 and the longest latency of the admitted (200)
   requests as the client sees them, how many admitted requests waited in the model's
   queue longer than the latency target (the server's `dcgan_queue_wait_seconds`), and
   the resident memory of the worker after each round. Clients refused with 503 wait as
   its `Retry-After` says (`--retry now`: they ask again at once, the harshest load).

Goal: at 4x the saturating load, admitted requests keep p99 within 2x of the p99 at
saturation, and none waits longer than the latency target (DCGAN_LATENCY_TARGET_MS).
Takes about 3 minutes with the defaults. Prints a Markdown report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_service import BUNDLED, Server, machine  # noqa: E402

BODY = json.dumps({"n": 16}).encode()


async def closed_loop(url: str, clients: int, seconds: float, warmup: float,
                      retry: str) -> dict:
    """`clients` clients posting BODY to `url` for `seconds` after `warmup`: what each
    request sent inside the window got."""
    import aiohttp

    start_at = time.perf_counter() + warmup
    stop_at = start_at + seconds
    admitted: list[float] = []
    codes: dict[str, int] = {}

    async def client(session) -> None:
        while (sent := time.perf_counter()) < stop_at:
            pause = 0.0
            try:
                async with session.post(url, data=BODY, headers={"Content-Type": "application/json"}) as r:
                    await r.read()
                    code = str(r.status)
                    if r.status == 503 and retry == "after":
                        pause = float(r.headers.get("Retry-After", "1"))
            except (TimeoutError, aiohttp.ClientError) as exc:
                code = type(exc).__name__
            if sent >= start_at:
                codes[code] = codes.get(code, 0) + 1
                if code == "200":
                    admitted.append(time.perf_counter() - sent)
            await asyncio.sleep(min(pause, max(0.0, stop_at - time.perf_counter())))

    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return {"clients": clients, "seconds": seconds, "codes": codes, "admitted": admitted}


def summary(runs: list[dict]) -> dict:
    """Rounds of one load -> counts and latency percentiles of admitted requests (ms)."""
    codes: dict[str, int] = {}
    for run in runs:
        for code, count in run["codes"].items():
            codes[code] = codes.get(code, 0) + count
    latencies = sorted(x for r in runs for x in r["admitted"])

    def q(f: float) -> float:
        return latencies[min(len(latencies) - 1, int(f * len(latencies)))] * 1000 if latencies else float("nan")

    ok, busy = codes.get("200", 0), codes.get("503", 0)
    seconds = sum(r["seconds"] for r in runs)
    return {"clients": runs[0]["clients"], "requests": sum(codes.values()), "ok": ok,
            "rejected_503": busy, "other_failures": sum(codes.values()) - ok - busy,
            "codes": codes, "images_per_s": ok * 16 / seconds, "p50_ms": q(0.5),
            "p99_ms": q(0.99), "max_ms": latencies[-1] * 1000 if latencies else float("nan")}


def queue_waits(url: str) -> dict[str, float]:
    """The server's `dcgan_queue_wait_seconds` buckets (le -> count), summed over models;
    empty for a server without admission."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as answer:
        text = answer.read().decode()
    buckets: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("dcgan_queue_wait_seconds_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[le] = buckets.get(le, 0.0) + float(line.rsplit(" ", 1)[1])
    return buckets


def waits_over(before: dict[str, float], after: dict[str, float],
               target_s: float) -> tuple[int, int, float] | None:
    """(admitted requests that waited longer than the smallest bucket >= target_s, all
    admitted requests, that bucket) between two readings of queue_waits."""
    if not after:
        return None
    bounds = sorted((float(le), le) for le in after if le != "+Inf")
    edge, le = next(((b, le) for b, le in bounds if b >= target_s - 1e-9), (float("inf"), "+Inf"))
    total = after["+Inf"] - before.get("+Inf", 0.0)
    within = after[le] - before.get(le, 0.0)
    return int(total - within), int(total), edge


def git_revision() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=Path(__file__).resolve().parent, timeout=10).stdout.strip()
    except OSError:
        return "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=4.0, help="measured seconds per round")
    ap.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each")
    ap.add_argument("--rounds", type=int, default=3, help="rounds at saturation and at 4x")
    ap.add_argument("--clients", default="1,2,4,8,16,32", help="levels searched for saturation")
    ap.add_argument("--multiples", default="4,16", help="loads run beside saturation")
    ap.add_argument("--saturation", type=int, default=None,
                    help="the saturating load in clients, as found before: no search (to "
                         "compare two versions at the same loads)")
    ap.add_argument("--retry", choices=("after", "now"), default="after",
                    help="after a 503: wait its Retry-After, or ask again at once")
    ap.add_argument("--target-ms", type=int, default=None,
                    help="DCGAN_LATENCY_TARGET_MS for the server (default: the service's)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    env = {"DCGAN_MODELS": str(BUNDLED), "BENTOML_DO_NOT_TRACK": "True"}
    if args.target_ms is not None:
        env["DCGAN_LATENCY_TARGET_MS"] = str(args.target_ms)
    server = Server("service.service:DCGAN", env, "overload")
    try:
        server.wait_ready()
        url = server.url + "/sample"
        search = []
        for clients in [] if args.saturation else (int(c) for c in args.clients.split(",")):
            run = asyncio.run(closed_loop(url, clients, args.seconds, args.warmup, args.retry))
            search.append(summary([run]))
        best = max((s["images_per_s"] for s in search), default=0)
        saturating = args.saturation or next(
            s["clients"] for s in search if s["images_per_s"] >= 0.9 * best)
        with urllib.request.urlopen(server.url + "/model", timeout=10) as answer:
            target = json.load(answer)["batching"].get("latency_target_ms")
        loads = {"saturation": saturating,
                 **{f"{m}x": int(m) * saturating for m in args.multiples.split(",")}}
        runs: dict[str, list[dict]] = {name: [] for name in loads}
        rss: dict[str, list[float]] = {name: [] for name in loads}
        over: dict[str, list[tuple[int, int, float]]] = {name: [] for name in loads}
        for _ in range(args.rounds):
            for name, clients in loads.items():
                before = queue_waits(server.url)
                runs[name].append(asyncio.run(
                    closed_loop(url, clients, args.seconds, args.warmup, args.retry)))
                rss[name].append(server.rss_mb()[0])
                if target and (counted := waits_over(before, queue_waits(server.url), target / 1000)):
                    over[name].append(counted)
    finally:
        server.stop()

    results = {"machine": machine(), "revision": git_revision(), "retry": args.retry,
               "target_ms": target, "search": search, "saturating_clients": saturating,
               "loads": {name: {**summary(runs[name]), "worker_rss_mb": max(rss[name]),
                                "queue_waits_over_target": [sum(c[0] for c in over[name]),
                                                            sum(c[1] for c in over[name])]
                                if over[name] else None,
                                "wait_bucket_s": over[name][0][2] if over[name] else None}
                         for name in loads}}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(report(results))


def report(r: dict) -> str:
    lines = [f"Machine: {r['machine']}; revision {r['revision']}; latency target "
             f"{r['target_ms'] if r['target_ms'] is not None else 'none (no admission)'} ms; "
             f"after a 503 clients {'wait its Retry-After' if r['retry'] == 'after' else 'ask again at once'}.",
             ""]
    if r["search"]:
        lines += ["Saturation search (one round each):", "",
                  "| clients | images/s | p50 ms | p99 ms | 503 |", "|---|---|---|---|---|"]
    for s in r["search"]:
        lines.append(f"| {s['clients']} | {s['images_per_s']:.0f} | {s['p50_ms']:.0f} | "
                     f"{s['p99_ms']:.0f} | {s['rejected_503']} |")
    lines += ["", f"Saturating load: {r['saturating_clients']} clients"
              f"{'' if r['search'] else ' (given)'}.", "",
              "| load | clients | requests | 200 | 503 | other failures | images/s | "
              "p50 ms | p99 ms | longest ms | queue waits > target | worker RSS MB |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in r["loads"].items():
        waits = "n/a" if s["queue_waits_over_target"] is None else "{} of {}".format(
            *s["queue_waits_over_target"])
        lines.append(f"| {name} | {s['clients']} | {s['requests']} | {s['ok']} | "
                     f"{s['rejected_503']} | {s['other_failures']} | {s['images_per_s']:.0f} | "
                     f"{s['p50_ms']:.0f} | {s['p99_ms']:.0f} | {s['max_ms']:.0f} | {waits} | "
                     f"{s['worker_rss_mb']:.0f} |")
    sat, over = r["loads"]["saturation"], r["loads"]["4x"]
    ratio = over["p99_ms"] / sat["p99_ms"]
    lines += ["", f"- p99 at 4x / p99 at saturation: {ratio:.2f} (goal <= 2: "
                  f"{'met' if ratio <= 2 else 'NOT met'})"]
    if r["target_ms"]:
        met = over["max_ms"] <= r["target_ms"]
        lines.append(f"- longest admitted request at 4x, as the client sees it: "
                     f"{over['max_ms']:.0f} ms against the target {r['target_ms']} ms "
                     f"({'met' if met else 'NOT met'})")
    if over["queue_waits_over_target"] is not None:
        late, total = over["queue_waits_over_target"]
        lines.append(f"- admitted requests at 4x that waited in the queue longer than "
                     f"{over['wait_bucket_s'] * 1000:.0f} ms (the histogram bucket at or above "
                     f"the target): {late} of {total}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
