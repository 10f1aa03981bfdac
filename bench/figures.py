"""The README's pictures, each made by the project's own commands (`make figures`).

    python bench/figures.py [--only samples,interpolation,truncation,arithmetic,toy,losses,service,report]

into docs/figures/:

- samples.png, interpolation.gif: `dcgan sample` and `dcgan interpolate` on the bundled
  generator (models/pretrained/dcgan-mnist.onnx);
- arithmetic.png: class arithmetic on `mnist-latent` (models/pretrained/dcgan-mnist-latent.onnx),
  what `POST /edit` with `from_class`/`to_class` and strength 1 does: row a is the first
  sample (seeds 0..) the evaluation classifier puts in class a, moved by (mean latent of
  b - mean latent of a) from its directions sidecar into each column b;
- ring_game.png, ring_training.gif: GAN Lab's view of a `dcgan train --dataset ring`
  run to convergence (its last frame, and its samples/training.gif);
- toy_losses.png (+ .json): four recipes side by side on both toys, run to convergence
  (bench/toy_losses.py, the longest part);
- service.png: the service's page, served by `bentoml serve` on a free loopback port
  and photographed by headless Chromium;
- report.png: the top of `dcgan report` for a short MNIST run, photographed the same way.

Training runs go to a temporary folder; every file is written atomically. Under 2 MB in
all: the screenshots are cropped to what the README shows.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "figures"
BUNDLED = ROOT / "models" / "pretrained" / "dcgan-mnist.onnx"
LATENT = BUNDLED.with_name("dcgan-mnist-latent.onnx")
PARTS = ("samples", "interpolation", "truncation", "arithmetic", "toy", "losses", "service", "report")


def dcgan(*args: str | Path, cwd: Path = ROOT) -> None:
    """`dcgan ARGS` in `cwd` (a scratch folder keeps a run's paths short and relative)."""
    command = [sys.executable, "-m", "training.cli", *map(str, args)]
    print("$ dcgan " + " ".join(str(a).replace(f"{ROOT}/", "") for a in args), flush=True)
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    subprocess.run(command, cwd=cwd, check=True, env={**os.environ, "PYTHONPATH": path})


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        sys.exit("chromium is needed for the screenshots (Debian package `chromium`)")
    return found


def screenshot(url: str, out: Path, width: int, height: int, profile: Path) -> None:
    """Headless Chromium's picture of `url` at `width` x `height` CSS pixels."""
    subprocess.run([chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}",
                    f"--window-size={width},{height}", "--virtual-time-budget=15000",
                    f"--screenshot={out}", url],
                   check=True, capture_output=True, timeout=180)


def save_png(source: Path, out: Path, crop_height: int | None = None) -> None:
    """`source` cropped to its top `crop_height` pixels, written to `out` (full colour: a
    palette would merge the few pixels of a rare colour, a legend's marker, into others)."""
    import io

    from PIL import Image

    from models.generation import atomic_write

    with Image.open(source) as image:
        image = image.convert("RGB")
        if crop_height:
            image = image.crop((0, 0, image.width, min(crop_height, image.height)))
        buffer = io.BytesIO()
        image.save(buffer, "PNG", optimize=True)
    atomic_write(out, buffer.getvalue())


def samples(work: Path) -> None:
    dcgan("sample", BUNDLED, "--seeds", "0-63", "--out", OUT / "samples.png")


def truncation(work: Path) -> None:
    dcgan("evaluate", BUNDLED, "--truncation", "0.5,0.7,1,1.25,1.5,1.75,2,2.5,3,none",
          "--curve", OUT / "truncation.png", "--json", work / "truncation.json")


def interpolation(work: Path) -> None:
    dcgan("interpolate", BUNDLED, "--start", "3", "--end", "7", "--steps", "16",
          "--out", OUT / "interpolation.gif")


def arithmetic(work: Path) -> None:
    import numpy as np
    import torch

    from models import generation as gen
    from models.latent import latents_from_seeds
    from training.encoder import feature_network

    print(f"$ class arithmetic on {LATENT.relative_to(ROOT)} (its .latent.json)", flush=True)
    generator = gen.OnnxGenerator(LATENT, device="cpu")
    means = gen.open_latent_space(LATENT, generator.card).directions.class_means
    classifier, _ = feature_network(generator.card)
    latents = latents_from_seeds(range(200), generator.card.nz)
    with torch.no_grad():
        classes = classifier(torch.from_numpy(generator.generate(latents)))[1].argmax(1).numpy()
    rows = []
    for a in range(len(means)):
        start = latents[np.flatnonzero(classes == a)[0]]
        rows.append(start + means - means[a])  # column b: start + (mean b - mean a)
    images = generator.generate(np.concatenate(rows))
    gen.atomic_write(OUT / "arithmetic.png", gen.grid_png(images, columns=len(means)))


def toy(work: Path) -> None:
    from models.generation import atomic_write

    run = work / "ring"
    # the toy's own schedule (20,000 steps, rates decaying to 0), as BENCHMARKS.md's table ran it
    dcgan("train", "--dataset", "ring", "--sample-every", "1000", "--no-progress", "--run-dir", run)
    frames = sorted((run / "samples").glob("step_*.png"))
    save_png(frames[-1], OUT / "ring_game.png")
    atomic_write(OUT / "ring_training.gif", (run / "samples" / "training.gif").read_bytes())


def losses(work: Path) -> None:
    print("$ python bench/toy_losses.py", flush=True)
    subprocess.run([sys.executable, str(ROOT / "bench" / "toy_losses.py"), "--out",
                    str(OUT / "toy_losses.png")], cwd=ROOT, check=True)


def service(work: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "BENTOML_HOME": str(work / "bentoml"), "BENTOML_DO_NOT_TRACK": "True",
           "DCGAN_MODEL": str(BUNDLED)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    print(f"$ bentoml serve service.service:DCGAN --host 127.0.0.1 --port {port}", flush=True)
    with (work / "serve.log").open("wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "bentoml", "serve", "service.service:DCGAN",
                                   "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT, env=env,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 300
        while True:
            if server.poll() is not None or time.time() > deadline:
                sys.exit(f"the service did not get ready:\n{(work / 'serve.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        shot = work / "service.png"
        screenshot(f"http://127.0.0.1:{port}/", shot, 1100, 1000, work / "chromium-service")
        save_png(shot, OUT / "service.png", crop_height=830)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def report(work: Path) -> None:
    dcgan("train", "--dataset", "mnist5k", "--ngf", "16", "--ndf", "16", "--steps", "300",
          "--log-every", "10", "--sample-every", "50", "--eval-every", "150", "--eval-samples",
          "500", "--no-progress", "--run-dir", "runs/mnist", cwd=work)
    dcgan("report", "runs/mnist", cwd=work)
    shot = work / "report.png"
    screenshot((work / "runs" / "mnist" / "report" / "index.html").as_uri(), shot, 1000, 1500,
               work / "chromium-report")
    save_png(shot, OUT / "report.png", crop_height=1390)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(PARTS), help=f"Some of: {', '.join(PARTS)}.")
    args = parser.parse_args()
    chosen = [part.strip() for part in args.only.split(",") if part.strip()]
    unknown = sorted(set(chosen) - set(PARTS))
    if unknown:
        sys.exit(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        for part in chosen:
            started = time.perf_counter()
            globals()[part](Path(scratch))
            print(f"{part}: {time.perf_counter() - started:.0f} s", flush=True)
    total = sum(p.stat().st_size for p in OUT.iterdir() if p.is_file())
    print(f"docs/figures: {total / 1e6:.2f} MB in all")


if __name__ == "__main__":
    main()
