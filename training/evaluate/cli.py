"""`dcgan evaluate`: the quality figures of a checkpoint or ONNX file, as a table.

A thin command over `training.evaluate.evaluate`. Its user errors are raised, not
printed: the CLI's one handler (`clean_errors` in training/cli.py) turns them into one
line on stderr and exit status 1.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from training.evaluate.toys import PUBLISHED_GAN


def _number(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:.0f}"


def figures_table(result: dict) -> Table:
    """Each figure beside its real-vs-real floor and, where it means something, a ratio."""
    table = Table(title=f"{result['model']} (step {result['step']}) against {result['dataset']}, "
                        f"{result['num_samples']} samples",
                  caption=f"reference: {result['reference']}\nfeatures: {result['feature_space']}",
                  caption_justify="left")
    for column in ("figure", "generated", "real vs real (floor)", "ratio / note"):
        table.add_column(column)

    def row(label: str, key: str, note: str = "", digits: int = 3) -> None:
        if key in result:
            table.add_row(label, _number(result[key], digits),
                          _number(result.get(f"{key}_floor"), digits), note)

    def ratio(key: str) -> str:
        value = result.get(key)
        return f"{value:.2f}x" if value is not None else ""

    row("FD (classifier features)", "fd", ratio("fd_ratio"))
    if "kid" in result:
        table.add_row("KID", f"{_number(result['kid'])} ± {_number(result['kid_std'], 2)}",
                      _number(result.get("kid_floor")), "")
    if "classes_covered" in result:
        total = result["num_classes"]
        table.add_row("classes covered", f"{result['classes_covered']} / {total}",
                      f"{result['classes_covered_floor']} / {total}", "")
        row("class KL(generated || real)", "class_kl", "0 = same class mix")
        row("mean classifier confidence", "confidence")
        if "label_accuracy" in result:
            table.add_row("label accuracy (conditional)", _number(result["label_accuracy"]),
                          "", "classifier agrees with the asked label")
    if "modes" in result:
        published = PUBLISHED_GAN.get(result["dataset"], {})
        table.add_row("modes covered", f"{result['modes']} / {result['num_modes']}",
                      f"{result['modes_floor']} / {result['num_modes']}",
                      f"PacGAN paper, vanilla GAN: {published['modes']}" if published else "")
        row("high-quality samples %", "high_quality",
            f"PacGAN paper, vanilla GAN: {published['high_quality']}" if published else "", 4)
        row("reverse KL (modes)", "reverse_kl")
    row("NN distance to train (RMS/pixel)", "nn_distance",
        f"{ratio('nn_ratio')} (well below 1: memorised)" if result.get("nn_ratio") is not None else "")
    row("Inception FID", "inception_fd", ratio("inception_fd_ratio"))
    if "inception_kid" in result:
        table.add_row("Inception KID", _number(result["inception_kid"]),
                      _number(result.get("inception_kid_floor")), "")
    return table


def evaluate_command(
    source: Annotated[Path, typer.Argument(help="A checkpoint (.pt), a run directory or an ONNX file.")],
    dataset: Annotated[str | None, typer.Option(help="Dataset to compare with (default: the model card's).")] = None,
    num_samples: Annotated[int | None, typer.Option(
        "--num-samples", "-n",
        help="Samples drawn (default: 1000 images, capped by the held-out split; 2500 toy points).")] = None,
    metrics: Annotated[str | None, typer.Option(
        help="Comma-separated, from fd, kid, coverage, modes, nn, inception (default: all that apply).")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the figures to this JSON file.")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    inception_weights: Annotated[Path | None, typer.Option(
        help="Local FID Inception weights file (weights-inception-2015-12-05-6726825d.pth); "
             "adds Inception FID/KID. Nothing is downloaded.")] = None,
    data_root: Annotated[Path | None, typer.Option(help="Data folder of datasets read from disk.")] = None,
) -> None:
    """Measure a generator: FD and KID beside their real-vs-real floors, class coverage,
    memorisation, and the PacGAN figures for the 2-D toys."""
    import torch

    from training.evaluate.errors import EvaluationError
    from training.evaluate.evaluator import evaluate

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EvaluationError("--device cuda was asked for, but no CUDA device is available")
    result = evaluate(str(source), dataset=dataset, num_samples=num_samples, metrics=metrics,
                      device=device, root=None if data_root is None else str(data_root),
                      inception_weights=None if inception_weights is None else str(inception_weights))
    console = Console()
    console.print(figures_table(result))
    console.print(f"{result['source']}; {result['seconds']} s")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n")
        console.print(f"figures written to {json_path}")
