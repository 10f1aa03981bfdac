"""The `dcgan` command line: train, export, sample and interpolate as a user runs them,
and a one-line error with exit code 1 for every mistake a user can make."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image, ImageSequence
from typer.testing import CliRunner

from models.card import ModelCard
from training.cli import app
from training.export import read_card, to_onnx_model

SIDE, PAD = 16, 2  # the tiny run's images and the grid padding


def run(*args: str | Path):
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    return result


def ok(*args: str | Path):
    result = run(*args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def cell(grid: np.ndarray, index: int) -> np.ndarray:
    """Image `index` of the first row of a grid (padding 2)."""
    x = PAD + index * (SIDE + PAD)
    return grid[PAD:PAD + SIDE, x:x + SIDE].astype(int)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """`dcgan train` for real: 60 steps, enough for different seeds to look different."""
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    result = ok("train", "--dataset", "mnist5k", "--image-size", "16", "--nz", "16", "--ngf", "8",
                "--ndf", "8", "--batch-size", "8", "--steps", "60", "--log-every", "20",
                "--device", "cpu", "--threads", "1", "--no-progress", "--run-dir", run_dir)
    assert f"run directory: {run_dir}" in result.stdout.replace("\n", "")
    assert f"report: dcgan report {run_dir}" in result.stdout.replace("\n", "")
    return run_dir


@pytest.fixture(scope="module")
def exported(trained) -> Path:
    path = trained / "generator.onnx"
    result = ok("export", trained, "--out", path, "--no-evaluate")
    assert "wrote" in result.stdout and "ema weights, step 60" in result.stdout
    return path


# --- train --------------------------------------------------------------------------------


def test_dry_run_prints_the_resolved_config():
    result = ok("train", "--dry-run", "--loss", "wgan-gp", "--dataset", "fake", "--steps", "7",
                "--device", "cpu", "--run-dir", "somewhere")
    config = json.loads(result.stdout)
    assert config["d_norm"] == "layer"  # resolved for the gradient penalty
    assert config["loss"] == "wgan-gp" and config["steps"] == 7 and config["dataset"] == "fake"
    assert config["arch"] == "dcgan" and config["nz"] == 100 and config["channels"] == 3
    assert config["batch_size"] == 64 and config["lr_g"] == 2e-4  # untouched defaults
    assert config["run_dir"] == "somewhere" and config["command"].startswith("dcgan ")
    assert not Path("somewhere").exists()  # a dry run writes nothing

    chosen = json.loads(ok("train", "--dry-run", "--d-norm", "spectral", "--r1", "2.5",
                           "--device", "cpu").stdout)
    assert chosen["d_norm"] == "spectral" and chosen["r1"] == 2.5
    toy = json.loads(ok("train", "--dry-run", "--dataset", "ring", "--device", "cpu").stdout)
    assert toy["arch"] == "mlp" and toy["nz"] == 2 and toy["d_norm"] == "batch"


def test_train_writes_a_run_directory(trained):
    assert {"config.json", "checkpoint.pt", "metrics.jsonl"} <= {p.name for p in trained.iterdir()}
    assert (trained / "samples" / "step_000060.png").is_file()
    config = json.loads((trained / "config.json").read_text())
    assert config["steps"] == 60 and config["ngf"] == 8 and config["command"].startswith("dcgan ")


def test_dry_run_of_a_resume_keeps_the_saved_options(trained):
    config = json.loads(ok("train", "--resume", trained, "--steps", "100", "--dry-run").stdout)
    assert config["steps"] == 100  # the new option
    assert config["nz"] == 16 and config["ngf"] == 8 and config["image_size"] == 16  # saved ones
    assert config["run_dir"] == str(trained)


def test_a_run_writes_the_config_its_dry_run_printed(tmp_path, monkeypatch):
    """Resolved once: config.json holds what --dry-run printed for the same options,
    the recorded command included, for a new run and for a resumed one."""
    run_dir = tmp_path / "run"

    def typed(*args: str | Path):  # the command is recorded from sys.argv, as a shell sets it
        monkeypatch.setattr(sys, "argv", ["dcgan", *map(str, args)])
        return ok(*args)

    new = ("train", "--dataset", "digits", "--image-size", "16", "--nz", "8", "--ngf", "4",
           "--ndf", "4", "--batch-size", "8", "--steps", "2", "--device", "cpu", "--threads", "1",
           "--no-progress", "--run-dir", run_dir)
    printed = json.loads(typed(*new, "--dry-run").stdout)
    typed(*new)
    assert json.loads((run_dir / "config.json").read_text()) == printed
    assert printed["command"] == shlex.join(["dcgan", *map(str, new)])  # without --dry-run

    resumed = ("train", "--resume", run_dir, "--steps", "3", "--lr-d", "1e-4", "--no-progress")
    printed = json.loads(typed(*resumed, "--dry-run").stdout)
    typed(*resumed)
    assert json.loads((run_dir / "config.json").read_text()) == printed
    assert printed["steps"] == 3 and printed["lr_d"] == 1e-4 and printed["nz"] == 8


# --- export, sample, interpolate ----------------------------------------------------------------


def test_export_writes_a_checked_onnx_file_with_its_card(exported, trained):
    onnx.checker.check_model(onnx.load(str(exported)))
    card = read_card(exported)
    assert card.step == 60 and card.weights == "ema" and card.name == "mnist5k"
    assert card.quality["onnx_max_abs_error"] <= 1e-4
    renamed = trained / "renamed.onnx"
    ok("export", trained, "--out", renamed, "--weights", "raw", "--name", "digits-16", "--no-evaluate")
    assert read_card(renamed).name == "digits-16" and read_card(renamed).weights == "raw"


def test_export_measures_quality_into_the_card(tmp_path):
    """Export evaluates first (scikit-learn's digits: its classifier trains in seconds)."""
    run_dir = tmp_path / "digits"
    ok("train", "--dataset", "digits", "--image-size", "16", "--nz", "8", "--ngf", "8", "--ndf", "8",
       "--batch-size", "8", "--steps", "4", "--device", "cpu", "--threads", "1", "--no-progress",
       "--run-dir", run_dir)
    result = ok("export", run_dir, "--out", tmp_path / "digits.onnx")
    assert "quality: FD ratio" in result.stdout
    quality = read_card(tmp_path / "digits.onnx").quality
    assert quality["fd"] > 0 and quality["fd_floor"] > 0
    assert quality["fd_ratio"] == pytest.approx(quality["fd"] / quality["fd_floor"])
    assert 0 <= quality["classes_covered"] <= 10 and quality["onnx_max_abs_error"] <= 1e-4
    # both feature networks, precision/recall and the truncation curve reach the card
    assert quality["fd2_ratio"] == pytest.approx(quality["fd2"] / quality["fd2_floor"])
    assert {"precision", "precision_floor", "recall2", "recall2_floor", "prdc_k"} <= set(quality)
    assert len(quality["truncation"]["rows"]) == 6 and "suggested" in quality["truncation"]
    assert "(network 2: " in result.stdout


def test_sample_is_reproducible_from_checkpoint_and_onnx(trained, exported, tmp_path):
    outputs = {}
    for name, source in [("a", trained), ("b", trained), ("onnx", exported)]:
        outputs[name] = tmp_path / f"{name}.png"
        result = ok("sample", source, "--seeds", "0-3", "--out", outputs[name])
        assert "(4 samples)" in result.stdout
    assert outputs["a"].read_bytes() == outputs["b"].read_bytes()  # same seeds, same bytes
    torch_grid, onnx_grid = pixels(outputs["a"]), pixels(outputs["onnx"])
    assert torch_grid.shape == (2 * (SIDE + PAD) + PAD,) * 2  # grey, 2 by 2: as square as HTTP
    assert np.abs(torch_grid.astype(int) - onnx_grid.astype(int)).max() <= 1
    # different seeds are different images (the comparisons above are not vacuous)
    assert np.abs(cell(torch_grid, 0) - cell(torch_grid, 1)).max() > 10
    again = tmp_path / "again.png"
    ok("sample", exported, "--seeds", "0-3", "--out", again)
    assert again.read_bytes() == outputs["onnx"].read_bytes()
    truncated = tmp_path / "truncated.png"
    ok("sample", exported, "--seeds", "0-3", "--truncation", "0.5", "--out", truncated)
    assert not np.array_equal(pixels(truncated), onnx_grid)


def test_interpolate_strip_and_gif_end_on_the_samples_of_their_seeds(exported, trained, tmp_path):
    ends = {}
    for seed in (3, 5):
        ends[seed] = tmp_path / f"seed{seed}.png"
        ok("sample", exported, "--seeds", str(seed), "--out", ends[seed])
    first, last = cell(pixels(ends[3]), 0), cell(pixels(ends[5]), 0)
    assert np.abs(first - last).max() > 10

    strip = tmp_path / "walk.png"
    result = ok("interpolate", exported, "--start", "3", "--end", "5", "--steps", "5", "--out", strip)
    assert "(5 frames, slerp)" in result.stdout
    frames = pixels(strip)
    assert frames.shape == (SIDE + 2 * PAD, 5 * (SIDE + PAD) + PAD)
    assert np.abs(cell(frames, 0) - first).max() <= 1 and np.abs(cell(frames, 4) - last).max() <= 1

    gif = tmp_path / "walk.gif"
    ok("interpolate", trained, "--start", "3", "--end", "5", "--steps", "6", "--method", "lerp",
       "--out", gif)
    with Image.open(gif) as animation:
        assert animation.format == "GIF" and animation.n_frames == 6
        pictures = [np.asarray(f.convert("L")).astype(int) for f in ImageSequence.Iterator(animation)]
    assert np.abs(pictures[0] - first).max() <= 1 and np.abs(pictures[-1] - last).max() <= 1
    assert np.abs(pictures[2] - first).max() > 0  # the middle frames move


def test_label_of_a_conditional_model(conditional_run, tmp_path):
    three, seven = tmp_path / "three.png", tmp_path / "seven.png"
    ok("sample", conditional_run, "--seeds", "0-1", "--label", "3", "--out", three)
    ok("sample", conditional_run, "--seeds", "0-1", "--label", "7", "--out", seven)
    assert three.read_bytes() != seven.read_bytes()


# --- user errors: one line, exit code 1, no traceback ---------------------------------------


def assert_user_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]


