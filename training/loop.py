"""train(config) -> run directory: one loop you can read top to bottom.

Per generator step: `d_steps` discriminator steps (Algorithm 1 of Goodfellow et al.
2014), then one generator step, then the EMA update. The loss functions own the GAN
maths; this file schedules, logs, samples, evaluates and checkpoints.

Run directory: config.json (resolved options), checkpoint.pt (latest, for --resume),
best.pt (lowest mean FD ratio, when evaluating), metrics.jsonl, samples/step_XXXXXX.png,
tensorboard/. Several processes (torchrun) train with DistributedDataParallel; the
batch size is per process and only rank 0 writes.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from contextlib import nullcontext
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from models import build_models
from models.card import ModelCard
from training import losses
from training.augment import augment, parse_augment
from training.checkpoint import BEST, LATEST, atomic_write, load_checkpoint, save_checkpoint
from training.config import TrainConfig
from training.data import dataset_info, load_dataset
from training.evaluate.evaluator import selection_score

log = logging.getLogger("dcgan.train")
NUM_FIXED_SAMPLES = 64


class TrainingError(RuntimeError):
    """Training cannot go on (diverged, bad options for this dataset); one-line message."""


def resolve(config: TrainConfig) -> TrainConfig:
    """Fill the fields left to be chosen from the dataset and the hardware."""
    config.validate()
    info = dataset_info(config.dataset)
    arch = config.arch or ("mlp" if info.kind == "points" else "dcgan")
    if config.conditional and not info.labelled:
        raise TrainingError(f"--conditional needs a labelled dataset; {config.dataset} has no labels")
    if arch == "dcgan" and info.kind == "points":
        raise TrainingError(f"{config.dataset} holds 2-D points: use --arch mlp")
    device = config.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda was asked for, but no CUDA device is available")
    cuda = device == "cuda"
    d_norm = config.d_norm or ("layer" if config.loss == "wgan-gp" else "batch")
    run_dir = config.run_dir or str(
        Path("runs") / f"{config.dataset}-{config.loss}-{datetime.now():%Y%m%d-%H%M%S}"
    )
    return replace(
        config, arch=arch, device=device, d_norm=d_norm, run_dir=run_dir,
        nz=config.nz or (100 if arch == "dcgan" else 2),
        channels=config.channels or (info.nc or None),
        amp=cuda if config.amp is None else config.amp,
        channels_last=cuda if config.channels_last is None else config.channels_last,
        name=config.name or config.dataset,
    )


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
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        versions={"torch": str(torch.__version__)},
    )


class EpochBatches(torch.utils.data.Sampler):
    """Batches of indices from one fixed permutation per epoch, rank-sliced, starting
    after `skip` batches: the data position is derived from the step, so resuming is
    exact without saving sampler state, and DataLoader prefetching cannot skew it."""

    def __init__(self, size: int, batch_size: int, seed: int, skip: int = 0,
                 rank: int = 0, world: int = 1):
        self.size, self.batch_size, self.seed, self.skip = size, batch_size, seed, skip
        self.rank, self.world = rank, world
        self.per_epoch = size // (batch_size * world)
        if self.per_epoch < 1:
            raise TrainingError(
                f"the dataset has {size} samples, fewer than one batch of {batch_size * world}"
            )

    def __iter__(self):
        batch = self.skip
        while True:
            epoch, position = divmod(batch, self.per_epoch)
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + epoch))
            start = (position * self.world + self.rank) * self.batch_size
            yield order[start:start + self.batch_size].tolist()
            batch += 1

    def __len__(self) -> int:  # infinite in truth; DataLoader only needs a number
        return 2**62


def _grad_norm(module: torch.nn.Module) -> float:
    norms = [p.grad.detach().norm(2) for p in module.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


@torch.no_grad()
def _update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for ema_param, param in zip(ema.parameters(), model.parameters()):
        ema_param.lerp_(param.detach(), 1.0 - decay)
    for ema_buffer, buffer in zip(ema.buffers(), model.buffers()):
        ema_buffer.copy_(buffer)


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


def _failure_warnings(record: dict, fixed_images: torch.Tensor | None, loss: str) -> list[str]:
    """Known GAN failures, from the numbers just logged."""
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


def train(config: TrainConfig, resume: str | Path | None = None, progress: bool = True,
          evaluator=None) -> Path:
    """Train (or continue `resume`, a checkpoint or run directory) and return the run dir.

    `evaluator(generator) -> {"fd": ..., ...}`, when given, runs every `eval_every` steps.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    state = load_checkpoint(resume) if resume is not None else None
    config = resolve(config)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if config.device == "cuda" else "gloo")
    device = torch.device(config.device, int(os.environ.get("LOCAL_RANK", "0"))) \
        if config.device == "cuda" else torch.device("cpu")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed + rank)
    # --- data and models ------------------------------------------------------
    # the data first: a missing dataset must not leave an empty run directory behind
    dataset = load_dataset(config.dataset, image_size=config.image_size, channels=config.channels,
                           root=config.data_root, download=config.download, split="train",
                           seed=config.seed)
    run_dir = Path(config.run_dir)
    is_main = rank == 0
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(run_dir / "config.json",
                     lambda f: f.write(json.dumps(config.to_dict(), indent=2).encode()))
    card = make_card(config, step=0)
    generator, discriminator = build_models(config.arch, card.model)
    generator.to(device)
    discriminator.to(device)
    if config.channels_last and config.arch == "dcgan":
        generator.to(memory_format=torch.channels_last)
        discriminator.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(generator).eval().requires_grad_(False) if config.ema_decay > 0 else None
    betas = (config.beta1, config.beta2)
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr_g, betas=betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.lr_d, betas=betas)

    step, best_fd = 0, math.inf
    if state is not None:
        generator.load_state_dict(state["generator"])
        discriminator.load_state_dict(state["discriminator"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        # The optimiser state carries the learning rates it was saved with; the config's
        # win, so a run can be resumed at a lower rate to settle it.
        for optimizer, lr in ((opt_g, config.lr_g), (opt_d, config.lr_d)):
            for group in optimizer.param_groups:
                group["lr"] = lr
        step, best_fd = int(state["step"]), float(state.get("best_fd", math.inf))
        if world == 1:
            torch.set_rng_state(state["rng"]["torch"])
            if device.type == "cuda" and state["rng"].get("cuda") is not None:
                torch.cuda.set_rng_state(state["rng"]["cuda"], device)
        else:  # per-rank streams are not saved; reseed deterministically from the step
            torch.manual_seed(config.seed + rank + 1_000_003 * step)
        quality = state["card"].get("quality", {})
        card.quality = dict(quality)

    g_train, d_train = generator, discriminator
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        g_train = DistributedDataParallel(generator, device_ids=ids)
        d_train = DistributedDataParallel(discriminator, device_ids=ids)
    if config.compile:
        g_train, d_train = torch.compile(g_train), torch.compile(d_train)
    d_for_g = discriminator if world > 1 else d_train

    batches = EpochBatches(len(dataset), config.batch_size, config.seed,
                           skip=step * config.d_steps, rank=rank, world=world)
    # The loader's own generator: by default starting its iterator draws from the global
    # stream, just after a resume restored it, and the resumed run would drift.
    loader = iter(torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, num_workers=config.num_workers,
        pin_memory=device.type == "cuda", persistent_workers=config.num_workers > 0,
        generator=torch.Generator().manual_seed(config.seed + rank)))
    conditional = card.num_classes > 0
    fixed = torch.Generator().manual_seed(config.seed + 12345)
    fixed_latents = torch.randn(NUM_FIXED_SAMPLES, config.nz, generator=fixed).to(device)
    fixed_labels = (torch.arange(NUM_FIXED_SAMPLES) % card.num_classes).to(device) if conditional else None
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if config.amp else nullcontext
    memory = torch.channels_last if config.channels_last and config.arch == "dcgan" else torch.contiguous_format

    writer = None
    if is_main:
        try:
            from torch.utils.tensorboard import SummaryWriter
            writer = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:
            log.info("tensorboard is not installed; metrics go to metrics.jsonl only")
    metrics_file = (run_dir / "metrics.jsonl").open("a") if is_main else None

    def next_batch():
        real, labels = next(loader)
        real = real.to(device, non_blocking=True)
        if real.dim() == 4:
            real = real.contiguous(memory_format=memory)
        return real, (labels.to(device, non_blocking=True) if conditional else None)

    augments = parse_augment(config.augment)

    def d_view(images: torch.Tensor, at_step: int) -> torch.Tensor:
        """What D sees of a batch: augmented (same operations for real and fake), then noised."""
        images = augment(images, augments)
        if config.instance_noise <= 0:
            return images
        std = config.instance_noise * max(0.0, 1.0 - at_step / config.steps)
        return images + std * torch.randn_like(images)

    def checkpoint_state() -> dict:
        return {
            "config": config.to_dict(), "card": card.to_dict(), "step": step, "best_fd": best_fd,
            "generator": generator.state_dict(), "discriminator": discriminator.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
        }

    ema_stats_step = -1

    def refresh_ema() -> None:
        """Standing statistics for the EMA generator, once per step it is used at."""
        nonlocal ema_stats_step
        if ema is not None and ema_stats_step != step:
            _standing_stats(ema, config.nz, card.num_classes, config.batch_size, device)
            ema_stats_step = step

    def save_samples() -> torch.Tensor:
        from torchvision.utils import save_image

        refresh_ema()
        sampler = ema if ema is not None else generator
        was_training = sampler.training
        sampler.eval()
        with torch.no_grad():
            images = sampler(fixed_latents, fixed_labels).float().cpu()
        sampler.train(was_training)
        if images.dim() == 4:
            path = run_dir / "samples" / f"step_{step:06d}.png"
            path.parent.mkdir(exist_ok=True)
            save_image(images, path, nrow=8, normalize=True, value_range=(-1, 1))
        return images

    bar = None
    if progress and is_main:
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
        task = bar.add_task("train", total=config.steps, completed=step, rate=0.0, status="")
        bar.start()

    generator.train()
    discriminator.train()
    started, window_start, window_step = time.perf_counter(), time.perf_counter(), step
    try:
        while step < config.steps:
            # --- k discriminator steps ---------------------------------------
            for k in range(config.d_steps):
                real, labels = next_batch()
                latents = torch.randn(real.shape[0], config.nz, device=device)
                with autocast():
                    if k == config.d_steps - 1:
                        fake = g_train(latents, labels)  # kept for the generator step
                    else:
                        with torch.no_grad():
                            fake = generator(latents, labels)
                    real_view = d_view(real, step).requires_grad_(config.r1 > 0)  # R1 needs grad D(x)
                    real_logits = d_train(real_view, labels)
                    fake_logits = d_train(d_view(fake.detach(), step), labels)
                    d_loss = losses.discriminator_loss(config.loss, real_logits, fake_logits,
                                                       config.label_smoothing)
                    if config.r1 > 0:
                        d_loss = d_loss + 0.5 * config.r1 * losses.r1_penalty(real_logits, real_view)
                    if config.loss == "wgan-gp":
                        d_loss = d_loss + config.gp_weight * losses.gradient_penalty(
                            d_train, real, fake, labels)
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
                d_loss = d_loss.detach()
                if config.loss == "wgan":
                    losses.clip_weights(discriminator, config.clip)

            # --- one generator step -------------------------------------------
            # D's weight gradients are not needed here: freezing them skips that work.
            # Under DDP the bare module is used, so no gradient reduction is triggered.
            discriminator.requires_grad_(False)
            with autocast():
                g_logits = d_for_g(d_view(fake, step), labels)
                g_loss = losses.generator_loss(config.loss, g_logits)
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            g_loss = g_loss.detach()
            discriminator.requires_grad_(True)
            step += 1
            if ema is not None:
                # warm-up: early averages would hold the random initial weights too long
                _update_ema(ema, generator, min(config.ema_decay, (1 + step) / (10 + step)))

            # --- bookkeeping (rank 0) ------------------------------------------
            log_now = step % config.log_every == 0 or step == config.steps
            if log_now and not (math.isfinite(float(g_loss)) and math.isfinite(float(d_loss))):
                raise TrainingError(
                    f"training diverged at step {step} (loss is not finite); the last good "
                    f"checkpoint is in {run_dir}")
            if not is_main:
                continue
            if log_now:
                now = time.perf_counter()
                rate = (step - window_step) / max(now - window_start, 1e-9)
                window_start, window_step = now, step
                bce = config.loss in ("minimax", "nonsaturating")
                record = {
                    "step": step, "d_loss": float(d_loss), "g_loss": float(g_loss),
                    # mean D(x), D(G(z)): probabilities for the BCE losses, critic values otherwise
                    "d_real": float(torch.sigmoid(real_logits.detach().float()).mean() if bce else real_logits.detach().float().mean()),
                    "d_fake": float(torch.sigmoid(fake_logits.detach().float()).mean() if bce else fake_logits.detach().float().mean()),
                    "grad_norm_g": _grad_norm(generator), "grad_norm_d": _grad_norm(discriminator),
                    "steps_per_s": rate, "images_per_s": rate * config.batch_size * world,
                    "elapsed_s": now - started,
                }
                images = save_samples() if step % config.sample_every == 0 or step == config.steps else None
                record["warnings"] = _failure_warnings(record, images, config.loss)
                for warning in record["warnings"]:
                    log.warning("step %d: %s", step, warning)
                if evaluator is not None and config.eval_every and (
                        step % config.eval_every == 0 or step == config.steps):
                    refresh_ema()
                    figures = evaluator(ema if ema is not None else generator)
                    generator.train()
                    record["eval"] = figures
                    card.quality = {**card.quality, **figures, "step": step}
                    # best.pt: the lowest mean FD ratio of the two feature networks (why:
                    # training.evaluate.evaluator.selection_score); best_fd holds that score
                    if selection_score(figures) < best_fd:
                        best_fd = selection_score(figures)
                        card.step = step
                        save_checkpoint(run_dir / BEST, checkpoint_state())
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()
                if writer is not None:
                    for key, value in record.items():
                        if isinstance(value, float):
                            writer.add_scalar(key, value, step)
                    for key, value in record.get("eval", {}).items():
                        if isinstance(value, (int, float)):
                            writer.add_scalar(f"eval/{key}", value, step)
                if bar is not None:
                    bar.update(task, completed=step, rate=rate,
                               status=f"D {record['d_loss']:.3f}  G {record['g_loss']:.3f}")
            if step % config.checkpoint_every == 0 or step == config.steps:
                card.step = step
                refresh_ema()
                save_checkpoint(run_dir / LATEST, checkpoint_state())
    finally:
        if bar is not None:
            bar.stop()
        if writer is not None:
            writer.close()
        if metrics_file is not None:
            metrics_file.close()
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    return run_dir
