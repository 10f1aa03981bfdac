"""The run directory of one training run, and everything the loop writes into it.

Kept apart from training/loop.py so that the loop holds only the schedule and the GAN
steps, and this file the bookkeeping around them: the model card, log records
(metrics.jsonl, TensorBoard, the progress bar), known-failure warnings, sample grids
of fixed latents, periodic evaluation with best.pt, and checkpoints.

Run directory: config.json (resolved options), checkpoint.pt (latest, for --resume),
best.pt (lowest mean FD ratio of the two feature networks, when evaluating), metrics.jsonl, samples/step_XXXXXX.png
(for the 2-D toys GAN Lab's view of the game, training/ganlab.py, and samples/training.gif
at the end), tensorboard/. Under torchrun only rank 0 writes.
"""

from __future__ import annotations

import json
import logging
import math
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from models.card import ModelCard
from training.checkpoint import BEST, LATEST, atomic_write, save_checkpoint
from training.config import TrainConfig, TrainingError
from training.data import dataset_info
from training.evaluate.evaluator import selection_score

log = logging.getLogger("dcgan.train")
NUM_FIXED_SAMPLES = 64


def model_spec(config: TrainConfig) -> dict:
    """The architecture dict stored in the card (the config of models/dcgan.py or mlp.py)."""
    info = dataset_info(config.dataset)
    num_classes = info.num_classes if config.conditional else 0
    if config.arch == "dcgan":
        return dict(nz=config.nz, ngf=config.ngf, ndf=config.ndf, nc=config.channels,
                    image_size=config.image_size, num_classes=num_classes, pack=config.pack,
                    d_norm=config.d_norm)
    points = info.kind == "points"
    out_shape = [2] if points else [config.channels, config.image_size, config.image_size]
    return dict(nz=config.nz, hidden=config.mlp_hidden, layers=3, out_shape=out_shape,
                output="linear" if points else "tanh", pack=config.pack)


def make_card(config: TrainConfig, step: int, quality: dict | None = None) -> ModelCard:
    info = dataset_info(config.dataset)
    dataset = {"name": config.dataset, "split": "train", "description": info.description,
               "num_classes": info.num_classes,
               "normalisation": "pixels scaled to [-1, 1] (x / 127.5 - 1)" if info.kind == "image" else "none"}
    return ModelCard(
        name=config.name, arch=config.arch, model=model_spec(config), dataset=dataset, step=step,
        command=config.command, quality=dict(quality or {}),
        weights="ema" if config.ema_decay > 0 else "raw",
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        versions={"torch": str(torch.__version__)},
    )


def failure_warnings(record: dict, fixed_images: torch.Tensor | None, loss: str) -> list[str]:
    """Known GAN failures, from the numbers just logged (adds `sample_spread` to `record`)."""
    found = []
    if loss in ("minimax", "nonsaturating") and record["d_loss"] < 0.01:
        found.append("discriminator loss near 0: D wins outright and G gets no useful gradient")
    for net in ("g", "d"):
        norm = record[f"grad_norm_{net}"]
        if not math.isfinite(norm) or norm > 1e3:
            found.append(f"{net.upper()} gradient norm exploding ({norm:.3g})")
    if fixed_images is not None and fixed_images.shape[0] > 1:
        spread = float(fixed_images.float().std(dim=0).mean())  # 0 when all samples are equal
        record["sample_spread"] = spread
        if spread < 0.02:
            found.append(f"mode collapse: samples from different latents are near-identical (spread {spread:.4f})")
    return found


def _grad_norm(module: torch.nn.Module) -> float:
    norms = [p.grad.detach().norm(2) for p in module.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


@torch.no_grad()
def _standing_stats(ema: torch.nn.Module, nz: int, num_classes: int, batch_size: int,
                    device: torch.device, batches: int = 16) -> None:
    """Recompute the EMA generator's batch-norm statistics for its own weights.

    The running statistics copied from the raw generator belong to other weights;
    with them the averaged generator is worse than the raw one. A cumulative average
    over fixed latents ("standing statistics") fits them; its own RNG keeps the
    training stream, and so resumes, untouched."""
    norms = [m for m in ema.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    stream = torch.Generator().manual_seed(0)
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches below
    ema.train()
    for _ in range(batches):
        latents = torch.randn(batch_size, nz, generator=stream).to(device)
        labels = (torch.arange(batch_size) % num_classes).to(device) if num_classes else None
        ema(latents, labels)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    ema.eval()


def _progress_bar(total: int, completed: int):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]:.1f} step/s"), TimeElapsedColumn(),
                   TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[status]}"))
    task = bar.add_task("train", total=total, completed=completed, rate=0.0, status="")
    bar.start()
    return bar, task


