"""The 2-D toys: step rate of the training loop, and where each recipe converges.

    python bench/bench_toys.py rate [--steps 3000] [--rounds 3] [--baseline SRC]
    python bench/bench_toys.py quality --datasets ring --recipes ns-gan,wgan-gp \\
        [--packs 1,2] [--seeds 0-4] [--steps N] [--lr LR] [--r1 W] [--json FILE]
    python bench/bench_toys.py table FILE [FILE ...]
    python bench/bench_toys.py losses --images QUALITY.json ... --toys FILE ...

`rate` times `train()` on the ring (steps per second of the loop as it logs, median
over its log windows) against the MLP alone: the same G and D steps, with the same
losses and optimisers, on batches drawn from a tensor, with no bookkeeping; that is
the ceiling. With `--baseline SRC` (a checkout of another version) each round times
that version too, alternating, so both share the machine's load alike.

`quality` trains one run per dataset, recipe, pack and seed (`--threads`, default 1),
evaluating its EMA generator every `--eval-every` steps on 2,500 points (the PacGAN
figures: modes covered, % high quality, reverse KL), then at the end the EMA and raw
generators, and the discriminator's view of 2,500 held-out real and 2,500 generated
points (mean D(x), D(G(z)) and mean |D - 0.5|). Every figure goes to `--json`, as it
goes; `table` turns such files into BENCHMARKS.md's tables: one row per dataset,
recipe and pack (mean and spread over the seeds, the paper's figures beside it), and
the curve of % high quality over steps. `losses` puts the five losses in one table:
their rows on mnist5k from bench/bench_quality.py's `--json` files beside their toy rows
from `quality`'s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _use_source(src: Path) -> None:
    sys.path.insert(0, str(src))


# --- step rate ---------------------------------------------------------------------------------


def loop_rate(steps: int, threads: int) -> float:
    """Median steps/s of train() over its log windows, the first (start-up) left out."""
    from training.config import TrainConfig, resolve
    from training.loop import train

    with tempfile.TemporaryDirectory() as scratch:
        config = resolve(TrainConfig(dataset="ring", steps=steps, threads=threads, device="cpu",
                                     run_dir=str(Path(scratch) / "run"), log_every=100,
                                     checkpoint_every=steps, seed=0))
        run_dir = train(config, progress=False)
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    return statistics.median(r["steps_per_s"] for r in records[1:])


def mlp_rate(steps: int, threads: int) -> float:
    """Steps/s of the MLP's own work: D step and G step as the loop takes them, nothing else."""
    import torch

    from models import build_models
    from training import losses
    from training.config import TrainConfig, resolve
    from training.run import model_spec

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = resolve(TrainConfig(dataset="ring", device="cpu", run_dir="unused"))
    generator, discriminator = build_models("mlp", model_spec(config))
    adam = dict(betas=(config.beta1, config.beta2), fused=True)
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr_g, **adam)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.lr_d, **adam)
    points = torch.randn(50_000, 2)

    def step() -> None:
        real = points[torch.randint(len(points), (config.batch_size,))]
        fake = generator(torch.randn(config.batch_size, config.nz))
        d_loss = losses.discriminator_loss(config.loss, discriminator(real),
                                           discriminator(fake.detach()))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        discriminator.requires_grad_(False)
        g_loss = losses.generator_loss(config.loss, discriminator(fake))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        discriminator.requires_grad_(True)

    for _ in range(100):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - started)


def rate_command(args) -> None:
    """Alternating rounds: this tree's loop, the baseline's loop, the MLP alone."""
    contenders = {"train() (this version)": [sys.executable, __file__, "rate-one", "--src", str(ROOT)]}
    if args.baseline:
        contenders["train() (baseline)"] = [sys.executable, __file__, "rate-one", "--src",
                                            str(args.baseline)]
    contenders["MLP alone (ceiling)"] = [sys.executable, __file__, "rate-one", "--src", str(ROOT),
                                         "--mlp"]
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, command in contenders.items():
            out = subprocess.run([*command, "--steps", str(args.steps), "--threads",
                                  str(args.threads)], check=True, capture_output=True, text=True,
                                 env={**os.environ, "PYTHONPATH": ""})
            rates[name].append(float(out.stdout.strip().splitlines()[-1]))
            print(f"# {name}: {rates[name][-1]:.0f} steps/s", file=sys.stderr, flush=True)
    ceiling = statistics.median(rates["MLP alone (ceiling)"])
    print(f"<!-- {' '.join(sys.argv)} -->\n<!-- {_machine(args.threads)} -->")
    print("| contender | steps/s (median of rounds) | ms per step | share of the MLP's rate |")
    print("|---|---:|---:|---:|")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.0f} | {1000 / median:.2f} | {median / ceiling:.0%} |")


