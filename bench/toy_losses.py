"""The four GAN losses side by side on the 2-D toys: one figure, one command.

For `ring` and `grid`, each of minimax, non-saturating, WGAN-GP and hinge trains with
the project's default recipe for it (`training.config.resolve`: whatever `dcgan train
--dataset ring --loss hinge` would run) under several seeds. The figure has one column
per toy: GAN Lab's JS divergence on the toy's grid over the steps (one thin line per
seed, the median thick), the modes covered and the share of high-quality samples at
the end (the PacGAN figures, one dot per seed), and GAN Lab's view of each loss's
first seed at the end. The numbers go to a JSON file beside the figure.

Bounded time on 2 cores: runs go `--jobs` at a time, one torch thread each; the
defaults (1,000 steps, 3 seeds: 24 runs) take about as long as 24,000 toy steps over
the jobs. `--steps 300 --seeds 1` is a quick look.

    python bench/toy_losses.py [--steps 1000] [--seeds 3] [--jobs 2] \
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOYS = ("ring", "grid")
LOSSES = ("minimax", "nonsaturating", "wgan-gp", "hinge")
COLOURS = {"minimax": "#1b9e77", "nonsaturating": "#d95f02", "wgan-gp": "#7570b3", "hinge": "#e7298a"}


def train_one(toy: str, loss: str, seed: int, steps: int, run_dir: str) -> dict:
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

    every = max(steps // 10, 1)  # ten frames, and so ten points of the JS curve
    config = resolve(TrainConfig(dataset=toy, loss=loss, seed=seed, steps=steps, device="cpu",
                                 threads=1, sample_every=every, log_every=every,
                                 checkpoint_every=steps, run_dir=run_dir))
    started = time.perf_counter()
    train(config, progress=False)
    seconds = time.perf_counter() - started
    state = load_checkpoint(run_dir)
    generator, discriminator = build_models(config.arch, model_spec(config))
    generator.load_state_dict(state["generator"])  # the generator D plays against, as drawn
    discriminator.load_state_dict(state["discriminator"])
    frames = GameFrames(config, run_dir, torch.device("cpu"))
    view = game_view(generator, discriminator, loss, toy, frames.real, frames.latents, steps)
    with torch.no_grad():
        points = generator(frames.latents).numpy()
    log = read_log(Path(run_dir) / "metrics.jsonl")
    js_steps, js = log.series.get("grid_js", ([], []))
    return {"toy": toy, "loss": loss, "seed": seed, "seconds": seconds,
            "js_steps": js_steps, "js": js, **toy_figures(points, *toy_modes(toy)),
            "view": {key: np.asarray(value).tolist() if hasattr(value, "shape") else value
                     for key, value in vars(view).items()}}


def draw(results: list[dict], out: Path, steps: int) -> None:
    import numpy as np

    from training.plots import GameView, draw_game, figure_png, new_figure

    figure = new_figure(16, 9)
    grid = figure.add_gridspec(3, 8, height_ratios=[1.0, 0.5, 1.1])
    for column, toy in enumerate(TOYS):
        mine = [r for r in results if r["toy"] == toy]
        js_ax = figure.add_subplot(grid[0, 4 * column:4 * column + 4])
        modes_ax = figure.add_subplot(grid[1, 4 * column:4 * column + 4])
        for index, loss in enumerate(LOSSES):
            runs = [r for r in mine if r["loss"] == loss]
            for run in runs:
                js_ax.plot(run["js_steps"], run["js"], color=COLOURS[loss], lw=0.6, alpha=0.5)
            if runs and all(r["js_steps"] == runs[0]["js_steps"] for r in runs):
                median = np.median([r["js"] for r in runs], axis=0)
                js_ax.plot(runs[0]["js_steps"], median, color=COLOURS[loss], lw=2, label=loss)
            for run in runs:
                share = run["modes"] / run["num_modes"]
                modes_ax.scatter(index - 0.1, share, color=COLOURS[loss], s=25)
                modes_ax.scatter(index + 0.1, run["high_quality"] / 100, color=COLOURS[loss],
                                 marker="x", s=25)
        num_modes = mine[0]["num_modes"] if mine else 0
        js_ax.set_title(f"{toy}: JS divergence on the grid (thin: seeds; thick: median)", fontsize=10)
        js_ax.set_xlabel("step", fontsize=8)
        js_ax.set_xlim(0, steps)
        js_ax.set_ylim(0, np.log(2))
        js_ax.legend(fontsize=8)
        modes_ax.set_title(f"{toy} at step {steps}: modes covered of {num_modes} (dots) and "
                           "high-quality samples (crosses), as shares", fontsize=10)
        modes_ax.set_xticks(range(len(LOSSES)), LOSSES, fontsize=8)
        modes_ax.set_ylim(-0.05, 1.05)
        for ax in (js_ax, modes_ax):
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
        for index, loss in enumerate(LOSSES):
            first = min((r for r in mine if r["loss"] == loss), key=lambda r: r["seed"], default=None)
            ax = figure.add_subplot(grid[2, 4 * column + index])
            if first is None:
                ax.axis("off")
                continue
            fields = {k: np.asarray(v) if isinstance(v, list) else v for k, v in first["view"].items()}
            draw_game(ax, GameView(**fields))
            ax.set_title(f"{toy} · {loss} · seed {first['seed']}", fontsize=8)
            if index:  # one legend per toy is enough
                ax.get_legend().remove()
    figure.suptitle("The losses on the 2-D toys: GAN Lab's JS, the PacGAN figures, and the game at "
                    "the end (background: D's verdict, green real, purple fake; mesh: G's manifold; "
                    "pink: -grad of G's loss)", fontsize=11)
    out.parent.mkdir(parents=True, exist_ok=True)
    from models.generation import atomic_write

    atomic_write(out, figure_png(figure))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures" / "toy_losses.png")
    parser.add_argument("--runs", type=Path, help="Keep the run directories here [a temporary folder].")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        runs = args.runs or Path(scratch)
        jobs = [(toy, loss, seed, args.steps, str(runs / f"{toy}-{loss}-{seed}"))
                for toy in TOYS for loss in LOSSES for seed in range(args.seeds)]
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
            results = list(pool.map(train_one, *zip(*jobs)))
    draw(results, args.out, args.steps)
    summary = [{k: v for k, v in r.items() if k != "view"} for r in results]
    from models.generation import atomic_write

    table = {"steps": args.steps, "seeds": args.seeds, "runs": summary}
    atomic_write(args.out.with_suffix(".json"), json.dumps(table, indent=1).encode())
    for toy in TOYS:
        for loss in LOSSES:
            mine = [r for r in results if r["toy"] == toy and r["loss"] == loss]
            print(f"{toy:5} {loss:14} final JS median {statistics.median(r['js'][-1] for r in mine):.3f}  "
                  f"modes {[r['modes'] for r in mine]} of {mine[0]['num_modes']}  "
                  f"high quality {[round(r['high_quality']) for r in mine]}%")
    print(f"wrote {args.out} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
