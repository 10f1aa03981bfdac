"""Train on your own images: the README's path from a folder of photos to a served
model, as a person runs it. Only the first command names the data; evaluate, export
and --resume find it in the run, and a folder that moved is one line naming where it
was. The whole path ends at POST /sample of a real `bentoml serve` on loopback, from a
throwaway BentoML home holding the registered generator."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from test_service_server import BentoServer
from typer.testing import CliRunner

from training.cli import app

ROOT = Path(__file__).resolve().parents[1]


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def ok(*args):
    result = run(*args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def one_line_error(result, *fragments: str) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def texture_folder(path: Path, count: int) -> Path:
    """`count` seeded JPEG "photos" (stripes and gradients, 24x20, not square), and one
    truncated download among them."""
    path.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:20, 0:24]
    for index in range(count):
        angle, period = rng.uniform(0, np.pi), rng.uniform(3, 12)
        wave = np.sin((np.cos(angle) * cols + np.sin(angle) * rows) * 2 * np.pi / period)
        colour = rng.uniform(40, 255, 3)
        pixels = (0.5 + 0.5 * wave)[..., None] * colour  # (20, 24, 3)
        Image.fromarray(pixels.astype(np.uint8)).save(path / f"photo{index:04d}.jpg", quality=90)
    whole = (path / "photo0000.jpg").read_bytes()
    (path / "photo9999.jpg").write_bytes(whole[: len(whole) // 2])
    return path


TINY = ("--image-size", "16", "--channels", "3", "--nz", "16", "--ngf", "8", "--ndf", "8",
        "--batch-size", "8", "--device", "cpu", "--threads", "1", "--no-progress")


def test_a_run_remembers_its_data_and_says_where_it_was_when_it_moved(tmp_path, monkeypatch):
    from training.config import run_data_root

    texture_folder(tmp_path / "photos", 24)
    monkeypatch.chdir(tmp_path)  # a relative --data-root, as people type it
    run_dir = tmp_path / "run"
    ok("train", "--dataset", "folder", "--data-root", "photos", "--steps", "2", "--log-every", "2",
       "--run-dir", run_dir, *TINY)
    assert run_data_root(run_dir) == str(tmp_path / "photos")  # absolute in config.json
    monkeypatch.chdir(ROOT)  # later commands, from anywhere, need no --data-root
    ok("train", "--resume", run_dir, "--steps", "4", "--no-progress")

    (tmp_path / "photos").rename(tmp_path / "moved")
    expected = f"trained on folder images in {tmp_path / 'photos'}, which no longer exists"
    one_line_error(run("train", "--resume", run_dir, "--steps", "6", "--no-progress"), expected,
                   "pass --data-root DIR")
    one_line_error(run("evaluate", run_dir), expected)
    exported = ok("export", run_dir, "--no-evaluate")  # an export without figures still works
    assert (run_dir / "folder.onnx").is_file() and "wrote" in exported.stdout
    warned = ok("export", run_dir, "--out", tmp_path / "again.onnx")
    assert expected in " ".join(warned.stderr.split())  # one warning: no fresh figures
    # told where the folder is now, the run goes on there and remembers it
    ok("train", "--resume", run_dir, "--steps", "6", "--data-root", tmp_path / "moved",
       "--no-progress")
    assert run_data_root(run_dir) == str(tmp_path / "moved")


def test_the_readme_path_from_a_folder_of_photos_to_a_served_model(tmp_path, monkeypatch):
    from training.evaluate import encoder

    monkeypatch.setattr(encoder, "ENCODER_STEPS", 20)  # the path, not the encoder's quality
    photos = texture_folder(tmp_path / "photos", 720)
    run_dir = tmp_path / "runs" / "tex"
    # 1. train (the only command that names the data)
    ok("train", "--dataset", "folder", "--data-root", photos, "--name", "tex", "--steps", "4",
       "--log-every", "2", "--run-dir", run_dir, *TINY)
    assert (run_dir / "samples" / "step_000004.png").is_file()  # 2. what a person watches
    # 3. evaluate: in the features learned from the folder, beside their floor
    evaluated = " ".join(ok("evaluate", run_dir).stdout.split())
    assert "trained without labels (contrastive, SimCLR) on the train split of folder" in evaluated
    assert "real vs real (floor)" in evaluated and "FD" in evaluated
    assert "72 held-out real (a fixed 10% of the folder's images, never trained on)" in evaluated
    # 4. export and register, in a throwaway BentoML home, as its own process
    home = tmp_path / "bentoml"
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True"}
    exported = subprocess.run([sys.executable, "-m", "training.cli", "export", str(run_dir),
                               "--register"], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)
    assert exported.returncode == 0, exported.stderr
    output = " ".join(exported.stdout.split())
    assert "quality: FD ratio" in output and "registered dcgan-tex:" in output
    assert "warning" not in exported.stderr
    onnx_path = run_dir / "tex.onnx"
    # 5. serve the registered model by its store tag, and ask it for samples
    server = BentoServer(home, DCGAN_MODELS="dcgan-tex:latest")
    try:
        server.wait()
        card = httpx.get(server.url + "/model", timeout=10).json()
        assert "tex" in str(card) and "folder" in str(card)
        answer = httpx.post(server.url + "/sample", timeout=60,
                            json={"model": "tex", "n": 4, "seed": 0, "format": "png"})
    finally:
        server.stop()
    assert answer.status_code == 200, answer.text
    with Image.open(io.BytesIO(answer.content)) as grid:
        assert grid.mode == "RGB" and grid.width > 2 * 16
    # the served images are the exported generator's: the CLI writes the very same bytes
    ok("sample", onnx_path, "--seeds", "0-3", "--out", tmp_path / "local.png")
    assert (tmp_path / "local.png").read_bytes() == answer.content
