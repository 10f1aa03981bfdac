"""`dcgan`: train, export, sample, interpolate, evaluate generators and report on runs.

Thin typer commands over one function each. Options default to None and override the
dataclass defaults in training/config.py. Errors a user can make end in one line on
stderr and exit code 1, never a traceback.

`sample` and `interpolate` go through the generation layer (models.generation) as the
service does: plan latents and labels, generate, encode, write atomically. Their
defaults are the HTTP API's (a square grid; a one-row strip or a GIF of 100 ms frames;
each end point's class, switching halfway), so the same request gives the same file as
POST /sample or POST /interpolate on the same ONNX file.
"""

from __future__ import annotations

import functools
import json
import logging
import shlex
import sys
from dataclasses import fields
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from models.generation.pictures import GIF_FRAME_MS
from training.evaluate.cli import evaluate_command
from training.latent_cli import register as register_latent_commands

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Train DCGAN generators, export them to ONNX, and look at what they make.",
)
err = Console(stderr=True)
out = Console()


def _user_errors():
    from models.card import CardError
    from models.generation import ModelLoadError
    from training.checkpoint import CheckpointError
    from training.evaluate.errors import EvaluationError
    from training.export import ExportError
    from training.loop import TrainingError

    return (ValueError, FileNotFoundError, NotADirectoryError, CardError, CheckpointError,
            EvaluationError, ExportError, TrainingError, ModelLoadError)


# The request fields of the generation layer's errors, as the options that set them.
OPTIONS = {"label": "--label", "truncation": "--truncation", "steps": "--steps",
           "method": "--method", "start": "--start", "end": "--end"}


def _message(exc: Exception) -> str:
    """The error's one line, naming the CLI's option where the layer names a field."""
    from models.generation import GenerationError

    text = str(exc)
    if not isinstance(exc, GenerationError):
        return text
    if exc.field == "format":  # the CLI's formats are all pictures
        return "this generator makes points, not images; sample it from Python"
    option = OPTIONS.get(exc.field)
    return option + text[len(exc.field):] if option and text.startswith(exc.field) else text