def test_training_errors(tmp_path):
    assert_user_error(run("train", "--dataset", "mnist6k", "--run-dir", tmp_path / "a"),
                      "unknown dataset 'mnist6k'; choose one of: mnist5k")
    assert_user_error(run("train", "--image-size", "48", "--run-dir", tmp_path / "b"),
                      "image-size must be a power of two from 16 to 256, got 48")
    assert_user_error(run("train", "--dataset", "folder", "--data-root", "/nonexistent",
                          "--device", "cpu", "--run-dir", tmp_path / "c"),
                      "image folder /nonexistent does not exist")
    assert_user_error(run("train", "--loss", "lsgan", "--run-dir", tmp_path / "d"),
                      "loss must be one of minimax, nonsaturating, wgan, wgan-gp, hinge")
    assert_user_error(run("train", "--d-norm", "instance", "--run-dir", tmp_path / "e"),
                      "d-norm must be one of batch, layer, spectral, none, got 'instance'")
    assert_user_error(run("train", "--r1", "-1", "--run-dir", tmp_path / "f"),
                      "r1 must be 0 or more, got -1.0")
    assert_user_error(run("train", "--resume", tmp_path, "--steps", "5"),
                      "is a directory without checkpoint.pt: not a run directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no debris from failed runs


def test_a_resume_with_another_architecture_is_refused_in_one_line(trained):
    """The run was made with --ngf 8: a resume asking for 32 would load weights of
    another shape (a 57-line size-mismatch traceback before)."""
    before = sorted(p.name for p in trained.iterdir())
    assert_user_error(run("train", "--resume", trained, "--ngf", "32", "--nz", "64"),
                      "keeps its architecture", "--ngf 32 (the run has 8)", "--nz 64 (the run has 16)")
    assert_user_error(run("train", "--resume", trained, "--conditional", "--dry-run"),
                      "--conditional True (the run has False)")
    # The same value as the run's is no change.
    assert ok("train", "--resume", trained, "--ngf", "8", "--steps", "100", "--dry-run")
    assert sorted(p.name for p in trained.iterdir()) == before


def test_broken_sources(tmp_path, tiny_run):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"this is not a checkpoint")
    assert_user_error(run("sample", corrupt, "--out", tmp_path / "x.png"),
                      "corrupt.pt is corrupt or not a checkpoint")
    foreign = tmp_path / "foreign.pt"
    torch.save({"x": 1}, foreign)
    assert_user_error(run("export", foreign, "--out", tmp_path / "x.onnx"),
                      "foreign.pt is not a dcgan-service checkpoint")
    assert_user_error(run("sample", tmp_path / "missing.pt"), "no checkpoint, run directory or ONNX")

    from training.checkpoint import load_torch_generator

    generator, card = load_torch_generator(tiny_run)
    bare = to_onnx_model(generator, card)
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    assert_user_error(run("sample", tmp_path / "bare.onnx", "--out", tmp_path / "x.png"),
                      "bare.onnx has no model card")
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    assert_user_error(run("interpolate", tmp_path / "junk.onnx", "--out", tmp_path / "x.gif"),
                      "junk.onnx: ONNX Runtime cannot open it")
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "x.gif").exists()


