"""`dcgan report RUN`: one HTML page (and the PNGs and GIF beside it) about a run.

Any run directory of the project, toy or image, finished or still going: the losses,
D's mean outputs, the gradient norms, the quality figures over steps when the run
evaluated (FD ratios, coverage; the toys' modes and grid divergences), the fixed-latent
samples as a timeline and an animation (a toy run's are GAN Lab's frames), the model
card of the latest checkpoint, and the warnings the run logged.

metrics.jsonl is read once, line by line, into one series per numeric key; a resumed
run that logged some steps twice keeps the later records (the ones its checkpoints
continue), and a line cut short by a run still writing is skipped. Curves of more than
MAX_POINTS points are drawn as bucket means with their min-max band, so a long run's
report stays quick. The page needs no network and no script: the folder travels as one.
"""

from __future__ import annotations

import bisect
import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.generation import atomic_write
from training.plots import FAKE, REAL, figure_png, new_figure, write_animation

MAX_POINTS = 4000  # points per curve before bucketing
TIMELINE_FRAMES = 8  # sample pictures in the timeline
ANIMATION_FRAMES = 60  # frames of the report's animation (evenly spaced, the last kept)
REPORT_DIR = "report"
CARD_SKIP = ("class_histogram", "class_histogram_floor", "truncation", "onnx_parity")


@dataclass
class RunLog:
    """What metrics.jsonl holds, as series: `series[key] = (steps, values)`."""

    series: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    evals: tuple[list[int], list[dict]] = field(default_factory=lambda: ([], []))
    warnings: tuple[list[int], list[str]] = field(default_factory=lambda: ([], []))
    records: int = 0
    skipped: int = 0  # lines that were not a JSON record (one being written)

    @property
    def last_step(self) -> int:
        steps = self.series.get("d_loss", ([], []))[0]
        return steps[-1] if steps else 0

    def has(self, key: str) -> bool:
        return bool(self.series.get(key, ([], []))[0])


def _append(steps: list, values: list, step: int, value) -> None:
    steps.append(step)
    values.append(value)


def _drop_from(log: RunLog, step: int) -> None:
    """Forget what was logged at `step` and after: a resume is logging those steps again."""
    for steps, values in (*log.series.values(), log.evals, log.warnings):
        cut = bisect.bisect_left(steps, step)
        del steps[cut:], values[cut:]


def read_log(path: Path) -> RunLog:
    """One pass over metrics.jsonl (see the module docstring)."""
    log, last = RunLog(), -1
    if not path.exists():
        return log
    series = log.series
    with path.open() as lines:
        for line in lines:
            try:
                record = json.loads(line)
                step = int(record["step"])
            except (ValueError, KeyError, TypeError):
                log.skipped += 1
                continue
            log.records += 1
            if step <= last:  # the later records win: they are what the checkpoints continue
                _drop_from(log, step)
            last = step
            for key, value in record.items():  # the hot loop of a long run's report
                if type(value) is float or type(value) is int:  # not bool, not nested
                    entry = series.get(key)
                    if entry is None:
                        entry = series[key] = ([], [])
                    entry[0].append(step)
                    entry[1].append(value)
            if isinstance(record.get("eval"), dict):
                _append(*log.evals, step, record["eval"])
            for warning in record.get("warnings") or []:
                _append(*log.warnings, step, str(warning))
    series.pop("step", None)
    return log


def grouped_warnings(log: RunLog) -> list[dict]:
    """One row per kind of warning (its numbers aside): count, first and last step, the
    latest message."""
    groups: dict[str, dict] = {}
    for step, message in zip(*log.warnings):
        kind = re.sub(r"\d[\d.e+-]*", "#", message)
        group = groups.setdefault(kind, {"count": 0, "first": step})
        group.update(count=group["count"] + 1, last=step, message=message)
    return sorted(groups.values(), key=lambda g: g["first"])


def _curve(ax, steps: list[int], values: list[float], label: str, colour: str | None = None) -> None:
    """A line, or for long series the bucket means with their min-max band."""
    x, y = np.asarray(steps, float), np.asarray(values, float)
    if len(x) > MAX_POINTS:
        buckets = MAX_POINTS // 2
        edges = np.linspace(0, len(x), buckets + 1).astype(int)
        x = np.array([x[a:b].mean() for a, b in zip(edges, edges[1:])])
        chunks = [y[a:b] for a, b in zip(edges, edges[1:])]
        low = np.array([np.nanmin(c) for c in chunks])
        high = np.array([np.nanmax(c) for c in chunks])
        y = np.array([np.nanmean(c) for c in chunks])
        ax.fill_between(x, low, high, color=colour, alpha=0.2, lw=0)
    ax.plot(x, y, label=label, color=colour, lw=1)


