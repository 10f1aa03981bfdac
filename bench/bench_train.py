"""Training speed at the reference configuration: steps/s and images/s.

Reference configuration (Radford et al. 2015 as in pytorch/examples' dcgan/main.py):
random 64x64 RGB images ("fake"), batch 64, nz 100, ngf = ndf = 64.

Each contender runs in its own process, one after the other, in alternating rounds,
so that both see the same machine; the figure is the median over rounds of the rate
between a warm-up step and the last step. Optionally the reference script itself
(pass its path; it is not part of this project) runs under the same rules, timed from
its per-iteration log lines.

    python bench/bench_train.py --steps 40 --warmup 8 --rounds 3 \
        [--reference path/to/examples/dcgan/main.py] [--device cuda --batch-size 256 --amp ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_ours(args, extra: list[str]) -> float:
    """Steps/s of `dcgan train` between the warm-up step and the last step."""
    with tempfile.TemporaryDirectory() as run_dir:
        command = [
            sys.executable, "-m", "training.cli", "train", "--dataset", "fake",
            "--image-size", str(args.image_size), "--channels", "3", "--batch-size", str(args.batch_size),
            "--nz", "100", "--ngf", "64", "--ndf", "64", "--steps", str(args.steps),
            "--log-every", "1", "--sample-every", str(10**9), "--checkpoint-every", str(10**9),
            "--device", args.device, "--run-dir", run_dir, "--no-progress", *extra,
        ]
        subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        records = [json.loads(line) for line in Path(run_dir, "metrics.jsonl").read_text().splitlines()]
    by_step = {r["step"]: r["elapsed_s"] for r in records}
    return (args.steps - args.warmup) / (by_step[args.steps] - by_step[args.warmup])


def run_reference(args) -> float:
    """Steps/s of the reference script, timed from its per-iteration log lines."""
    # its FakeData holds 1,000 images (15 full batches an epoch): run enough epochs
    pattern = re.compile(r"^\[\d+/\d+\]\[\d+/\d+\]")
    epochs = str(args.steps // 15 + 2)
    with tempfile.TemporaryDirectory() as out_dir:
        command = [sys.executable, "-u", args.reference, "--dataset", "fake", "--niter", epochs,
                   "--batchSize", str(args.batch_size), "--imageSize", str(args.image_size),
                   "--outf", out_dir, "--manualSeed", "0"]
        if args.device == "cuda":
            command.append("--accel")
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        seen: dict[int, float] = {}
        for line in proc.stdout:
            if pattern.match(line):
                seen[len(seen) + 1] = time.perf_counter()  # iterations done
                if len(seen) >= args.steps:
                    break
        proc.kill()
        proc.wait()
    return (args.steps - args.warmup) / (seen[args.steps] - seen[args.warmup])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reference", help="path to pytorch/examples' dcgan/main.py, to compare")
    parser.add_argument("--variant", action="append", default=[],
                        help="extra `dcgan train` options as one string, e.g. '--channels-last'; repeatable")
    args = parser.parse_args()

    contenders: dict[str, callable] = {}
    if args.reference:
        contenders["reference (pytorch/examples dcgan)"] = lambda: run_reference(args)
    contenders["dcgan train"] = lambda: run_ours(args, [])
    for variant in args.variant:
        contenders[f"dcgan train {variant}"] = lambda v=variant: run_ours(args, v.split())
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, run in contenders.items():
            rates[name].append(run())
            print(f"  {name}: {rates[name][-1]:.3f} steps/s", file=sys.stderr)

    cpu = platform.processor() or platform.machine()
    print(f"\nmachine: {os.cpu_count()} CPUs ({cpu}), device {args.device}; "
          f"{args.image_size}x{args.image_size} RGB, batch {args.batch_size}, nz 100, ngf = ndf = 64; "
          f"median of {args.rounds} rounds, steps {args.warmup}..{args.steps}\n")
    print("| contender | steps/s | images/s | vs reference |")
    print("|---|---|---|---|")
    base = statistics.median(rates[next(iter(rates))]) if args.reference else None
    for name, values in rates.items():
        median = statistics.median(values)
        ratio = f"{median / base:.2f}x" if base else "-"
        print(f"| {name} | {median:.3f} | {median * args.batch_size:.1f} | {ratio} |")


if __name__ == "__main__":
    main()