def clean_errors(command):
    """Turn the errors a user can cause into one red line and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except _user_errors() as exc:
            # escaped: a message is plain text, and may hold [brackets] (paths, shapes)
            err.print(f"[red]error:[/red] {escape(_message(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("interrupted; the last checkpoint is kept (resume with --resume RUN_DIR)")
            raise typer.Exit(130) from None

    return wrapper


def _command_line(drop: str | None = None) -> str:
    return shlex.join(["dcgan", *(arg for arg in sys.argv[1:] if arg != drop)])


@app.command()
@clean_errors
def train(
    dataset: str | None = typer.Option(None, help="mnist5k (default, offline), digits, mnist, fashion-mnist, cifar10, celeba, folder, ring, grid, fake."),
    data_root: str | None = typer.Option(None, help="Folder holding torchvision datasets, or the image folder for 'folder'."),
    download: bool | None = typer.Option(None, "--download", help="Let torchvision download the dataset into --data-root (needs internet)."),
    image_size: int | None = typer.Option(None, help="Image side, a power of two from 16 to 256 [32]."),
    channels: int | None = typer.Option(None, help="1 or 3 image channels [the dataset's]."),
    conditional: bool | None = typer.Option(None, "--conditional", help="Class-conditional G and D (labelled datasets)."),
    latent_classes: bool | None = typer.Option(None, "--latent-classes", help="An unconditional G whose class is a linear code of its latent: D is class-conditional and told each fake's class from its latent (labelled datasets)."),
    conditioning_start: int | None = typer.Option(None, help="With --conditional or --latent-classes: train unconditionally until this step, then fade the labels in [0]."),
    conditioning_steps: int | None = typer.Option(None, help="With --conditional or --latent-classes: steps over which the labels fade in after --conditioning-start [0]."),
    arch: str | None = typer.Option(None, help="dcgan or mlp [dcgan for images, mlp for 2-D toys]."),
    nz: int | None = typer.Option(None, help="Latent size [100 for dcgan, 2 for mlp]."),
    ngf: int | None = typer.Option(None, help="Generator feature maps [64]."),
    ndf: int | None = typer.Option(None, help="Discriminator feature maps [64]."),
    pack: int | None = typer.Option(None, help="PacGAN: samples D judges together [1 = off]."),
    recipe: str | None = typer.Option(None, help="A loss with its paper's settings: dcgan [default], gan, ns-gan, wgan, wgan-gp or hinge (README); options given with it win."),
    loss: str | None = typer.Option(None, help="minimax, nonsaturating [the recipe's], wgan, wgan-gp or hinge."),
    d_norm: str | None = typer.Option(None, help="D normalisation: batch, layer, spectral or none [batch; layer for wgan-gp]."),
    r1: float | None = typer.Option(None, help="R1 penalty weight (gamma) on D's gradient at real images, any loss [0 = off]."),
    d_steps: int | None = typer.Option(None, help="Discriminator steps per generator step (k) [the recipe's; 1]."),
    clip: float | None = typer.Option(None, help="WGAN weight-clipping bound [the recipe's; 0.01]."),
    gp_weight: float | None = typer.Option(None, help="WGAN-GP penalty weight lambda [the recipe's; 10, 0.1 on the toys]."),
    label_smoothing: float | None = typer.Option(None, help="One-sided label smoothing for real samples [0]."),
    instance_noise: float | None = typer.Option(None, help="Std of instance noise on D's inputs, decaying to 0 [0]."),
    top_k: float | None = typer.Option(None, help="Top-k training: G learns from the fakes D scores highest, a share of the batch falling 1%/epoch to this [1 = off; the paper: 0.5]."),
    augment: str | None = typer.Option(None, help="DiffAugment of D's inputs: translation,cutout (a subset, or none) [none]."),
    ema_decay: float | None = typer.Option(None, help="EMA decay of generator weights, 0 to disable [0.999]."),
    ema_rampup: float | None = typer.Option(None, help="EMA ramp-up: the average's half-life is at most this share of the images seen, 0 for a fixed decay [0.05]."),
    steps: int | None = typer.Option(None, help="Generator steps to train to [2000; 20000 on the 2-D toys]."),
    batch_size: int | None = typer.Option(None, help="Batch size per process [64]."),
    optimizer: str | None = typer.Option(None, help="adam or rmsprop [the recipe's; adam]."),
    lr_g: float | None = typer.Option(None, help="Generator learning rate [the recipe's; 2e-4]."),
    lr_d: float | None = typer.Option(None, help="Discriminator learning rate [the recipe's; 2e-4]."),
    beta1: float | None = typer.Option(None, help="Adam's beta1 [the recipe's; 0.5]."),
    beta2: float | None = typer.Option(None, help="Adam's beta2 [the recipe's; 0.999]."),
    lr_decay: str | None = typer.Option(None, help="none, or linear to 0 at the last step [none; linear on the 2-D toys]."),
    device: str | None = typer.Option(None, help="auto [default], cpu or cuda."),
    amp: bool | None = typer.Option(None, "--amp/--no-amp", help="bf16 autocast [on for CUDA]."),
    channels_last: bool | None = typer.Option(None, "--channels-last/--no-channels-last", help="channels_last memory format [on for CUDA]."),
    compile: bool | None = typer.Option(None, "--compile", help="torch.compile G and D."),
    num_workers: int | None = typer.Option(None, help="DataLoader worker processes [0]."),
    threads: int | None = typer.Option(None, help="CPU threads for torch [torch's default]."),
    seed: int | None = typer.Option(None, help="Random seed [0]."),
    name: str | None = typer.Option(None, help="Model name for the card and export [the dataset]."),
    run_dir: Path | None = typer.Option(None, help="Where checkpoints, samples and logs go [runs/<dataset>-<loss>-<time>]."),
    resume: Path | None = typer.Option(None, help="Continue a run from its directory (or a checkpoint file)."),
    log_every: int | None = typer.Option(None, help="Steps between log records [50]."),
    sample_every: int | None = typer.Option(None, help="Steps between sample grids [500]."),
    checkpoint_every: int | None = typer.Option(None, help="Steps between checkpoints [500]."),
    eval_every: int | None = typer.Option(None, help="Steps between quality evaluations, 0 for none [0]; keeps best.pt by the mean FD ratio of the two feature networks."),
    eval_samples: int | None = typer.Option(None, help="Samples per periodic evaluation [500]."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and exit."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Train a generator; writes checkpoints, samples and metrics to the run directory."""
    from training.checkpoint import load_checkpoint
    from training.config import TrainConfig, resolve, resume_config
    from training.loop import train as run_training

    options = locals()  # the comprehension below has its own scope
    given = {f.name: options[f.name] for f in fields(TrainConfig)
             if options.get(f.name) is not None}
    if "run_dir" in given:
        given["run_dir"] = str(given["run_dir"])
    if resume is not None:
        config = resume_config(load_checkpoint(resume)["config"], given)
    else:
        # the command that trains, so that a dry run prints the config.json it would write
        config = TrainConfig(**given, command=_command_line(drop="--dry-run"))
    config = resolve(config)
    if dry_run:
        out.print_json(json.dumps(config.to_dict()))
        return
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    run_dir = run_training(config, resume=resume, progress=progress)
    out.print(f"run directory: {run_dir}")
    out.print(f"report: {shlex.join(['dcgan', 'report', str(run_dir)])}", highlight=False)