def _chart(title: str, curves: list[tuple], ylabel: str = "", log_y: bool = False,
           total_steps: int | None = None) -> bytes:
    figure = new_figure(8, 3, layout=None)
    figure.subplots_adjust(left=0.08, right=0.98, bottom=0.16, top=0.9)
    ax = figure.add_subplot()
    for steps, values, label, colour in curves:
        _curve(ax, steps, values, label, colour)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step", fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    if log_y:
        ax.set_yscale("log")
    if total_steps:
        ax.set_xlim(0, total_steps)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    return figure_png(figure)


def _eval_series(log: RunLog, key: str) -> tuple[list[int], list[float]]:
    pairs = [(s, e[key]) for s, e in zip(*log.evals) if isinstance(e.get(key), (int, float))]
    return [s for s, _ in pairs], [float(v) for _, v in pairs]


def _chosen(paths: list[Path], count: int) -> list[Path]:
    """`count` of `paths` evenly spaced, the first and the last among them."""
    if len(paths) <= count:
        return paths
    return [paths[i] for i in np.unique(np.linspace(0, len(paths) - 1, count).round().astype(int))]


def _timeline(frames: list[Path]) -> bytes:
    from PIL import Image

    with Image.open(frames[0]) as first:
        aspect = first.height / first.width
    columns = min(4 if aspect > 0.75 else 2, len(frames))  # GAN Lab's frames are wide
    rows = math.ceil(len(frames) / columns)
    figure = new_figure(3 * columns, 3 * columns * aspect * rows / columns + 0.3 * rows)
    for index, path in enumerate(frames):
        ax = figure.add_subplot(rows, columns, index + 1)
        with Image.open(path) as image:
            ax.imshow(np.asarray(image.convert("RGB")))
        ax.set_title(f"step {int(path.stem.split('_')[-1])}", fontsize=8)
        ax.axis("off")
    return figure_png(figure)


def _card(run_dir: Path) -> dict | None:
    """The model card of the run's latest checkpoint, read without its weights."""
    path = run_dir / "checkpoint.pt"
    if not path.exists():
        return None
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return state.get("card")


def make_report(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write the report of `run_dir` into `out_dir` (default RUN/report/); returns the
    path of its index.html."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run directory at {run_dir}")
    if not (run_dir / "config.json").exists() and not (run_dir / "metrics.jsonl").exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.json or metrics.jsonl)")
    out = Path(out_dir) if out_dir is not None else run_dir / REPORT_DIR
    config = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").exists() else {}
    log = read_log(run_dir / "metrics.jsonl")
    total = int(config.get("steps") or log.last_step or 1)
    sections: list[str] = []
    pictures: dict[str, bytes] = {}

    def figure(name: str, title: str, png: bytes, note: str = "") -> None:
        pictures[name] = png
        sections.append(f"<h2>{html.escape(title)}</h2>" + (f"<p class=note>{html.escape(note)}</p>" if note else "")
                        + f'<img src="{name}" alt="{html.escape(title)}">')

    series = log.series
    if log.has("d_loss"):
        figure("losses.png", "Losses", _chart(
            "losses", [(*series[k], label, colour) for k, label, colour in
                       (("d_loss", "D loss", "#444444"), ("g_loss", "G loss", FAKE)) if log.has(k)],
            total_steps=total))
    bce = config.get("loss") in ("minimax", "nonsaturating")
    if log.has("d_real") and log.has("d_fake"):
        figure("d_outputs.png", "Mean D(x) and D(G(z))", _chart(
            "mean D(x) and D(G(z))", [(*series["d_real"], "D(x), real", REAL),
                                       (*series["d_fake"], "D(G(z)), generated", FAKE)],
            ylabel="probability" if bce else "critic value", total_steps=total),
            "" if bce else f"{config.get('loss')}: the critic's raw values, not probabilities")
    else:
        sections.append("<h2>Mean D(x) and D(G(z))</h2><p class=note>This run does not log D's "
                        "outputs; the losses above are what it logs of the game.</p>")
    if log.has("grad_norm_g"):
        figure("grad_norms.png", "Gradient norms", _chart(
            "gradient norms", [(*series[k], label, colour) for k, label, colour in
                               (("grad_norm_g", "G", FAKE), ("grad_norm_d", "D", "#444444")) if log.has(k)],
            log_y=True, total_steps=total))
    if log.has("grid_kl"):
        figure("divergences.png", "Divergences on the grid (GAN Lab's)", _chart(
            "KL(real || generated) and JS on the toy's grid",
            [(*series["grid_kl"], "KL", "#d95f02"), (*series["grid_js"], "JS", "#1f78b4")],
            total_steps=total), "of the generator being trained, at each sample step")
    ratios = [(*_eval_series(log, k), label, None) for k, label in
              (("fd_ratio", "FD ratio, network 1"), ("fd2_ratio", "FD ratio, network 2"),
               ("fd_ratio_mean", "mean (selects best.pt)")) if _eval_series(log, k)[0]]
    if ratios:
        figure("fd_ratio.png", "FD ratio over steps", _chart(
            "FD / real-vs-real floor (1 is as close as real data)", ratios, log_y=True,
            total_steps=total), "of the generator that is served (EMA), at each evaluation")
    coverage = []
    for key, label, of in (("prdc_coverage", "coverage (k-NN balls)", None),
                           ("prdc_coverage2", "coverage, network 2", None),
                           ("classes_covered", "classes covered", "num_classes"),
                           ("modes", "modes covered", "num_modes"),
                           ("grid_js", "JS on the grid", None)):
        steps, values = _eval_series(log, key)
        if steps:
            if of:  # a share of the classes or modes there are
                counts = _eval_series(log, of)[1]
                values = [v / c for v, c in zip(values, counts)] if len(counts) == len(values) else values
            coverage.append((steps, values, label, None))
    if coverage:
        figure("coverage.png", "Coverage over steps", _chart(
            "coverage (shares, 1 = all)", coverage, total_steps=total))
    if not log.evals[0]:
        sections.append("<h2>Quality over steps</h2><p class=note>Not evaluated during training "
                        "(<code>dcgan train --eval-every N</code>).</p>")
    frames = sorted((run_dir / "samples").glob("step_*.png"))
    toy = (run_dir / "samples" / "training.gif").exists() or log.has("grid_kl")
    what = "GAN Lab's view of the game" if toy else "the fixed latents' samples"
    if frames:
        figure("timeline.png", f"Timeline: {what}", _timeline(_chosen(frames, TIMELINE_FRAMES)),
               f"{len(frames)} sample steps; {min(len(frames), TIMELINE_FRAMES)} shown")
        animation = write_animation(_chosen(frames, ANIMATION_FRAMES), out / "animation.gif")
        if animation is not None:
            size = "" if toy else " class=pixels"  # small sample grids, shown enlarged and sharp
            sections.append(f'<h2>Animation</h2><img src="animation.gif"{size} alt="{html.escape(what)}, animated">')
    else:
        sections.append("<h2>Samples</h2><p class=note>No sample pictures yet.</p>")
    sections.append(_card_section(_card(run_dir)))
    sections.append(_warnings_section(log))
    for name, png in pictures.items():
        atomic_write(out / name, png)
    page = _page(run_dir, config, log, total, sections)
    return atomic_write(out / "index.html", page.encode())