def _machine(threads: int) -> str:
    import torch

    return (f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {threads}, "
            f"torch {torch.__version__}")


# --- quality -----------------------------------------------------------------------------------


def seeds_of(text: str) -> list[int]:
    if "-" in text:
        first, last = text.split("-")
        return list(range(int(first), int(last) + 1))
    return [int(seed) for seed in text.split(",")]


def variant(recipe: str, args) -> str:
    """The row's name: the recipe, and what --lr and --r1 changed in it."""
    return ", ".join([recipe] + ([f"lr {args.lr:g}"] if args.lr is not None else [])
                     + ([f"R1 {args.r1:g}"] if args.r1 else []))


def run_one(dataset: str, recipe: str, pack: int, seed: int, args, out: Path) -> dict:
    """Train one toy run; its curve, final PacGAN figures and D's view."""
    import torch

    from models import build_models
    from training.checkpoint import LATEST, load_checkpoint, load_torch_generator
    from training.config import TrainConfig, resolve
    from training.data import load_dataset
    from training.evaluate import evaluate
    from training.evaluate.toys import TOY_EVALUATION_SAMPLES, discriminator_view
    from training.loop import train

    run_dir = out / f"{dataset}-{recipe}-pack{pack}-seed{seed}"
    config = resolve(TrainConfig(
        dataset=dataset, recipe=recipe, pack=pack, seed=seed, steps=args.steps, device="cpu",
        lr_g=args.lr, lr_d=args.lr, r1=args.r1,  # lr None: the recipe's
        batch_size=args.batch_size - args.batch_size % pack,  # whole packs: 63 for pack 3
        threads=args.threads, run_dir=str(run_dir), log_every=args.eval_every,
        eval_every=args.eval_every, eval_samples=TOY_EVALUATION_SAMPLES,
        checkpoint_every=10**9, command=" ".join(sys.argv)))
    started = time.perf_counter()
    train(config, progress=False)
    train_seconds = time.perf_counter() - started
    checkpoint = run_dir / LATEST  # the last step, not best.pt
    row = {"dataset": dataset, "recipe": variant(recipe, args), "loss": config.loss,
           "pack": pack, "seed": seed, "steps": config.steps, "train_s": train_seconds}
    for weights in ("ema", "raw"):
        generator, card = load_torch_generator(checkpoint, weights=weights)
        figures = evaluate((generator, card), dataset=dataset, metrics=["modes"],
                           num_samples=TOY_EVALUATION_SAMPLES)
        row[weights] = {key: figures[key] for key in ("modes", "num_modes", "high_quality",
                                                      "reverse_kl")}
    state = load_checkpoint(checkpoint)
    _, discriminator = build_models(card.arch, card.model)
    discriminator.load_state_dict(state["discriminator"])
    real = load_dataset(dataset, split="test", seed=seed,
                        num_samples=TOY_EVALUATION_SAMPLES).points
    generator, _ = load_torch_generator(checkpoint, weights="raw")  # D's opponent
    with torch.no_grad():
        fake = generator(torch.randn(TOY_EVALUATION_SAMPLES, card.nz,
                                     generator=torch.Generator().manual_seed(seed)))
    row["d_view"] = discriminator_view(discriminator, real, fake,
                                       probabilities=config.loss in ("minimax", "nonsaturating"))
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    row["curve"] = [{"step": r["step"], "modes": r["eval"]["modes"],
                     "high_quality": r["eval"]["high_quality"], "d_real": r["d_real"],
                     "d_fake": r["d_fake"]} for r in records if "eval" in r]
    return row


def quality_command(args) -> None:
    rows = json.loads(args.json.read_text()) if args.json and args.json.exists() else []
    done = {(r["dataset"], r["recipe"], r["pack"], r["seed"]) for r in rows}
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch)
        for dataset in args.datasets.split(","):
            for recipe in args.recipes.split(","):
                for pack in (int(p) for p in args.packs.split(",")):
                    for seed in seeds_of(args.seeds):
                        if (dataset, variant(recipe, args), pack, seed) in done:
                            continue
                        print(f"# {dataset} {recipe} pack {pack} seed {seed} ...", file=sys.stderr,
                              flush=True)
                        row = run_one(dataset, recipe, pack, seed, args, out)
                        row["machine"] = _machine(args.threads)
                        print(f"#   {row['train_s']:.0f} s: {row['ema']}", file=sys.stderr, flush=True)
                        rows.append(row)
                        if args.json:  # as it goes: a long sweep survives an interruption
                            args.json.write_text(json.dumps(rows, indent=1) + "\n")
    print(markdown(rows))


