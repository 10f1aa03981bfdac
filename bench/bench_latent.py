"""Measure the way back and the way across on the 1,000 held-out mnist5k test digits,
which neither the generator nor its encoder trained on.

    python bench/bench_latent.py [--model models/pretrained/dcgan-mnist.onnx] [--digits 1000]
        [--search 10,30] [--refine 200] [--requests 200] [--json out.json]

- projection: each digit, as PNG bytes, through the service's picture path
  (models.generation.read_image), then the encoder alone, the encoder plus the service's
  torch-free search (N steps), and the encoder plus the CLI's gradient refinement
  through the torch generator. Reported: the share of reconstructions the evaluation
  classifier gives the input's label, the median pixel RMS (0..1) and the median
  distance in that classifier's features, beside a baseline: the closest (in pixels)
  of 1,000 random samples (seeds 0..999).
- class arithmetic: samples of seeds 1,000,000.. that the classifier puts in class a
  (up to --per-class of each), plus (mean latent of b - mean latent of a) from the
  model's directions sidecar; the share the classifier then puts in b, for all 90 pairs.
- speed, on a real `bentoml serve` of the model: p50 and p90 of POST /sample n=1 and
  POST /project of one digit (encoder only, and with the search), one client, the
  three interleaved in the same run.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from models import generation as gen  # noqa: E402
from models.latent import latents_from_seeds  # noqa: E402


def held_out_pngs(count: int) -> tuple[list[bytes], np.ndarray]:
    """The first `count` mnist5k test digits (the last 100 of each digit) as PNG bytes."""
    from PIL import Image

    from training.data import class_split, read_mnist5k

    images, labels = read_mnist5k()
    rows = class_split(labels, "test")
    rows = rows[np.random.default_rng(0).permutation(len(rows))[:count]]
    pngs = []
    for pixels in images[rows]:
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, format="PNG")
        pngs.append(out.getvalue())
    return pngs, labels[rows]


class Judge:
    """The evaluation classifier: labels and features of images in [-1, 1]."""

    def __init__(self, card):
        from training.encoder import feature_network

        self.classifier, self.accuracy = feature_network(card)

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        feats, labels = [], []
        for start in range(0, len(images), 250):
            f, logits = self.classifier(torch.from_numpy(images[start:start + 250]))
            feats.append(f.numpy())
            labels.append(logits.argmax(1).numpy())
        return np.concatenate(feats), np.concatenate(labels)


def in_batches(generate, latents: np.ndarray, size: int = 250) -> np.ndarray:
    return np.concatenate([generate(latents[i:i + size]) for i in range(0, len(latents), size)])


def projection(args, g, space, judge) -> dict:
    pngs, labels = held_out_pngs(args.digits)
    targets = np.stack([gen.read_image(p, g.card) for p in pngs])
    target_feats, target_pred = judge(targets)
    rows = {}

    def score(name: str, made: np.ndarray, seconds: float) -> None:
        feats, predicted = judge(made)
        rows[name] = {
            "label_kept": float((predicted == labels).mean()),
            "median_pixel_rms": float(np.median(gen.pixel_rms(made, targets))),
            "median_feature_distance": float(np.median(np.linalg.norm(feats - target_feats, axis=1))),
            "seconds_per_image": seconds / len(targets),
        }
        print(name, rows[name], flush=True)

    start = time.perf_counter()
    latents = np.concatenate([space.encoder.encode(targets[i:i + 250]) for i in range(0, len(targets), 250)])
    encoded = in_batches(g.generate, latents)
    score("encoder", encoded, time.perf_counter() - start)
    for steps in args.search:
        start = time.perf_counter()
        found = np.concatenate([gen.search_latents(g.generate, latents[i:i + 50], targets[i:i + 50], steps)[0]
                                for i in range(0, len(targets), 50)])
        score(f"encoder + search {steps}", in_batches(g.generate, found), time.perf_counter() - start)
    if args.refine:
        from training.encoder import generator_from_onnx, refine_latents

        module, card = generator_from_onnx(g.path)
        start = time.perf_counter()
        refined = np.concatenate([refine_latents(module, card, latents[i:i + 100], targets[i:i + 100],
                                                 args.refine) for i in range(0, len(targets), 100)])
        score(f"encoder + refine {args.refine}", in_batches(g.generate, refined), time.perf_counter() - start)
    # baseline: the closest of 1,000 random samples, in pixels
    start = time.perf_counter()
    bank = in_batches(g.generate, latents_from_seeds(range(1000), g.card.nz))
    flat_bank = bank.reshape(len(bank), -1).astype(np.float64)
    flat = targets.reshape(len(targets), -1).astype(np.float64)
    distances = (flat ** 2).sum(1)[:, None] - 2 * flat @ flat_bank.T + (flat_bank ** 2).sum(1)[None]
    score("closest of 1,000 samples", bank[distances.argmin(axis=1)], time.perf_counter() - start)
    rows["inputs"] = {"label_kept": float((target_pred == labels).mean())}
    return rows


def arithmetic(args, g, space, judge) -> dict:
    directions = space.directions
    means = directions.class_means
    latents = latents_from_seeds(range(1_000_000, 1_000_000 + args.pool), g.card.nz)
    _, predicted = judge(in_batches(g.generate, latents))
    table = np.full((10, 10), np.nan)
    counts = []
    for a in range(10):
        chosen = latents[predicted == a][: args.per_class]
        counts.append(len(chosen))
        for b in range(10):
            if a == b or not len(chosen):
                continue
            _, now = judge(in_batches(g.generate, chosen + (means[b] - means[a])[None, :]))
            table[a, b] = float((now == b).mean())
    off = table[~np.eye(10, dtype=bool)]
    print("arithmetic: min", np.nanmin(off), "mean", np.nanmean(off), flush=True)
    return {"table": table.tolist(), "samples_per_class": counts, "min": float(np.nanmin(off)),
            "mean": float(np.nanmean(off)), "pairs_at_least_70": int((off >= 0.7).sum())}


def speed(args, model: Path) -> dict:
    import httpx
    from bench_service import Server

    png = held_out_pngs(1)[0][0]
    image = base64.b64encode(png).decode()
    server = Server("service.service:DCGAN", {"DCGAN_MODEL": str(model)}, "latent")
    try:
        server.wait_ready()
        requests = {
            "sample n=1": ("/sample", {"n": 1, "seed": 1}),
            "project, encoder only": ("/project", {"images": [image]}),
            f"project, search {args.search[0]}": ("/project", {"images": [image], "search": args.search[0]}),
        }
        times: dict[str, list[float]] = {name: [] for name in requests}
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for k in range(args.requests + 10):
                for name, (path, body) in requests.items():
                    start = time.perf_counter()
                    response = client.post(path, json=body)
                    elapsed = time.perf_counter() - start
                    assert response.status_code == 200, response.text
                    if k >= 10:  # warm-up
                        times[name].append(elapsed)
    finally:
        server.stop()
    rows = {name: {"p50_ms": 1000 * float(np.percentile(t, 50)), "p90_ms": 1000 * float(np.percentile(t, 90))}
            for name, t in times.items()}
    print(rows, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(gen.BUNDLED))
    parser.add_argument("--digits", type=int, default=1000)
    parser.add_argument("--search", default="10,30", help="search steps to measure (the first also for speed)")
    parser.add_argument("--refine", type=int, default=200)
    parser.add_argument("--pool", type=int, default=5000, help="samples drawn for the class arithmetic")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--parts", default="projection,arithmetic,speed")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.search = [int(s) for s in args.search.split(",") if s]
    model = Path(args.model)
    g = gen.OnnxGenerator(model, device="cpu")
    space = gen.open_latent_space(model, g.card)
    assert space.encoder is not None and space.directions is not None, space.problems
    judge = Judge(g.card)
    from bench_service import machine

    report = {"command": " ".join(["python", *sys.argv]), "machine": machine(),
              "classifier_accuracy": judge.accuracy}
    parts = args.parts.split(",")
    if "projection" in parts:
        report["projection"] = projection(args, g, space, judge)
    if "arithmetic" in parts:
        report["arithmetic"] = arithmetic(args, g, space, judge)
    if "speed" in parts:
        report["speed"] = speed(args, model)
    if args.json:
        gen.atomic_write(args.json, json.dumps(report, indent=1).encode())


if __name__ == "__main__":
    main()
