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

from training.evaluate.toys import GRID_CELLS, PUBLISHED_GAN


def _number(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:.0f}"


def figures_table(result: dict) -> Table:
    """Each figure beside its real-vs-real floor and, where it means something, a ratio."""
    caption = f"reference: {result['reference']}\nfeatures: {result['feature_space']}"
    if "feature_space2" in result:
        caption += f"\nnetwork 2: {result['feature_space2']}"
    if "prdc_samples" in result:
        counts = result["prdc_samples"]
        caption += (f"\nprecision, recall, density, coverage: k = {result['prdc_k']}, "
                    f"{counts['generated']} generated vs {counts['real']} held-out real")
    table = Table(title=f"{result['model']} (step {result['step']}) against {result['dataset']}, "
                        f"{result['num_samples']} samples",
                  caption=caption, caption_justify="left")
    for column in ("figure", "generated", "real vs real (floor)", "ratio / note"):
        table.add_column(column)

    def row(label: str, key: str, note: str = "", digits: int = 3) -> None:
        if key in result:
            table.add_row(label, _number(result[key], digits),
                          _number(result.get(f"{key}_floor"), digits), note)

    def ratio(key: str) -> str:
        value = result.get(key)
        return f"{value:.2f}x" if value is not None else ""

    two = "fd2" in result or "precision2" in result  # a second feature network measured
    first, second = (" (network 1)", " (network 2)") if two else ("", "")
    row(f"FD (classifier features){first}", "fd", ratio("fd_ratio"))
    row(f"FD{second}", "fd2", ratio("fd2_ratio"))
    if result.get("fd_ratio_mean") is not None:
        table.add_row("mean FD ratio (selects best.pt)", "", "", ratio("fd_ratio_mean"))
    for suffix, where in (("", first), ("2", second)):
        if f"kid{suffix}" in result:
            table.add_row(f"KID{where}", f"{_number(result[f'kid{suffix}'])} ± "
                          f"{_number(result[f'kid{suffix}_std'], 2)}",
                          _number(result.get(f"kid{suffix}_floor")), "")
    if "precision" in result:
        k = result.get("prdc_k", "")
        notes = {"precision": f"k = {k}; fidelity", "recall": "variety",
                 "density": "about 1 for real data", "prdc_coverage": "variety, outlier-proof"}
        for suffix, where in (("", first), ("2", second)):
            for key, name in (("precision", "precision"), ("recall", "recall"),
                              ("density", "density"), ("prdc_coverage", "coverage (k-NN balls)")):
                row(f"{name}{where}", f"{key}{suffix}", notes[key] if not suffix else "")
    if "classes_covered" in result:
        total = result["num_classes"]
        table.add_row("classes covered", f"{result['classes_covered']} / {total}",
                      f"{result['classes_covered_floor']} / {total}", "")
        row("class KL(generated || real)", "class_kl", "0 = same class mix")
        row("mean classifier confidence", "confidence")
        if "label_accuracy" in result:
            table.add_row("label accuracy (conditional)", _number(result["label_accuracy"]),
                          "", "classifier agrees with the asked label")
        for suffix, where in (("", first), ("2", second)):
            if result.get(f"class_fd{suffix}_ratio_mean") is not None:
                table.add_row(f"FD ratio within a class{where}",
                              f"mean {_number(result[f'class_fd{suffix}_ratio_mean'])}, "
                              f"worst {_number(result[f'class_fd{suffix}_ratio_max'])}", "1",
                              "asked-for class vs its held-out digits, each over its own floor")
    if "modes" in result:
        published = PUBLISHED_GAN.get(result["dataset"], {})
        table.add_row("modes covered", f"{result['modes']} / {result['num_modes']}",
                      f"{result['modes_floor']} / {result['num_modes']}",
                      f"PacGAN paper, vanilla GAN: {published['modes']}" if published else "")
        row("high-quality samples %", "high_quality",
            f"PacGAN paper, vanilla GAN: {published['high_quality']}" if published else "", 4)
        row("reverse KL (modes)", "reverse_kl")
        row("KL(real || generated), grid", "grid_kl", f"GAN Lab's, {GRID_CELLS}x{GRID_CELLS} cells")
        row("JS divergence, grid", "grid_js", "at most log 2 = 0.69")
    row("NN distance to train (RMS/pixel)", "nn_distance",
        f"{ratio('nn_ratio')} (well below 1: memorised)" if result.get("nn_ratio") is not None else "")
    row("Inception FID", "inception_fd", ratio("inception_fd_ratio"))
    if "inception_kid" in result:
        table.add_row("Inception KID", _number(result["inception_kid"]),
                      _number(result.get("inception_kid_floor")), "")
    return table