@app.command()
@clean_errors
def export(
    source: Path = typer.Argument(..., help="A checkpoint file or run directory (its best.pt, else checkpoint.pt)."),
    out_path: Path | None = typer.Option(None, "--out", "-o", help="The ONNX file to write [<name>.onnx in the run directory]."),
    weights: str = typer.Option("ema", help="ema (what is served) or raw generator weights."),
    fp16: bool = typer.Option(False, "--fp16", help="Float16 weights and arithmetic, for GPUs."),
    name: str | None = typer.Option(None, help="Model name in the card and store [the card's]."),
    register: bool = typer.Option(False, "--register", help="Also add it to the BentoML model store as dcgan-<name>."),
    quality: bool = typer.Option(True, "--evaluate/--no-evaluate", help="Measure quality (dcgan evaluate) into the card first."),
    data_root: Path | None = typer.Option(None, help="Where the training data is now, if it moved [the run's own]."),
    directions: bool = typer.Option(True, "--directions/--no-directions", help="Write its edit directions beside it: SeFa, and class means when it evaluates."),
) -> None:
    """Export a generator to ONNX with its model card, after a parity check; its edit
    directions and the run's encoder (`dcgan train-encoder RUN`) go beside it."""
    from training.checkpoint import load_torch_generator
    from training.export import export_onnx, export_sidecars, register_model

    if out_path is not None and out_path.suffix != ".onnx":
        raise ValueError(f"--out must name a .onnx file, got {out_path}")
    generator, card = load_torch_generator(source, weights=weights)
    if name:
        card.name = name
    if out_path is None:
        out_path = (source if source.is_dir() else source.parent) / f"{card.name}.onnx"
    if quality:
        from training.config import run_data_root
        from training.evaluate import evaluate
        from training.evaluate.truncation import SWEEP

        try:  # the card also records the truncation curve and its suggested value
            root = run_data_root(source, given=None if data_root is None else str(data_root))
            figures = evaluate((generator, card), truncations=SWEEP, root=root)
        except (ValueError, FileNotFoundError) as exc:
            err.print(f"warning: no fresh quality figures ({exc}); the card keeps its earlier ones",
                      highlight=False)
        else:
            card.quality = {k: v for k, v in figures.items() if k not in ("source", "metrics", "seconds")}
            second = (f" (network 2: {figures['fd2_ratio']:.2f})"
                      if figures.get("fd2_ratio") is not None else "")
            out.print(f"quality: FD ratio {figures.get('fd_ratio') or float('nan'):.2f}{second}, "
                      f"classes covered {figures.get('classes_covered', '-')}, "
                      f"class KL {figures.get('class_kl', float('nan')):.3f}", highlight=False)
    path = export_onnx(generator, card, out_path, fp16=fp16)
    out.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {card.weights} weights, step {card.step}); "
              f"max |onnxruntime - torch| = {card.quality['onnx_max_abs_error']:.2e} "
              f"({card.quality['onnx_parity']['checked']})")
    for line in export_sidecars(generator, card, source, path, directions=directions, classes=quality):
        out.print(line, highlight=False)
    if register:
        out.print(f"registered {register_model(path, card)}")


@app.command()
@clean_errors
def recard(
    source: Path = typer.Argument(..., help="An exported ONNX file whose card to measure again."),
    latent_report: Path | None = typer.Option(None, help="A JSON report of bench/bench_latent.py on this file, to record its projection and arithmetic figures."),
    data_root: Path | None = typer.Option(None, help="Where the training data is [the dataset's default]."),
) -> None:
    """Measure an exported generator again (every figure of `dcgan evaluate`, the
    truncation curve) into its card, weights untouched; its encoder and directions are
    pointed at the file's new digest. For files whose run is gone."""
    from training.encoder import generator_from_onnx
    from training.evaluate import evaluate
    from training.evaluate.truncation import SWEEP
    from training.export import rewrite_card

    if source.suffix != ".onnx" or not source.is_file():
        raise ValueError(f"recard takes an exported .onnx file, got {source}")
    generator, card = generator_from_onnx(source)
    figures = evaluate((generator, card), truncations=SWEEP,
                       root=None if data_root is None else str(data_root))
    kept = {key: card.quality[key] for key in ("onnx_max_abs_error", "onnx_parity") if key in card.quality}
    card.quality = {**{k: v for k, v in figures.items() if k not in ("source", "metrics", "seconds")}, **kept}
    if latent_report is not None:
        report = json.loads(latent_report.read_text())
        card.quality["latent_space"] = {key: report[key] for key in (
            "command", "machine", "projection", "arithmetic", "speed") if key in report}
    for line in rewrite_card(source, card):
        out.print(line, highlight=False)
    second = f" (network 2: {figures['fd2_ratio']:.2f})" if figures.get("fd2_ratio") is not None else ""
    out.print(f"quality: FD ratio {figures.get('fd_ratio') or float('nan'):.2f}{second}", highlight=False)