# --- tables ------------------------------------------------------------------------------------


def _spread(values: list[float], digits: int = 1) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _groups(rows: list[dict]) -> dict[tuple, list[dict]]:
    """Rows by (dataset, recipe, pack, steps): one schedule's seeds together."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["recipe"], row["pack"], row["steps"]), []).append(row)
    return groups


def markdown(rows: list[dict]) -> str:
    from training.evaluate.toys import PUBLISHED_PACGAN

    lines = ["| dataset | recipe (loss) | pack | steps | seeds | modes | % HQ (EMA) | % HQ (raw) | "
             "reverse KL | mean \\|D − 0.5\\| | D(x) / D(G(z)) | paper: modes, % HQ, rKL | "
             "train s per run |",
             "|---|---|---:|---:|---:|---|---|---|---|---|---|---|---:|"]
    for (dataset, recipe, pack, _), group in _groups(rows).items():
        ema = [r["ema"] for r in group]
        views = [r["d_view"] for r in group]
        half = _spread([v.get("d_from_half") for v in views], 3)
        judged = (f"{statistics.fmean(v['d_real'] for v in views):.3g} / "
                  f"{statistics.fmean(v['d_fake'] for v in views):.3g}")
        paper = "-"
        if group[0]["loss"] in ("minimax", "nonsaturating") and pack in PUBLISHED_PACGAN[dataset]:
            modes, quality, kl = PUBLISHED_PACGAN[dataset][pack]
            paper = f"{modes}, {quality}%, {kl}"
        lines.append(
            f"| {dataset} | {recipe} ({group[0]['loss']}) | {pack} | {group[0]['steps']} | "
            f"{len(group)} | {_spread([e['modes'] for e in ema])}/{ema[0]['num_modes']} | "
            f"{_spread([e['high_quality'] for e in ema])} | "
            f"{_spread([r['raw']['high_quality'] for r in group])} | "
            f"{_spread([e['reverse_kl'] for e in ema], 2)} | {half} | {judged} | {paper} | "
            f"{statistics.fmean(r['train_s'] for r in group):.0f} |")
    return "\n".join(lines)


def curves(rows: list[dict]) -> str:
    """% high quality of the EMA generator (modes covered) over steps, mean over the seeds
    of each group, at the steps it was evaluated."""
    lines = ["| dataset | recipe | pack | steps | seeds | % HQ (modes) at step |",
             "|---|---|---:|---:|---:|---|"]
    for (dataset, recipe, pack, steps), group in _groups(rows).items():
        cells = []
        for step in sorted({point["step"] for r in group for point in r["curve"]}):
            points = [p for r in group for p in r["curve"] if p["step"] == step]
            quality = statistics.fmean(p["high_quality"] for p in points)
            modes = statistics.fmean(p["modes"] for p in points)
            cells.append(f"{step:,}: {quality:.0f}% ({modes:.3g})")
        lines.append(f"| {dataset} | {recipe} | {pack} | {steps} | {len(group)} | {', '.join(cells)} |")
    return "\n".join(lines)


def losses_table(images: list[dict], toys: list[dict]) -> str:
    """The five losses in one table: on mnist5k (bench/bench_quality.py's rows, EMA
    weights, both feature networks) and on the toys (this script's rows without packing,
    one row per recipe, mean over its seeds; the grid with packing 2 in a column of its
    own), the real-vs-real floors and the paper's figures beside them."""
    from bench_quality import pair

    from training.config import LOSSES
    from training.evaluate.toys import PUBLISHED_PACGAN

    def toy_cell(group: list[dict] | None) -> str:
        if not group:
            return "not run"
        ema = [r["ema"] for r in group]
        seeds = f"{len(group)} seed{'s' if len(group) > 1 else ''}"
        return (f"{_spread([e['modes'] for e in ema])}/{ema[0]['num_modes']} modes, "
                f"{_spread([e['high_quality'] for e in ema])}% HQ ({seeds}, "
                f"{group[0]['steps']:,} steps)")

    image_rows = {r["loss"]: r for r in images if r.get("weights") == "ema"}
    groups = {(*key[:2], key[2] > 1): group for key, group in _groups(toys).items()
              if key[2] <= 2}  # packed or not; of several schedules the last wins
    lines = ["| loss | mnist5k: FD ratio 1 / 2 | precision 1 / 2 | recall 1 / 2 | classes | "
             "toy recipe | ring | grid | grid, pack 2 |", "|---|---|---|---|---|---|---|---|---|"]
    for loss in LOSSES:
        image = image_rows.get(loss)
        recipes = sorted({recipe for (_, recipe, _), group in groups.items()
                          if group[0]["loss"] == loss}) or ["-"]
        for recipe in recipes:
            classes = "-" if image is None else f"{image['classes_covered']}/{image['num_classes']}"
            lines.append(
                f"| {loss} | {pair(image or {}, 'fd_ratio', '.3g')} | "
                f"{pair(image or {}, 'precision', '.3f')} | "
                f"{pair(image or {}, 'recall', '.3f')} | {classes} | {recipe} | "
                f"{toy_cell(groups.get(('ring', recipe, False)))} | "
                f"{toy_cell(groups.get(('grid', recipe, False)))} | "
                f"{toy_cell(groups.get(('grid', recipe, True)))} |")
    floors = next(iter(image_rows.values()), {})
    real = {key: floors.get(f"{key}_floor") for key in ("precision", "precision2", "recall", "recall2")}
    ring, grid, packed = (PUBLISHED_PACGAN["ring"][1], PUBLISHED_PACGAN["grid"][1],
                          PUBLISHED_PACGAN["grid"][2])
    lines.append(f"| real vs real / the paper's GAN | 1 / 1 | {pair(real, 'precision', '.3f')} | "
                 f"{pair(real, 'recall', '.3f')} | 10/10 | paper | "
                 f"{ring[0]}/8 modes, {ring[1]}% HQ | {grid[0]}/25 modes, {grid[1]}% HQ | "
                 f"{packed[0]}/25 modes, {packed[1]}% HQ |")
    return "\n".join(lines)


