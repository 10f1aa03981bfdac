"""Benchmark the Open Inference Protocol and two models in one service, each beside its
floor in the same run:

    python bench/bench_oip.py [--seconds 2] [--rounds 5] [--clients 2,4,8] [--json out.json]

One `bentoml serve` with the default configuration (both bundled generators, `mnist`
and `mnist-cond`), a no-op BentoML endpoint (bench_service's `Noop`), and raw ONNX
Runtime in this process with the service's session options. Each point alternates the
service and its floor in every round, as bench/bench_service.py does:

- binary `infer` of 64 images (`mnist`, seeds as a binary INT64 tensor, images back as
  binary UINT8) at 2, 4 and 8 clients, against raw ONNX Runtime at batch 64: the best
  point (saturation) should reach 70% of it;
- JSON `infer` of 1 image at 8 clients against the no-op endpoint at 8 clients: 70%;
- with two models loaded, the /sample goals of bench_service: n=1 at 8 clients 70% of
  the no-op, n=64 at saturation 70% of raw ONNX Runtime; and, after every point (both
  models used at batch 64), the resident memory of the serving worker: 400 MB at most.

Takes about 4 minutes with the defaults. Prints a Markdown report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_service import (  # noqa: E402
    BUNDLED,
    Server,
    bare_generator,
    load,
    machine,
    paired_median,
    raw_rate,
    summarise,
)

COND = BUNDLED.with_name("dcgan-mnist-cond.onnx")
MAX_RSS_MB = 400


def infer_body(n: int, binary: bool) -> tuple[bytes, dict[str, str]]:
    """An infer request for seeds 0..n-1: JSON, or a JSON header and a binary tensor,
    asking for the images only."""
    import numpy as np

    tensor = {"name": "seed", "datatype": "INT64", "shape": [n]}
    outputs = [{"name": "images", "parameters": {"binary_data": binary}}]
    if not binary:
        tensor["data"] = list(range(n))
        return json.dumps({"inputs": [tensor], "outputs": outputs}).encode(), {
            "Content-Type": "application/json"}
    tensor["parameters"] = {"binary_data_size": 8 * n}
    head = json.dumps({"inputs": [tensor], "outputs": outputs}).encode()
    return head + np.arange(n, dtype="<i8").tobytes(), {
        "Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--clients", default="2,4,8", help="clients for the n=64 points")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    for path in (BUNDLED, COND):
        if not path.is_file():
            sys.exit(f"{path} is missing: this benchmark serves both bundled generators")
    clients = [int(c) for c in args.clients.split(",")]
    env = {"BENTOML_DO_NOT_TRACK": "True"}
    for variable in ("DCGAN_MODELS", "DCGAN_MODEL"):  # the default configuration: both bundled
        os.environ.pop(variable, None)
    servers = {"noop": Server("bench.bench_service:Noop", env, "noop"),
               "two": Server("service.service:DCGAN", env, "two-models")}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results: dict = {"machine": machine(), "points": {}, "load_average_before": os.getloadavg()[0]}

    def point(name: str, target: tuple, floor: tuple) -> dict:
        """Rounds of (target, floor) alternating order; target/floor: ("raw", n) or
        (server, path, body, clients, headers)."""
        runs: dict[str, list[dict]] = {"target": [], "floor": []}
        for k in range(args.rounds):
            for key, spec in (("target", target), ("floor", floor))[:: 1 if k % 2 == 0 else -1]:
                if spec[0] == "raw":
                    r = raw_rate(bare, spec[1], args.seconds)
                    runs[key].append({"rps": r["images_per_s"], "images_per_s": r["images_per_s"]})
                else:
                    server, path, body, c, headers = spec
                    runs[key].append(asyncio.run(load(servers[server], path, body, c,
                                                      args.seconds, args.warmup, headers)))
        out = {}
        for key, found in runs.items():
            spec = target if key == "target" else floor
            out[key] = ({"rps": sorted(r["rps"] for r in found)[len(found) // 2],
                         "rps_rounds": [r["rps"] for r in found]} if spec[0] == "raw"
                        else summarise(found))
        results["points"][name] = out
        t = out["target"]
        print(f"{name:<40} {t['rps']:8.1f}/s p50 {t.get('p50_ms', float('nan')):7.1f} ms "
              f"failed {t.get('failures', 0)}; floor {out['floor']['rps']:8.1f}/s", file=sys.stderr)
        return out

    try:
        for server in servers.values():
            server.wait_ready()
        bare = bare_generator(BUNDLED)
        url = "/v2/models/mnist/infer"
        binary64, binary_headers = infer_body(64, binary=True)
        json1, json_headers = infer_body(1, binary=False)
        for c in clients:
            point(f"infer binary n=64 c={c}", ("two", url, binary64, c, binary_headers), ("raw", 64))
        point("infer json n=1 c=8", ("two", url, json1, 8, json_headers),
              ("noop", "/noop", {"n": 1}, 8, None))
        point("sample n=1 c=8", ("two", "/sample", {"n": 1, "seed": 0}, 8, None),
              ("noop", "/noop", {"n": 1}, 8, None))
        for c in clients:
            point(f"sample n=64 c={c}", ("two", "/sample", {"n": 64, "seed": 0}, c, None), ("raw", 64))
        # the second model at batch 64 too, so that both sessions hold their buffers
        asyncio.run(load(servers["two"], "/sample", {"n": 64, "seed": 0, "model": "mnist-cond"}, 4,
                         args.seconds, args.warmup))
        results["rss_mb"] = servers["two"].rss_mb()
        results["load_average_after"] = os.getloadavg()[0]
    finally:
        for server in servers.values():
            server.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(report(results, clients, " ".join(sys.argv)))


def report(r: dict, clients: list[int], command: str) -> str:
    p = r["points"]
    lines = [f"Command: `{command}`  ", f"Machine: {r['machine']}  ",
             f"Load average (1 min) before and after: {r['load_average_before']:.1f}, "
             f"{r['load_average_after']:.1f}  ",
             "Models: `mnist` and `mnist-cond` in one server (the default configuration)", "",
             "| point | service | floor | p50 / p99 ms | failed |", "|---|---|---|---|---|"]
    for name, v in p.items():
        t, f = v["target"], v["floor"]
        unit = "images/s" if "n=64" in name else "req/s"
        scale = 64 if "n=64" in name else 1
        lines.append(f"| {name} | {t['rps'] * scale:.0f} {unit} | {f['rps']:.0f} "
                     f"{'images/s (raw ONNX Runtime, batch 64)' if 'n=64' in name else 'req/s (no-op)'} | "
                     f"{t['p50_ms']:.1f} / {t['p99_ms']:.1f} | {t['failures']} |")

    def ratio(name: str, scale: int) -> float:
        v = p[name]
        return paired_median([x * scale for x in v["target"]["rps_rounds"]], v["floor"]["rps_rounds"])

    def best(prefix: str) -> str:
        return max((f"{prefix} c={c}" for c in clients), key=lambda k: p[k]["target"]["rps"])

    goals = [
        (f"binary infer n=64 at saturation ({best('infer binary n=64')}) >= 70% of raw ONNX Runtime",
         ratio(best("infer binary n=64"), 64), 0.7),
        ("JSON infer n=1 at 8 clients >= 70% of the no-op", ratio("infer json n=1 c=8", 1), 0.7),
        ("two models: /sample n=1 at 8 clients >= 70% of the no-op", ratio("sample n=1 c=8", 1), 0.7),
        (f"two models: /sample n=64 at saturation ({best('sample n=64')}) >= 70% of raw ONNX Runtime",
         ratio(best("sample n=64"), 64), 0.7),
    ]
    lines += ["", "Ratios: the median over rounds of service / floor, the two measured back to "
              "back in each round.", "", "| goal | measured | met |", "|---|---|---|"]
    for text, value, floor in goals:
        lines.append(f"| {text} | {value:.0%} | {'yes' if value >= floor else 'NO'} |")
    rss, tree = r["rss_mb"]
    lines.append(f"| two models: resident memory of the serving worker <= {MAX_RSS_MB} MB | "
                 f"{rss:.0f} MB (whole server: {tree:.0f} MB) | {'yes' if rss <= MAX_RSS_MB else 'NO'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
