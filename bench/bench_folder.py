"""Training speed on a folder of JPEGs: decoding every image at every epoch (what the
`folder` dataset did before its cache) against the decoded cache (training/folder.py).

A folder of seeded JPEG "photos" (smooth random textures, --side pixels square, quality
90) is written once; then, alternately, short training runs at 64x64 RGB read it
through each path, and each run's steps/s (after its first logged window, which holds
the start-up) is recorded, with the data path alone (images/s through the DataLoader)
and the one-off cost of building the cache.

    python bench/bench_folder.py --images 300 --side 256 --steps 40 --repeats 2 --work bench-jpegs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def write_jpegs(folder: Path, count: int, side: int) -> Path:
    """Smooth random textures: low-resolution noise upscaled, plus stripes."""
    import numpy as np
    from PIL import Image

    if folder.is_dir() and len(list(folder.glob("*.jpg"))) == count:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:side, 0:side]
    for index in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize(
            (side, side), Image.Resampling.BICUBIC)
        angle, period = rng.uniform(0, np.pi), rng.uniform(8, 40)
        stripes = 0.75 + 0.25 * np.sin((np.cos(angle) * cols + np.sin(angle) * rows) * 2 * np.pi / period)
        pixels = np.asarray(coarse, dtype=np.float64) * stripes[..., None]
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{index:04d}.jpg", quality=90)
    return folder


class DecodeEveryTime:
    """The folder as it was read before the cache: every item opened and decoded
    (Pillow), resized and centre-cropped (torchvision) each time it is drawn."""

    def __init__(self, folder: Path, image_size: int):
        from training.data import PilToTensor

        self.paths = sorted(str(p) for p in folder.glob("*.jpg"))
        self.transform = PilToTensor(image_size, 3)
        self.num_classes = 0

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        from PIL import Image

        with Image.open(self.paths[index]) as image:
            return self.transform(image), -1


def data_rate(dataset, batches: int, batch_size: int) -> float:
    """Images/s through a DataLoader, as the training loop draws them."""
    import torch

    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    started, seen = time.perf_counter(), 0
    for index, (images, _) in enumerate(loader):
        seen += len(images)
        if index + 1 == batches:
            break
    return seen / (time.perf_counter() - started)


def train_rate(path: str, folder: Path, args, work: Path) -> tuple[float, float]:
    """(median steps/s of a short run, its first logged window left out; CPU seconds per
    step of the whole run, set-up included: the work, whatever else the machine runs)."""
    import training.loop as loop
    from training.config import TrainConfig, resolve

    run_dir = work / f"run-{path}"
    shutil.rmtree(run_dir, ignore_errors=True)
    config = resolve(TrainConfig(dataset="folder", data_root=str(folder), image_size=64, channels=3,
                                 ngf=args.ngf, ndf=args.ndf, steps=args.steps, log_every=5,
                                 sample_every=10**9, checkpoint_every=10**9, device="cpu",
                                 run_dir=str(run_dir)))
    original = loop.load_dataset
    if path == "decode":
        loop.load_dataset = lambda *a, **k: DecodeEveryTime(folder, 64)
    cpu = time.process_time()
    try:
        loop.train(config, progress=False)
    finally:
        loop.load_dataset = original
    cpu = (time.process_time() - cpu) / args.steps
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(r["steps_per_s"] for r in records[1:]), cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--ngf", type=int, default=32)
    parser.add_argument("--ndf", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--work", type=Path, required=True)
    args = parser.parse_args()

    import torch

    from training.data import load_dataset

    os.environ["DCGAN_CACHE"] = str(args.work / "cache")  # a cold cache of our own
    shutil.rmtree(args.work / "cache", ignore_errors=True)
    folder = write_jpegs(args.work / "jpegs", args.images, args.side)
    started = time.perf_counter()
    cached = load_dataset("folder", root=str(folder), image_size=64, channels=3)
    build = time.perf_counter() - started
    started = time.perf_counter()
    load_dataset("folder", root=str(folder), image_size=64, channels=3)
    reopen = time.perf_counter() - started
    decode = DecodeEveryTime(folder, 64)
    rates, cpu, data = ({"decode": [], "cache": []} for _ in range(3))
    for _ in range(args.repeats):
        for path, dataset in (("decode", decode), ("cache", cached)):
            data[path].append(data_rate(dataset, 4, 64))
            rate, seconds = train_rate(path, folder, args, args.work)
            rates[path].append(rate)
            cpu[path].append(seconds)
            print(path, f"{data[path][-1]:.0f} images/s, {rate:.3f} steps/s, "
                        f"{seconds:.2f} CPU s/step", flush=True)
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads",
        "load_average": os.getloadavg(), "images": args.images, "side": args.side,
        "cache_build_s": round(build, 2), "cache_reopen_s": round(reopen, 3),
        "data_images_per_s": {k: round(statistics.median(v)) for k, v in data.items()},
        "train_steps_per_s": {k: round(statistics.median(v), 3) for k, v in rates.items()},
        "cpu_s_per_step": {k: round(statistics.median(v), 3) for k, v in cpu.items()},
    }
    result["speed_up"] = round(result["train_steps_per_s"]["cache"] / result["train_steps_per_s"]["decode"], 2)
    result["cpu_saved"] = round(1 - result["cpu_s_per_step"]["cache"] / result["cpu_s_per_step"]["decode"], 3)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
