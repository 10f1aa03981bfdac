"""Generator quality by loss, at equal steps: the table of BENCHMARKS.md's quality section.

For each dataset and each loss of the design (minimax, non-saturating, WGAN with
clipping, WGAN-GP, hinge), one training run of the same number of generator steps from
the same seed, with the design's optimiser settings (one D step, Adam 2e-4; `--recipe`
and bench/bench_toys.py give each loss its paper's); its final checkpoint is then
evaluated twice, with the raw generator weights and with their EMA (the same run, so
the EMA column isolates the averaging). Figures: FD in the classifier's feature space
(points for the toys) beside its real-vs-real floor, and for images in the second
feature network too, with precision and recall; class coverage or the PacGAN mode
figures; training and evaluation time.

    python bench/bench_quality.py --datasets mnist5k,ring,grid --image-steps 1000 \
        --toy-steps 2000 [--losses minimax,nonsaturating,wgan,wgan-gp,hinge] [--device cuda]

Runs go to --out (default: a temporary folder); the markdown table goes to stdout and,
with --json, every figure to a file.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LOSSES = ("minimax", "nonsaturating", "wgan", "wgan-gp", "hinge")
TOYS = ("ring", "grid")


def run_one(dataset: str, loss: str, args, out: Path) -> list[dict]:
    """Train one run, evaluate its raw and EMA generators; one row per weights."""
    from training.checkpoint import load_torch_generator
    from training.config import TrainConfig, resolve
    from training.evaluate import evaluate
    from training.loop import train

    toy = dataset in TOYS
    steps = args.toy_steps if toy else args.image_steps
    run_dir = out / f"{dataset}-{loss}"
    config = resolve(TrainConfig(
        dataset=dataset, loss=loss, steps=steps, batch_size=args.batch_size, seed=args.seed,
        image_size=args.image_size, ngf=args.ngf, ndf=args.ngf, ema_decay=args.ema_decay,
        device=args.device, run_dir=str(run_dir), log_every=max(steps // 10, 1),
        sample_every=steps, checkpoint_every=steps, threads=args.threads,
        lr_decay="none",  # constant rates, as the table was measured (toys now decay by default)
        command=" ".join(sys.argv),
    ))
    started = time.perf_counter()
    train(config, progress=False)
    train_seconds = time.perf_counter() - started
    rows = []
    for weights in ("raw", "ema"):
        generator, card = load_torch_generator(run_dir, weights=weights, device=args.device)
        metrics = ["fd", "modes"] if toy else ["fd", "prdc", "coverage"]
        started = time.perf_counter()
        figures = evaluate((generator, card), dataset=dataset, num_samples=args.num_samples,
                           metrics=metrics, device=args.device)
        rows.append({"dataset": dataset, "loss": loss, "weights": card.weights, "steps": steps,
                     "train_s": train_seconds, "eval_s": time.perf_counter() - started, **figures})
    return rows


def coverage_cell(row: dict) -> str:
    if "modes" in row:
        kl = "-" if row["reverse_kl"] is None else f"{row['reverse_kl']:.2f}"
        return f"{row['modes']}/{row['num_modes']} modes, {row['high_quality']:.1f}% HQ, rKL {kl}"
    return f"{row['classes_covered']}/{row['num_classes']} classes, KL {row['class_kl']:.3f}"


def floor_cell(row: dict) -> str:
    if "modes" in row:
        return f"{row['modes_floor']}/{row['num_modes']}, {row['high_quality_floor']:.1f}% HQ"
    return f"{row['classes_covered_floor']}/{row['num_classes']}, KL {row['class_kl_floor']:.3f}"


def markdown(rows: list[dict]) -> str:
    if any("fd2" in row for row in rows):
        return two_networks(rows)
    lines = ["| dataset | loss | weights | steps | FD | FD floor | FD ratio | coverage | "
             "coverage of real | train s | eval s |",
             "|---|---|---|---:|---:|---:|---:|---|---|---:|---:|"]
    for row in rows:
        ratio = "-" if row["fd_ratio"] is None else f"{row['fd_ratio']:.1f}"
        lines.append(
            f"| {row['dataset']} | {row['loss']} | {row['weights']} | {row['steps']} | "
            f"{row['fd']:.3g} | {row['fd_floor']:.3g} | {ratio} | {coverage_cell(row)} | "
            f"{floor_cell(row)} | {row['train_s']:.0f} | {row['eval_s']:.0f} |")
    return "\n".join(lines)


def pair(row: dict, key: str, digits: str) -> str:
    """`key` in the first feature network / in the second (`fd2_ratio`, `precision2`)."""
    second = "fd2_ratio" if key == "fd_ratio" else f"{key}2"
    values = [row.get(key), row.get(second)]
    return " / ".join("-" if v is None else format(v, digits) for v in values)


def two_networks(rows: list[dict]) -> str:
    """Images measured in both feature networks: each FD ratio, precision and recall
    (network 1 / network 2), the floors in the last row."""
    lines = ["| dataset | loss | weights | steps | FD ratio 1 / 2 | precision 1 / 2 | "
             "recall 1 / 2 | coverage | train s |",
             "|---|---|---|---:|---|---|---|---|---:|"]
    for row in rows:
        lines.append(f"| {row['dataset']} | {row['loss']} | {row['weights']} | {row['steps']} | "
                     f"{pair(row, 'fd_ratio', '.3g')} | {pair(row, 'precision', '.3f')} | "
                     f"{pair(row, 'recall', '.3f')} | {coverage_cell(row)} | {row['train_s']:.0f} |")
    if rows:
        floor = {key: rows[0].get(f"{key}_floor") for key in ("precision", "precision2", "recall", "recall2")}
        lines.append(f"| real vs real | | | | 1 / 1 | {pair(floor, 'precision', '.3f')} | "
                     f"{pair(floor, 'recall', '.3f')} | {floor_cell(rows[0])} | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="mnist5k,ring,grid")
    parser.add_argument("--losses", default=",".join(LOSSES))
    parser.add_argument("--image-steps", type=int, default=1000, help="generator steps on images")
    parser.add_argument("--toy-steps", type=int, default=2000, help="generator steps on the toys")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--ngf", type=int, default=64, help="ngf = ndf of the DCGAN")
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--num-samples", type=int, default=None,
                        help="evaluation samples (default: 1000 images, 2500 toy points)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument("--table", type=Path, nargs="+", default=None,
                        help="only print the table of these --json files, one after the other")
    args = parser.parse_args()
    if args.table:
        print(markdown([row for path in args.table for row in json.loads(path.read_text())]))
        return

    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch)
        for dataset in args.datasets.split(","):
            for loss in args.losses.split(","):
                print(f"# {dataset} / {loss} ...", file=sys.stderr, flush=True)
                rows += run_one(dataset.strip(), loss.strip(), args, out)
                if args.json:  # as it goes: a long table survives an interruption
                    args.json.write_text(json.dumps(rows, indent=2) + "\n")
    import torch

    machine = f"{platform.machine()}, {torch.get_num_threads()} CPU threads" + (
        f", {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else ", no GPU")
    print(f"<!-- {' '.join(sys.argv)} -->\n<!-- {machine}, torch {torch.__version__} -->")
    print(markdown(rows))


if __name__ == "__main__":
    main()
