"""The truncation trade-off: FD (both feature networks), precision and recall of one
generator at several truncation thresholds, a suggested threshold, the curve as JSON
and as a PNG.

Truncating latents (redrawing entries beyond |z| = t, `models.latent`) trades variety for
fidelity: precision should rise and recall fall as t shrinks. The suggestion is the
threshold with the lowest mean FD ratio of the two networks (`selection_score`, the
figure `best.pt` is chosen by): FD charges for lost variety and for poor samples alike,
so its minimum is the best balance of the two; the table shows what it costs in
recall. `None` (no truncation) can be one of the values.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from training.evaluate.errors import EvaluationError
from training.evaluate.evaluator import selection_score

MIN_TRUNCATION, MAX_TRUNCATION = 0.05, 4.0  # the service's range: below it, redraws never end
SWEEP = (0.5, 0.7, 1.0, 1.5, 2.0, None)  # what `dcgan export` records in the card
RULE = "lowest mean FD ratio of the two feature networks"
ROW_KEYS = ("fd", "fd_ratio", "fd2", "fd2_ratio", "fd_ratio_mean", "precision", "recall",
            "density", "prdc_coverage", "precision2", "recall2", "density2", "prdc_coverage2")
FLOOR_KEYS = ("fd", "fd2", "precision", "recall", "density", "prdc_coverage", "precision2",
              "recall2", "density2", "prdc_coverage2")


def parse_truncations(text: str | list) -> list[float | None]:
    """"0.5,0.7,1,none" -> [0.5, 0.7, 1.0, None]; each from 0.05 to 4 or none, no repeats."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    values: list[float | None] = []
    for part in parts:
        word = str(part).strip().lower() if part is not None else "none"
        if not word:
            continue
        if word in ("none", "off", "inf"):
            value = None
        else:
            try:
                value = float(word)
            except ValueError:
                raise EvaluationError(f"truncation {part!r} is not a number (or none)") from None
            if not (math.isfinite(value) and MIN_TRUNCATION <= value <= MAX_TRUNCATION):
                raise EvaluationError(f"truncation must be from {MIN_TRUNCATION} to "
                                      f"{MAX_TRUNCATION} (or none), got {part}")
        if value in values:
            raise EvaluationError(f"truncation {word} is given twice")
        values.append(value)
    if not values:
        raise EvaluationError("no truncation value given, e.g. --truncation 0.5,0.7,1,1.5,none")
    return values


def truncation_curve(evaluator, source, values) -> dict:
    """FD (both networks), precision, recall, density and coverage at each threshold of
    `values` (a list, or text for `parse_truncations`), with the floors and a suggestion."""
    values = parse_truncations(values)
    rows = []
    for value in values:
        figures = evaluator(source, truncation=value, only=("fd", "prdc"))
        rows.append({"truncation": value, **{k: figures[k] for k in ROW_KEYS if k in figures}})
    floors = {k: figures[f"{k}_floor"] for k in FLOOR_KEYS if f"{k}_floor" in figures}
    best = min(rows, key=selection_score)
    return {"values": values, "rows": rows, "floors": floors,
            "suggested": best["truncation"], "rule": RULE,
            "num_samples": evaluator.num_samples, "prdc_k": evaluator.prdc_k}


def label(value: float | None) -> str:
    return "none" if value is None else f"{value:g}"


def write_curve(curve: dict, png_path: Path) -> tuple[Path, Path | None]:
    """The curve as JSON beside `png_path` (same name, .json) and drawn as the PNG when
    matplotlib is installed: (json path, png path or None)."""
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    json_path = png_path.with_suffix(".json")
    json_path.write_text(json.dumps(curve, indent=2) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError:
        return json_path, None
    rows = curve["rows"]
    at = range(len(rows))  # categorical x: "none" has no place on a number line
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for key, name in (("fd_ratio", "FD ratio, network 1"), ("fd2_ratio", "FD ratio, network 2")):
        if any(key in row for row in rows):
            left.plot(at, [row.get(key) for row in rows], marker="o", label=name)
    left.axhline(1.0, color="grey", linestyle=":", label="real vs real")
    left.set(ylabel="FD / floor (log scale)", yscale="log", title="Fréchet distance")
    for key, name, colour in (("precision", "precision, network 1", "C0"),
                              ("recall", "recall, network 1", "C1"),
                              ("precision2", "precision, network 2", "C2"),
                              ("recall2", "recall, network 2", "C3")):
        if any(key in row for row in rows):
            right.plot(at, [row.get(key) for row in rows], marker="o", color=colour, label=name)
            if key in curve["floors"]:
                right.axhline(curve["floors"][key], color=colour, linestyle=":", linewidth=1)
    right.set(ylabel="share (dotted: real vs real)", ylim=(0, 1.02),
              title=f"precision and recall (k = {curve['prdc_k']})")
    chosen = [row["truncation"] for row in rows].index(curve["suggested"])
    for axes in (left, right):
        axes.axvline(chosen, color="black", alpha=0.25, linewidth=6, label="suggested")
        axes.set_xticks(list(at), [label(row["truncation"]) for row in rows])
        axes.set_xlabel("truncation |z| threshold")
        axes.legend(fontsize="small")
    figure.suptitle(f"Truncation trade-off, {curve['num_samples']} samples; "
                    f"suggested {label(curve['suggested'])} ({curve['rule']})", fontsize="medium")
    figure.savefig(png_path, dpi=100)
    plt.close(figure)
    return json_path, png_path