def truncation_table(curve: dict) -> Table:
    """One row per truncation threshold; the floors in the last row."""
    from training.evaluate.truncation import label

    table = Table(title=f"truncation trade-off, {curve['num_samples']} samples, k = {curve['prdc_k']}",
                  caption=f"suggested: {label(curve['suggested'])} ({curve['rule']})",
                  caption_justify="left")
    rows = curve["rows"]
    columns = [key for key in ("fd_ratio", "fd2_ratio", "fd_ratio_mean", "precision", "recall",
                               "precision2", "recall2") if any(key in r for r in rows)]
    names = {"fd_ratio": "FD ratio 1", "fd2_ratio": "FD ratio 2", "fd_ratio_mean": "mean FD ratio",
             "precision": "precision 1", "recall": "recall 1", "precision2": "precision 2",
             "recall2": "recall 2"}
    table.add_column("truncation")
    for key in columns:
        table.add_column(names[key], justify="right")
    for r in rows:
        mark = " *" if r["truncation"] == curve["suggested"] else ""
        table.add_row(label(r["truncation"]) + mark, *(_number(r.get(key)) for key in columns))
    floors = curve["floors"]
    table.add_row("real vs real", *("1" if "ratio" in key else _number(floors.get(key))
                                    for key in columns))
    return table


def evaluate_command(
    source: Annotated[Path, typer.Argument(help="A checkpoint (.pt), a run directory or an ONNX file.")],
    dataset: Annotated[str | None, typer.Option(help="Dataset to compare with (default: the model card's).")] = None,
    num_samples: Annotated[int | None, typer.Option(
        "--num-samples", "-n",
        help="Samples drawn (default: 1000 images, capped by the held-out split; 2500 toy points).")] = None,
    metrics: Annotated[str | None, typer.Option(
        help="Comma-separated, from fd, kid, prdc, coverage, modes, nn, inception (default: all that apply).")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the figures to this JSON file.")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    inception_weights: Annotated[Path | None, typer.Option(
        help="Local FID Inception weights file (weights-inception-2015-12-05-6726825d.pth); "
             "adds Inception FID/KID. Nothing is downloaded.")] = None,
    data_root: Annotated[Path | None, typer.Option(help="Data folder of datasets read from disk [for a run: the one it was trained on].")] = None,
    prdc_k: Annotated[int, typer.Option(
        "--prdc-k", help="Neighbours that set the k-NN balls of precision, recall, density and coverage.")] = 5,
    truncation: Annotated[str | None, typer.Option(
        help="Also sweep these truncation thresholds, e.g. 0.5,0.7,1,1.5,2,none: FD in both "
             "networks, precision and recall at each, and a suggested value.")] = None,
    curve: Annotated[Path, typer.Option(
        help="With --truncation: the curve's PNG (its JSON goes beside it, same name).")] = Path("truncation.png"),
) -> None:
    """Measure a generator: FD and KID in two feature networks, precision, recall,
    density and coverage, each beside its real-vs-real floor; class coverage,
    memorisation, the PacGAN figures for the 2-D toys, and the truncation trade-off."""
    import torch

    from training.evaluate.errors import EvaluationError
    from training.evaluate.evaluator import evaluate

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EvaluationError("--device cuda was asked for, but no CUDA device is available")
    result = evaluate(str(source), dataset=dataset, num_samples=num_samples, metrics=metrics,
                      device=device, root=None if data_root is None else str(data_root),
                      inception_weights=None if inception_weights is None else str(inception_weights),
                      prdc_k=prdc_k, truncations=truncation)
    console = Console()
    console.print(figures_table(result))
    if "truncation" in result:
        from training.evaluate.truncation import write_curve

        console.print(truncation_table(result["truncation"]))
        written, drawn = write_curve(result["truncation"], curve)
        console.print(f"curve written to {written}" + (f" and drawn in {drawn}" if drawn else
                                                       " (install matplotlib to draw it)"))
    console.print(f"{result['source']}; {result['seconds']} s")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n")
        console.print(f"figures written to {json_path}")
