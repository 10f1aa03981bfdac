"""Four GAN losses side by side on the 2-D toys: one figure, one command.

For `ring` and `grid`, the recipes of the 2014 minimax GAN (`gan`), the non-saturating
loss with the DCGAN paper's settings (`dcgan`), hinge and WGAN-GP train with each one's
settings and the toys' schedule, run to convergence (`training.config.resolve`: whatever
`dcgan train --dataset ring --recipe hinge` runs: 20,000 discriminator steps on the ring,
80,000 on the grid, rates decaying to 0), as BENCHMARKS.md's table ran them. The figure
has one column per toy: GAN Lab's JS divergence on the toy's grid over the
discriminator steps (one thin line per seed, the median thick), the modes covered and
the share of high-quality samples at the end (the PacGAN figures, one dot per seed), and
GAN Lab's view of each recipe's first seed at the end. The numbers go to a JSON file
beside the figure.

Bounded time on 2 cores: runs go `--jobs` at a time, one torch thread each; the
defaults (each toy's schedule, 1 seed: 8 runs) take about 12 minutes alone.
`--steps 1000` (generator steps for every run) is a quick look.

    python bench/toy_losses.py [--steps N] [--seeds 1] [--jobs 2] \
        [--out docs/figures/toy_losses.png] [--runs DIR]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOYS = ("ring", "grid")
RECIPES = ("gan", "dcgan", "wgan-gp", "hinge")
COLOURS = {"gan": "#1b9e77", "dcgan": "#d95f02", "wgan-gp": "#7570b3", "hinge": "#e7298a"}


def train_one(toy: str, recipe: str, seed: int, steps: int | None, run_dir: str) -> dict:
    """Train one toy run and measure its end state (a worker process)."""
    import numpy as np
    import torch

    from models import build_models
    from training.checkpoint import load_checkpoint
    from training.config import TrainConfig, resolve
    from training.data import toy_modes
    from training.evaluate.toys import toy_figures
    from training.ganlab import GameFrames, game_view
    from training.loop import train
    from training.report import read_log
    from training.run import model_spec

    config = resolve(TrainConfig(dataset=toy, recipe=recipe, seed=seed, steps=steps, device="cpu",
                                 threads=1, run_dir=run_dir))
    every = max(config.steps // 10, 1)  # ten frames, and so ten points of the JS curve
    config = replace(config, sample_every=every, log_every=every, checkpoint_every=config.steps)
    started = time.perf_counter()
    train(config, progress=False)
    seconds = time.perf_counter() - started
    state = load_checkpoint(run_dir)
    generator, discriminator = build_models(config.arch, model_spec(config))
    generator.load_state_dict(state["generator"])  # the generator D plays against, as drawn
    discriminator.load_state_dict(state["discriminator"])
    frames = GameFrames(config, run_dir, torch.device("cpu"))
    view = game_view(generator, discriminator, config.loss, toy, frames.real, frames.latents,
                     config.steps)
    with torch.no_grad():
        points = generator(frames.latents).numpy()
    log = read_log(Path(run_dir) / "metrics.jsonl")
    js_steps, js = log.series.get("grid_js", ([], []))
    return {"toy": toy, "recipe": recipe, "loss": config.loss, "seed": seed, "seconds": seconds,
            "steps": config.steps, "d_steps": config.d_steps,
            "js_steps": [step * config.d_steps for step in js_steps], "js": js, **toy_figures(points, *toy_modes(toy)),
            "view": {key: np.asarray(value).tolist() if hasattr(value, "shape") else value
                     for key, value in vars(view).items()}}


def draw(results: list[dict], out: Path) -> None:
    import numpy as np

    from training.plots import GameView, draw_game, figure_png, new_figure

    figure = new_figure(16, 9)
    grid = figure.add_gridspec(3, 8, height_ratios=[1.0, 0.5, 1.1])
    for column, toy in enumerate(TOYS):
        mine = [r for r in results if r["toy"] == toy]
        js_ax = figure.add_subplot(grid[0, 4 * column:4 * column + 4])
        modes_ax = figure.add_subplot(grid[1, 4 * column:4 * column + 4])
        for index, recipe in enumerate(RECIPES):
            runs = [r for r in mine if r["recipe"] == recipe]
            for run in runs:
                js_ax.plot(run["js_steps"], run["js"], color=COLOURS[recipe], lw=0.6, alpha=0.5)
            if runs and all(r["js_steps"] == runs[0]["js_steps"] for r in runs):
                median = np.median([r["js"] for r in runs], axis=0)
                js_ax.plot(runs[0]["js_steps"], median, color=COLOURS[recipe], lw=2,
                           label=f"{recipe} ({runs[0]['loss']})")
            for run in runs:
                share = run["modes"] / run["num_modes"]
                modes_ax.scatter(index - 0.1, share, color=COLOURS[recipe], s=25)
                modes_ax.scatter(index + 0.1, run["high_quality"] / 100, color=COLOURS[recipe],
                                 marker="x", s=25)
        last = max((r["js_steps"][-1] for r in mine if r["js_steps"]), default=1)
        num_modes = mine[0]["num_modes"] if mine else 0
        js_ax.set_title(f"{toy}: JS divergence on the grid (thin: seeds; thick: median)", fontsize=10)
        js_ax.set_xlabel("discriminator step", fontsize=8)
        js_ax.set_xlim(0, last)
        js_ax.set_ylim(0, np.log(2))
        js_ax.legend(fontsize=8)
        modes_ax.set_title(f"{toy} at the last step: modes covered of {num_modes} (dots) and "
                           "high-quality samples (crosses), as shares", fontsize=10)
        modes_ax.set_xticks(range(len(RECIPES)), RECIPES, fontsize=8)
        modes_ax.set_ylim(-0.05, 1.05)
        for ax in (js_ax, modes_ax):
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
        for index, recipe in enumerate(RECIPES):
            first = min((r for r in mine if r["recipe"] == recipe), key=lambda r: r["seed"],
                        default=None)
            ax = figure.add_subplot(grid[2, 4 * column + index])
            if first is None:
                ax.axis("off")
                continue
            fields = {k: np.asarray(v) if isinstance(v, list) else v for k, v in first["view"].items()}
            draw_game(ax, GameView(**fields))
            ax.set_title(f"{toy} · {recipe} · {first['steps']:,}", fontsize=8)
            if index:  # one legend per toy is enough
                ax.get_legend().remove()
    figure.suptitle("Four losses on the 2-D toys: GAN Lab's JS, the PacGAN figures, and the game at "
                    "the end (background: D's verdict, green real, purple fake; mesh: G's manifold; "
                    "pink: -grad of G's loss)", fontsize=11)
    out.parent.mkdir(parents=True, exist_ok=True)
    from models.generation import atomic_write

    atomic_write(out, figure_png(figure))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None,
                        help="generator steps of every run [each toy's schedule]")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures" / "toy_losses.png")
    parser.add_argument("--runs", type=Path, help="Keep the run directories here [a temporary folder].")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        runs = args.runs or Path(scratch)
        jobs = [(toy, recipe, seed, args.steps, str(runs / f"{toy}-{recipe}-{seed}"))
                for toy in TOYS for recipe in RECIPES for seed in range(args.seeds)]
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
            results = list(pool.map(train_one, *zip(*jobs)))
    draw(results, args.out)
    summary = [{k: v for k, v in r.items() if k != "view"} for r in results]
    from models.generation import atomic_write

    table = {"steps": args.steps, "seeds": args.seeds, "runs": summary}
    atomic_write(args.out.with_suffix(".json"), json.dumps(table, indent=1).encode())
    for toy in TOYS:
        for recipe in RECIPES:
            mine = [r for r in results if r["toy"] == toy and r["recipe"] == recipe]
            print(f"{toy:5} {recipe:8} final JS median {statistics.median(r['js'][-1] for r in mine):.3f}  "
                  f"modes {[r['modes'] for r in mine]} of {mine[0]['num_modes']}  "
                  f"high quality {[round(r['high_quality']) for r in mine]}%")
    print(f"wrote {args.out} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