def test_bad_options_of_sample_interpolate_and_export(tiny_run, conditional_run, tmp_path):
    out = tmp_path / "x.png"
    assert_user_error(run("sample", conditional_run, "--label", "10", "--out", out),
                      "--label must be an integer from 0 to 9, got 10")
    assert_user_error(run("sample", tiny_run, "--label", "1", "--out", out),
                      "--label: this model is not class-conditional")
    assert_user_error(run("sample", tiny_run, "--seeds", "0-5000", "--out", out),
                      "at most 1024 seeds")
    assert_user_error(run("sample", tiny_run, "--seeds", "3-1", "--out", out),
                      "seeds must look like")
    assert_user_error(run("sample", tiny_run, "--weights", "best", "--out", out),
                      "weights must be ema or raw")
    assert_user_error(run("interpolate", tiny_run, "--steps", "1", "--out", out),
                      "--steps must be from 2 to 256, got 1")
    assert_user_error(run("interpolate", tiny_run, "--method", "cubic", "--out", out),
                      "method must be one of slerp, lerp")
    assert_user_error(run("interpolate", tiny_run, "--out", tmp_path / "x.mp4"),
                      "--out must end in .png or .gif")
    assert_user_error(run("export", tiny_run, "--out", tmp_path / "x.pt"),
                      "--out must name a .onnx file")
    assert not out.exists()


