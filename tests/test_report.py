"""`dcgan report RUN`: the page of any run (image or toy, finished or not), every
picture on it loading in a real browser, and a long log staying quick."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from training.cli import app
from training.loop import train
from training.report import make_report, read_log

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Marks every image that failed to load; run by the browser after the page has loaded.
CHECK_IMAGES = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  document.body.dataset.images = images.length;
  document.body.dataset.broken = images.filter(i => !i.complete || i.naturalWidth === 0)
    .map(i => i.getAttribute("src")).join(" ");
});
</script>"""


def sources(page: Path) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page.read_text())


def gif_length(path: Path) -> int:
    with Image.open(path) as gif:
        return gif.n_frames


def write_log(path: Path, records: list[dict], tail: str = "") -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


@pytest.fixture(scope="module")
def image_run(tmp_path_factory, make_tiny_config) -> Path:
    """12 steps of a tiny DCGAN with sample grids and (stand-in) evaluations every 4."""
    figures = iter([{"fd_ratio": 9.0, "fd2_ratio": 7.0, "fd_ratio_mean": 8.0, "prdc_coverage": 0.2,
                     "classes_covered": c, "num_classes": 10} for c in (3, 6, 9)])
    config = make_tiny_config(tmp_path_factory.mktemp("image") / "run", sample_every=4,
                              eval_every=4)
    return train(config, progress=False, evaluator=lambda generator: next(figures))


@pytest.fixture(scope="module")
def image_report(image_run) -> Path:
    return make_report(image_run)


def test_an_image_runs_report_has_every_figure_and_the_samples_as_timeline_and_animation(
        image_run, image_report):
    assert image_report == image_run / "report" / "index.html"
    shown = sources(image_report)
    assert shown == ["losses.png", "d_outputs.png", "grad_norms.png", "fd_ratio.png",
                     "coverage.png", "timeline.png", "animation.gif"]
    for name in shown:
        with Image.open(image_report.parent / name) as picture:
            assert picture.width >= 100 and picture.height >= 100
    # one animation frame per sample grid the run wrote
    assert gif_length(image_report.parent / "animation.gif") == 3 == len(list((image_run / "samples").glob("*.png")))
    page = image_report.read_text()
    assert "finished: 12 of 12 steps" in page and "Model card" in page
    assert "<th>step</th><td>12</td>" in page  # the card of the latest checkpoint
    assert "The run logged none." in page
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched from the network


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian package `chromium`)")
def test_every_image_of_the_report_loads_in_chromium(image_report, tmp_path):
    probe = image_report.parent / "probe.html"  # beside the page: the same relative paths
    probe.write_text(image_report.read_text().replace("</body>", CHECK_IMAGES + "</body>"))
    try:
        dom = subprocess.run(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
             "--allow-file-access-from-files", "--virtual-time-budget=10000", "--dump-dom",
             probe.as_uri()],
            capture_output=True, text=True, timeout=120).stdout
    finally:
        probe.unlink()
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert 'data-images="7"' in body, body
    assert 'data-broken=""' in body, body


def test_a_toy_runs_report_shows_the_game_and_its_divergences(tmp_path, make_tiny_config):
    run_dir = train(make_tiny_config(tmp_path / "toy", dataset="ring", nz=None, mlp_hidden=16,
                                     batch_size=32, steps=10, log_every=5, sample_every=5),
                    progress=False)
    page = make_report(run_dir, tmp_path / "elsewhere")
    assert page == tmp_path / "elsewhere" / "index.html"
    shown = sources(page)
    assert "divergences.png" in shown and "timeline.png" in shown
    assert "GAN Lab" in page.read_text()
    assert gif_length(page.parent / "animation.gif") == 2


def test_an_unfinished_run_without_a_checkpoint_gets_a_report(tmp_path, image_run):
    run_dir = tmp_path / "going"
    run_dir.mkdir()
    shutil.copy(image_run / "config.json", run_dir)
    lines = (image_run / "metrics.jsonl").read_text().splitlines()
    # D's view not logged yet (older runs), and a record being written when the report ran
    old = [{k: v for k, v in json.loads(line).items() if k not in ("d_real", "d_fake")} for line in lines[:2]]
    write_log(run_dir / "metrics.jsonl", old, tail='{"step": 12, "d_lo')
    text = make_report(run_dir).read_text()
    assert "not finished: last logged step 8 of 12" in text
    assert "does not log D" in text and "No checkpoint yet" in text and "No sample pictures yet" in text
    assert "1 unreadable line(s)" in text
    assert "d_outputs.png" not in sources(run_dir / "report" / "index.html")


def test_a_resumed_runs_repeated_steps_keep_the_later_records_and_warnings_are_grouped(tmp_path):
    first = [{"step": s, "d_loss": 1.0, "g_loss": 1.0, "warnings": []} for s in range(5, 35, 5)]
    first[3]["warnings"] = ["G gradient norm exploding (1.2e+03)"]  # step 20: logged again below
    again = [{"step": s, "d_loss": 2.0, "g_loss": 2.0, "eval": {"fd_ratio": 3.0},
              "warnings": [f"G gradient norm exploding ({s}.5)"]} for s in range(20, 45, 5)]
    write_log(tmp_path / "metrics.jsonl", first + again)
    log = read_log(tmp_path / "metrics.jsonl")
    steps, values = log.series["d_loss"]
    assert steps == [5, 10, 15, 20, 25, 30, 35, 40] and values == [1.0] * 3 + [2.0] * 5
    assert log.evals[0] == [20, 25, 30, 35, 40]
    (tmp_path / "config.json").write_text(json.dumps({"steps": 40, "loss": "hinge"}))
    page = make_report(tmp_path).read_text()
    row = re.search(r"<td>G gradient norm exploding \(40\.5\)</td><td>(\d+)</td><td>(\d+)</td><td>(\d+)</td>", page)
    assert row and row.groups() == ("5", "20", "40")  # one kind, counted once per logged step


def test_a_long_log_is_reported_quickly(tmp_path):
    """Half a million steps logged every 10: 50,000 records, read once, curves bucketed."""
    rng = np.random.default_rng(0)
    with (tmp_path / "metrics.jsonl").open("w") as out:
        for i in range(50_000):
            record = {"step": 10 * (i + 1), "d_loss": float(rng.random()), "g_loss": float(rng.random()),
                      "d_real": 0.6, "d_fake": 0.4, "grad_norm_g": 1.0, "grad_norm_d": 2.0,
                      "steps_per_s": 50.0, "elapsed_s": i / 5, "warnings": []}
            if i % 2500 == 2499:
                record["eval"] = {"fd_ratio": 2.0, "prdc_coverage": 0.5}
            out.write(json.dumps(record) + "\n")
    (tmp_path / "config.json").write_text(json.dumps({"steps": 500_000, "loss": "nonsaturating"}))
    started = time.perf_counter()
    page = make_report(tmp_path)
    assert time.perf_counter() - started < 30  # about 5 s on a busy 2-core machine
    assert "finished: 500000 of 500000 steps" in page.read_text()


def test_the_report_command(image_run, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["report", str(image_run), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r" / "index.html").exists() and "wrote" in result.output
    missing = runner.invoke(app, ["report", str(tmp_path / "nothing")])
    assert missing.exit_code == 1 and "no run directory at" in missing.output
    not_a_run = runner.invoke(app, ["report", str(tmp_path / "r")])
    assert not_a_run.exit_code == 1 and "is not a run directory" in not_a_run.output