def losses_command(args) -> None:
    images = [row for path in args.images for row in json.loads(Path(path).read_text())]
    toys = [row for path in args.toys for row in json.loads(Path(path).read_text())]
    print(losses_table(images, toys))


def table_command(args) -> None:
    rows = [row for path in args.files for row in json.loads(Path(path).read_text())]
    print(f"<!-- {rows[0]['machine'] if rows else ''} -->")
    print(markdown(rows))
    print()
    print(curves(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    rate = commands.add_parser("rate", help="step rate of train() against the MLP alone")
    rate.add_argument("--steps", type=int, default=3000)
    rate.add_argument("--rounds", type=int, default=3)
    rate.add_argument("--threads", type=int, default=1)
    rate.add_argument("--baseline", type=Path, default=None, help="another version's source tree")
    one = commands.add_parser("rate-one")
    one.add_argument("--src", type=Path, required=True)
    one.add_argument("--steps", type=int, default=3000)
    one.add_argument("--threads", type=int, default=1)
    one.add_argument("--mlp", action="store_true")
    quality = commands.add_parser("quality", help="train and evaluate toy runs")
    quality.add_argument("--datasets", default="ring")
    quality.add_argument("--recipes", default="ns-gan")
    quality.add_argument("--packs", default="1")
    quality.add_argument("--seeds", default="0-4")
    quality.add_argument("--steps", type=int, default=None, help="[the toys' default]")
    quality.add_argument("--eval-every", type=int, default=2000)
    quality.add_argument("--lr", type=float, default=None,
                         help="both learning rates, instead of the recipe's (a row of its own)")
    quality.add_argument("--r1", type=float, default=0.0,
                         help="R1 penalty weight on D's gradient at real points (a row of its own)")
    quality.add_argument("--batch-size", type=int, default=64,
                         help="points per batch, rounded down to whole packs")
    quality.add_argument("--threads", type=int, default=1)
    quality.add_argument("--out", type=Path, default=None, help="keep the runs here")
    quality.add_argument("--json", type=Path, default=None,
                         help="figures go here as they come; runs already in it are skipped")
    table = commands.add_parser("table", help="markdown tables from --json files")
    table.add_argument("files", nargs="+")
    losses = commands.add_parser("losses", help="the five losses on mnist5k and the toys, one table")
    losses.add_argument("--images", nargs="+", required=True, help="bench/bench_quality.py --json files")
    losses.add_argument("--toys", nargs="+", required=True, help="this script's quality --json files")
    args = parser.parse_args()

    if args.command == "rate-one":
        _use_source(args.src)
        print(mlp_rate(args.steps, args.threads) if args.mlp else loop_rate(args.steps, args.threads))
        return
    _use_source(ROOT)
    {"rate": rate_command, "quality": quality_command, "table": table_command,
     "losses": losses_command}[args.command](args)


if __name__ == "__main__":
    main()