def test_evaluate_errors_go_through_the_one_handler(tiny_run, tmp_path):
    """The evaluate command raises; the CLI's handler prints the one line."""
    assert_user_error(run("evaluate", tiny_run, "--dataset", "digits", "--metrics", "bogus"),
                      "unknown metric 'bogus'; choose from: fd, kid, prdc, coverage, modes, nn, inception")
    assert_user_error(run("evaluate", tiny_run, "--dataset", "cifar10"),
                      "1-channel images but cifar10 has 3-channel images")
    assert_user_error(run("evaluate", tiny_run, "--dataset", "sharks"), "unknown dataset 'sharks'")
    assert_user_error(run("evaluate", tmp_path / "missing.pt"), "no checkpoint, run directory or ONNX")
    assert_user_error(run("evaluate", tmp_path / "[old].pt"), "[old].pt")  # plain text, not markup
    if not torch.cuda.is_available():
        assert_user_error(run("evaluate", tiny_run, "--device", "cuda"),
                          "--device cuda was asked for, but no CUDA device is available")
    assert_user_error(run("evaluate", tiny_run, "--json", tmp_path / "x.json", "--metrics", ""),
                      "no metric asked for")
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize(
    "command, options",
    [
        ("train", ["--dataset", "--loss", "--image-size", "--resume", "--dry-run", "--d-steps",
                   "--ema-decay", "--run-dir", "--conditional"]),
        ("export", ["--out", "--weights", "--fp16", "--name", "--register"]),
        ("sample", ["--seeds", "--out", "--truncation", "--label", "--nrow", "--weights"]),
        ("interpolate", ["--start", "--end", "--steps", "--method", "--out", "--frame-ms",
                         "--truncation", "--label"]),
    ],
)
def test_help_of_each_command_lists_its_options(command, options):
    result = ok(command, "--help")
    for option in options:
        assert option in result.stdout, option


def test_card_of_an_exported_file_describes_the_run(exported):
    card = ModelCard.from_metadata(
        {p.key: p.value for p in onnx.load(str(exported)).metadata_props})
    assert card.output_shape == (1, 16, 16) and card.dataset["name"] == "mnist5k"
    assert card.command.startswith("dcgan ") and card.versions["torch"]
