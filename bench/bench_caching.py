"""What a revalidation costs against a full answer, on a real `bentoml serve`.

    python bench/bench_caching.py [--seconds 3] [--rounds 3] [--clients 8] [--sizes 1,16,64]

For each n, `--clients` closed-loop clients post the same /sample request (seed 0,
JSON) to a server of models/pretrained/dcgan-mnist.onnx on loopback, either plainly
(200: inference and PNG encoding) or with the ETag of its answer in If-None-Match
(304: no inference, no body), in rounds that alternate which goes first. Reports
requests/s (median over rounds), p50/p99 latency over all requests, and bytes per
answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_service import BUNDLED, Server, machine  # noqa: E402


async def revalidate_or_not(server: Server, body: dict, headers: dict[str, str], expect: int,
                            clients: int, seconds: float) -> dict:
    """Closed-loop clients posting `body` with `headers` for `seconds`; every answer must
    have status `expect`."""
    import aiohttp

    payload = json.dumps(body).encode()
    latencies: list[float] = []
    sizes: list[int] = []
    wrong = 0
    stop_at = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def client() -> None:
            nonlocal wrong
            while (sent := time.perf_counter()) < stop_at:
                async with session.post(server.url + "/sample", data=payload, headers=headers) as r:
                    sizes.append(len(await r.read()))
                    wrong += r.status != expect
                latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(client() for _ in range(clients)))
    latencies.sort()
    return {"rps": len(latencies) / seconds, "latencies": latencies, "wrong": wrong,
            "bytes": sum(sizes) / max(len(sizes), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--sizes", default="1,16,64")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    server = Server("service.service:DCGAN", {"DCGAN_MODELS": str(BUNDLED),
                                              "BENTOML_DO_NOT_TRACK": "True"}, "caching")
    rows = []
    try:
        server.wait_ready()
        for n in (int(x) for x in args.sizes.split(",")):
            body = {"n": n, "seed": 0}
            plain = {"Content-Type": "application/json"}
            tag = asyncio.run(_etag(server, body))
            kinds = [("200", plain, 200), ("304", {**plain, "If-None-Match": tag}, 304)]
            runs: dict[str, list[dict]] = {name: [] for name, _, _ in kinds}
            for k in range(args.rounds):
                for name, headers, expect in kinds if k % 2 == 0 else kinds[::-1]:
                    runs[name].append(asyncio.run(revalidate_or_not(
                        server, body, headers, expect, args.clients, args.seconds)))
            for name, found in runs.items():
                latencies = sorted(x for r in found for x in r["latencies"])
                rates = sorted(r["rps"] for r in found)
                rows.append((n, name, rates[len(rates) // 2], latencies[len(latencies) // 2] * 1000,
                             latencies[int(0.99 * (len(latencies) - 1))] * 1000,
                             found[0]["bytes"], sum(r["wrong"] for r in found)))
                print(f"n={n} {name}: {rows[-1][2]:.0f} req/s p50 {rows[-1][3]:.1f} ms "
                      f"p99 {rows[-1][4]:.1f} ms", file=sys.stderr)
    finally:
        server.stop()
    print(f"`{' '.join(['python', *sys.argv])}`\n\nMachine: {machine()}; {args.clients} clients, "
          f"load average {os.getloadavg()[0]:.2f} at the end.\n")
    print("| n | answer | req/s | p50 ms | p99 ms | bytes | other status |\n|---|---|---|---|---|---|---|")
    for n, name, rps, p50, p99, size, wrong in rows:
        print(f"| {n} | {name} | {rps:.0f} | {p50:.1f} | {p99:.1f} | {size:.0f} | {wrong} |")


async def _etag(server: Server, body: dict) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.post(server.url + "/sample", json=body) as r:
            return r.headers["ETag"]


if __name__ == "__main__":
    main()