class Run:
    """The bookkeeping of one run: its directory and model card, the metrics file,
    TensorBoard writer and progress bar, the fixed latents of its sample grids, the
    evaluator and best FD so far, and the step at which the EMA generator's batch-norm
    statistics were last fitted (they are refitted once per step that uses them).

    `gan` is the loop's set of networks and optimisers (training.loop.GAN), read to
    sample, evaluate and checkpoint. Only rank 0 writes; the other ranks only take
    part in `log`'s divergence check, so that every process stops together."""

    def __init__(self, config: TrainConfig, gan, state: dict | None, device: torch.device,
                 rank: int = 0, world: int = 1, progress: bool = True, evaluator=None):
        self.config, self.gan, self.device, self.world = config, gan, device, world
        self.is_main = rank == 0
        self.run_dir = Path(config.run_dir)
        self.card = make_card(config, step=0)
        step, self.best_fd = 0, math.inf
        if state is not None:
            step, self.best_fd = int(state["step"]), float(state.get("best_fd", math.inf))
            self.card.quality = dict(state["card"].get("quality", {}))
        self.ema_stats_step = -1
        # their own generator: the same grid at every step, the training stream untouched
        fixed = torch.Generator().manual_seed(config.seed + 12345)
        self.fixed_latents = torch.randn(NUM_FIXED_SAMPLES, config.nz, generator=fixed).to(device)
        num_classes = self.card.num_classes
        self.fixed_labels = (torch.arange(NUM_FIXED_SAMPLES) % num_classes).to(device) if num_classes else None
        self.writer = self.metrics_file = self.bar = self.evaluator = self.game = None
        if self.is_main:
            # first: an evaluator that cannot be built must not leave a progress bar running
            if config.eval_every:
                self.evaluator = evaluator if evaluator is not None else self._periodic_evaluator()
            if dataset_info(config.dataset).kind == "points":  # GAN Lab's frames of a 2-D run
                from training.ganlab import GameFrames

                self.game = GameFrames(config, self.run_dir, device, resumed_step=step)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(self.run_dir / "config.json",
                         lambda f: f.write(json.dumps(config.to_dict(), indent=2).encode()))
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))
            except ImportError:
                log.info("tensorboard is not installed; metrics go to metrics.jsonl only")
            self.metrics_file = (self.run_dir / "metrics.jsonl").open("a")
            if progress:
                self.bar, self.task = _progress_bar(config.steps, step)
        self.started = self.window_start = time.perf_counter()
        self.window_step = step

    def _periodic_evaluator(self):
        from training.evaluate import PeriodicEvaluator

        config = self.config
        return PeriodicEvaluator(
            config.dataset, config.image_size, config.channels or 0, self.card.num_classes,
            root=config.data_root, num_samples=config.eval_samples, device=config.device)

    def close(self) -> None:
        try:
            if self.game is not None:
                self.game.finish()
        finally:
            if self.bar is not None:
                self.bar.stop()
            if self.writer is not None:
                self.writer.close()
            if self.metrics_file is not None:
                self.metrics_file.close()

    def log(self, step: int, d_loss: torch.Tensor, g_loss: torch.Tensor,
            real_logits: torch.Tensor, fake_logits: torch.Tensor) -> None:
        """One record of the last step's numbers, with a sample grid and an evaluation
        when their turn has come; TrainingError (on every rank) when the losses diverged."""
        config = self.config
        if not (math.isfinite(float(g_loss)) and math.isfinite(float(d_loss))):
            raise TrainingError(
                f"training diverged at step {step} (loss is not finite); the last good "
                f"checkpoint is in {self.run_dir}")
        if not self.is_main:
            return
        now = time.perf_counter()
        rate = (step - self.window_step) / max(now - self.window_start, 1e-9)
        self.window_start, self.window_step = now, step
        bce = config.loss in ("minimax", "nonsaturating")
        record = {
            "step": step, "d_loss": float(d_loss), "g_loss": float(g_loss),
            # mean D(x), D(G(z)): probabilities for the BCE losses, critic values otherwise
            "d_real": float(torch.sigmoid(real_logits.detach().float()).mean() if bce else real_logits.detach().float().mean()),
            "d_fake": float(torch.sigmoid(fake_logits.detach().float()).mean() if bce else fake_logits.detach().float().mean()),
            "grad_norm_g": _grad_norm(self.gan.generator), "grad_norm_d": _grad_norm(self.gan.discriminator),
            "steps_per_s": rate, "images_per_s": rate * config.batch_size * self.world,
            "elapsed_s": now - self.started,
        }
        images = self.save_samples(step) if step % config.sample_every == 0 or step == config.steps else None
        if self.game is not None:
            record.update(self.game.observe(record, self.gan, self.writer, frame=images is not None))
        record["warnings"] = failure_warnings(record, images, config.loss)
        for warning in record["warnings"]:
            log.warning("step %d: %s", step, warning)
        if self.evaluator is not None and (step % config.eval_every == 0 or step == config.steps):
            record["eval"] = self.evaluate(step)
        self.metrics_file.write(json.dumps(record) + "\n")
        self.metrics_file.flush()
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, float):
                    self.writer.add_scalar(key, value, step)
            for key, value in record.get("eval", {}).items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(f"eval/{key}", value, step)
        if self.bar is not None:
            self.bar.update(self.task, completed=step, rate=rate,
                            status=f"D {record['d_loss']:.3f}  G {record['g_loss']:.3f}")

    def save_samples(self, step: int) -> torch.Tensor:
        """The fixed latents through the generator that is served; a PNG grid for images."""
        from torchvision.utils import save_image

        self._refresh_ema(step)
        sampler = self.gan.ema if self.gan.ema is not None else self.gan.generator
        was_training = sampler.training
        sampler.eval()
        with torch.no_grad():
            images = sampler(self.fixed_latents, self.fixed_labels).float().cpu()
        sampler.train(was_training)
        if images.dim() == 4:
            path = self.run_dir / "samples" / f"step_{step:06d}.png"
            path.parent.mkdir(exist_ok=True)
            save_image(images, path, nrow=8, normalize=True, value_range=(-1, 1))
        return images

    def evaluate(self, step: int) -> dict:
        """Quality figures into the card; best.pt when the selection score is the lowest so
        far: the mean FD ratio of the two feature networks (why: `selection_score`), or
        with one feature space its FD ratio. `best_fd` holds that score."""
        self._refresh_ema(step)
        figures = self.evaluator(self.gan.ema if self.gan.ema is not None else self.gan.generator)
        self.gan.generator.train()
        self.card.quality = {**self.card.quality, **figures, "step": step}
        # A run still fading its labels in is not a model to keep: exported, it would be
        # fully conditional (or, with latent classes, assumed class-linear), which it has
        # not learnt to be yet. D is told the labels in both kinds of run.
        complete = float(getattr(self.gan.discriminator, "conditioning", 1.0)) >= 1.0
        if complete and selection_score(figures) < self.best_fd:
            self.best_fd = selection_score(figures)
            self.card.step = step
            save_checkpoint(self.run_dir / BEST, self._state(step))
        return figures

    def checkpoint(self, step: int) -> None:
        """checkpoint.pt: everything a resume needs to go on exactly as if never stopped."""
        if not self.is_main:
            return
        self.card.step = step
        self._refresh_ema(step)
        save_checkpoint(self.run_dir / LATEST, self._state(step))

    def _refresh_ema(self, step: int) -> None:
        if self.gan.ema is not None and self.ema_stats_step != step:
            _standing_stats(self.gan.ema, self.config.nz, self.card.num_classes,
                            self.config.batch_size, self.device)
            self.ema_stats_step = step

    def _state(self, step: int) -> dict:
        gan, device = self.gan, self.device
        return {
            "config": self.config.to_dict(), "card": self.card.to_dict(), "step": step,
            "best_fd": self.best_fd,
            "generator": gan.generator.state_dict(), "discriminator": gan.discriminator.state_dict(),
            "ema": gan.ema.state_dict() if gan.ema is not None else None,
            "opt_g": gan.opt_g.state_dict(), "opt_d": gan.opt_d.state_dict(),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
        }