@app.command()
@clean_errors
def sample(
    source: Path = typer.Argument(..., help="A checkpoint, run directory or ONNX file."),
    seeds: str = typer.Option("0-15", help="Seeds, e.g. 0-15 or 1,5,9: one image each."),
    out_path: Path = typer.Option(Path("samples.png"), "--out", "-o", help="PNG grid to write."),
    truncation: float | None = typer.Option(None, help="Redraw latent entries beyond this |z| (e.g. 1.5)."),
    label: int | None = typer.Option(None, help="Class for conditional models [seed % classes]."),
    nrow: int | None = typer.Option(None, help="Images per row (columns) [as square as possible]."),
    weights: str = typer.Option("ema", help="For checkpoints: ema or raw weights."),
) -> None:
    """Write a PNG grid of samples, one per seed (reproducible on any machine; from an
    ONNX file, the bytes of POST /sample with format png)."""
    from models.generation import atomic_write, grid_png, plan_sample
    from models.latent import parse_seeds
    from training.sources import open_generator

    if nrow is not None and nrow < 1:
        raise ValueError(f"--nrow must be at least 1, got {nrow}")
    seed_list = parse_seeds(seeds, max_count=1024)
    generator = open_generator(source, weights=weights)
    latents, labels, _ = plan_sample(generator.card, seeds=seed_list, truncation=truncation,
                                     label=label, format="png")
    atomic_write(out_path, grid_png(generator.generate(latents, labels), nrow))
    out.print(f"wrote {out_path} ({len(seed_list)} samples)")


@app.command()
@clean_errors
def interpolate(
    source: Path = typer.Argument(..., help="A checkpoint, run directory or ONNX file."),
    start: int = typer.Option(0, help="Seed of the first frame."),
    end: int = typer.Option(1, help="Seed of the last frame."),
    steps: int = typer.Option(8, help="Frames, end points included (2 to 256)."),
    method: str = typer.Option("slerp", help="slerp (spherical, default) or lerp."),
    out_path: Path = typer.Option(Path("interpolation.png"), "--out", "-o", help="A .png strip (one row) or an animated .gif."),
    truncation: float | None = typer.Option(None, help="Redraw latent entries of both seeds beyond this |z| (e.g. 1.5)."),
    label: int | None = typer.Option(None, help="Class of every frame, for conditional models [each end's seed % classes, switching halfway]."),
    frame_ms: int = typer.Option(GIF_FRAME_MS, help="GIF frame duration in milliseconds."),
    weights: str = typer.Option("ema", help="For checkpoints: ema or raw weights."),
) -> None:
    """Walk through latent space between two seeds: a PNG strip or an animated GIF (from
    an ONNX file, the bytes of POST /interpolate with format png or gif)."""
    from models.generation import animated_gif, atomic_write, plan_interpolation, strip_png
    from training.sources import open_generator

    if not 2 <= steps <= 256:
        raise ValueError(f"--steps must be from 2 to 256, got {steps}")
    picture = out_path.suffix.lower().lstrip(".")
    if picture not in ("png", "gif"):
        raise ValueError(f"--out must end in .png or .gif, got {out_path}")
    if frame_ms < 1:
        raise ValueError(f"--frame-ms must be at least 1, got {frame_ms}")
    generator = open_generator(source, weights=weights)
    path, labels, _ = plan_interpolation(generator.card, start, end, steps=steps, method=method,
                                         truncation=truncation, label=label, format=picture)
    images = generator.generate(path, labels)
    atomic_write(out_path, animated_gif(images, frame_ms) if picture == "gif" else strip_png(images))
    out.print(f"wrote {out_path} ({steps} frames, {method})")


app.command("evaluate")(clean_errors(evaluate_command))
register_latent_commands(app, clean_errors)


@app.command()
@clean_errors
def report(
    run_dir: Path = typer.Argument(..., help="A run directory (toy or image, finished or not)."),
    out_dir: Path | None = typer.Option(None, "--out", "-o", help="Folder for index.html and its pictures [RUN/report]."),
) -> None:
    """Write a training report: one HTML page with the run's curves, quality over steps,
    samples (timeline and animation), model card and warnings, the pictures beside it."""
    from training.report import make_report

    page = make_report(run_dir, out_dir)
    out.print(f"wrote {page}", highlight=False)


def main() -> None:  # pragma: no cover - the console script calls `app`
    app()


if __name__ == "__main__":
    app()