def _warnings_section(log: RunLog) -> str:
    groups = grouped_warnings(log)
    if not groups:
        return "<h2>Warnings</h2><p class=note>The run logged none.</p>"
    rows = "".join(f"<tr><td>{html.escape(g['message'])}</td><td>{g['count']}</td>"
                   f"<td>{g['first']}</td><td>{g['last']}</td></tr>" for g in groups)
    return ("<h2>Warnings</h2><table><tr><th>latest message of its kind</th><th>times</th>"
            f"<th>first step</th><th>last step</th></tr>{rows}</table>")


def _value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _card_section(card: dict | None) -> str:
    if card is None:
        return "<h2>Model card</h2><p class=note>No checkpoint yet.</p>"
    rows = [(key, card[key]) for key in ("name", "arch", "step", "weights", "created", "command",
                                         "model", "dataset", "versions") if key in card]
    rows += [(f"quality: {key}", value) for key, value in (card.get("quality") or {}).items()
             if key not in CARD_SKIP]
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(_value(v))}</td></tr>" for k, v in rows)
    return f"<h2>Model card (checkpoint.pt)</h2><table class=card>{body}</table>"


STYLE = """body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
img{max-width:100%;display:block}img.pixels{width:24rem;image-rendering:pixelated}.note{color:#666;font-size:.9rem}
table{border-collapse:collapse;font-size:.85rem}td,th{border:1px solid #ddd;padding:.2rem .5rem;
text-align:left;vertical-align:top}.card td{word-break:break-word}code{background:#f4f4f4}"""


def _page(run_dir: Path, config: dict, log: RunLog, total: int, sections: list[str]) -> str:
    last = log.last_step
    state = (f"finished: {last} of {total} steps" if last >= total
             else f"not finished: last logged step {last} of {total}")
    facts = [("run", str(run_dir)), ("dataset", config.get("dataset", "?")),
             ("loss", config.get("loss", "?")), ("state", state), ("records", str(log.records))]
    if log.has("elapsed_s"):
        facts.append(("time", f"{log.series['elapsed_s'][1][-1] / 60:.1f} min"))
    if log.has("steps_per_s"):
        facts.append(("speed", f"{np.median(log.series['steps_per_s'][1]):.1f} steps/s (median)"))
    if log.skipped:
        facts.append(("skipped", f"{log.skipped} unreadable line(s) in metrics.jsonl"))
    head = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts)
    command = html.escape(config.get("command", ""))
    title = html.escape(f"Training report: {config.get('name') or run_dir.name}")
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{title}</title>"
            f"<style>{STYLE}</style></head><body><h1>{title}</h1><table>{head}</table>"
            + (f"<p><code>{command}</code></p>" if command else "") + "".join(sections)
            + "<h2>Config</h2><details><summary>config.json</summary><pre>"
            + html.escape(json.dumps(config, indent=2)) + "</pre></details></body></html>\n")
