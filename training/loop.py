"""train(config) -> run directory: one loop you can read top to bottom.

Per generator step: `d_steps` discriminator steps (Algorithm 1 of Goodfellow et al.
2014), then one generator step, then the EMA update, then the bookkeeping. The loss
functions own the GAN maths; this file sets up the networks and the data and
schedules the steps. The run directory and all that goes into it (config.json, logs,
sample grids, evaluation and best.pt, checkpoints) belong to `Run` in training/run.py.

`train` takes a config resolved once, by `training.config.resolve`: what a run writes
to config.json is what `dcgan train --dry-run` prints. Several processes (torchrun)
train with DistributedDataParallel; the batch size is per process and only rank 0
writes.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from models import build_models
from models.dcgan import set_conditioning
from models.latent import class_code
from training import losses
from training.augment import augment, parse_augment
from training.checkpoint import load_checkpoint
from training.config import TrainConfig, TrainingError, conditioning_at, top_k_share, unresolved
from training.data import PointsDataset, dataset_info, load_dataset
from training.run import Run, model_spec

log = logging.getLogger("dcgan.train")
DIST_TIMEOUT = timedelta(hours=1)


def needs_double_backward(config: TrainConfig) -> bool:
    """R1 and WGAN-GP penalise the gradient of D's output w.r.t. its input."""
    return config.r1 > 0 or config.loss == "wgan-gp"


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
                f"the training data has {size} samples, fewer than one batch of "
                f"{batch_size * world}: add data or pass a smaller --batch-size")

    def index_batches(self, device: torch.device | None = None):
        """The batches as index tensors (on `device`); one permutation drawn per epoch."""
        batch, order, order_epoch = self.skip, None, -1
        while True:
            epoch, position = divmod(batch, self.per_epoch)
            if epoch != order_epoch:
                generator = torch.Generator().manual_seed(self.seed + epoch)
                order, order_epoch = torch.randperm(self.size, generator=generator).to(device), epoch
            start = (position * self.world + self.rank) * self.batch_size
            yield order[start:start + self.batch_size]
            batch += 1

    def __iter__(self):
        return (rows.tolist() for rows in self.index_batches())

    def __len__(self) -> int:  # infinite in truth; DataLoader only needs a number
        return 2**62


@dataclass
class GAN:
    """What the training steps work on: both networks, the average of G's weights, the
    optimisers, and the modules the steps call (DDP-wrapped and/or compiled)."""

    generator: torch.nn.Module
    discriminator: torch.nn.Module
    ema: torch.nn.Module | None  # what is exported and served; None when ema_decay is 0
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    g_train: torch.nn.Module
    d_train: torch.nn.Module
    d_for_g: torch.nn.Module  # the bare D under DDP: the generator step must not reduce D's gradients
    num_classes: int  # classes D is told (0: unconditional D)
    augments: tuple[str, ...]  # DiffAugment of D's inputs, the same for real and fake
    code: torch.Tensor | None = None  # latent classes: (classes, nz) rows; a fake's class is
    # argmax(code @ z) and G takes no label

    def fake_labels(self, latents: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
        """The classes D is told the fakes of `latents` are: their code's with latent
        classes, else the labels G is given (the real batch's, or None)."""
        if self.code is None:
            return labels
        return (latents @ self.code.T).argmax(dim=1)


def _processes(config: TrainConfig) -> tuple[int, int, torch.device]:
    """This process's rank, the number of processes (torchrun sets both), its device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = torch.device("cpu")
    if config.device == "cuda":
        # Bound before the process group exists, so that each rank's NCCL communicator,
        # pinned memory and evaluator live on its own GPU, not all on GPU 0.
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        # Rank 0 evaluates alone every eval_every steps while the others wait in the
        # next collective: allow that longer than the default 10 minutes.
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=DIST_TIMEOUT,
                                device_id=device if device.type == "cuda" else None)
    return rank, world, device


def _build(config: TrainConfig, device: torch.device, state: dict | None,
           rank: int, world: int) -> GAN:
    """G, D, the EMA generator and the optimisers; with `state`, as they were saved,
    together with the random stream."""
    spec = model_spec(config)
    generator, discriminator = build_models(config.arch, spec)
    code = None
    if config.latent_classes:  # G as specified (unconditional), D told the classes
        classes = dataset_info(config.dataset).num_classes
        discriminator = build_models(config.arch, {**spec, "num_classes": classes})[1]
        code = torch.from_numpy(class_code(config.nz, classes)).to(device)
    generator.to(device)
    discriminator.to(device)
    if config.channels_last and config.arch == "dcgan":
        generator.to(memory_format=torch.channels_last)
        discriminator.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(generator).eval().requires_grad_(False) if config.ema_decay > 0 else None
    opt_g = _optimizer(config, generator, config.lr_g)
    opt_d = _optimizer(config, discriminator, config.lr_d)
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
        # after the initialisation above, which draws from the stream being restored
        if world == 1:
            torch.set_rng_state(state["rng"]["torch"])
            if device.type == "cuda" and state["rng"].get("cuda") is not None:
                torch.cuda.set_rng_state(state["rng"]["cuda"], device)
        else:  # per-rank streams are not saved; reseed deterministically from the step
            torch.manual_seed(config.seed + rank + 1_000_003 * int(state["step"]))
    g_train, d_train = generator, discriminator
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        g_train = DistributedDataParallel(generator, device_ids=ids)
        d_train = DistributedDataParallel(discriminator, device_ids=ids)
    if config.compile:
        g_train = torch.compile(g_train)
        if needs_double_backward(config):
            # torch.compile's autograd cannot differentiate a gradient (R1, WGAN-GP take
            # one of D's output w.r.t. its input): D stays eager, G is compiled.
            log.info("--compile: D stays eager (%s needs a double backward); G is compiled",
                     "R1" if config.r1 > 0 else "the gradient penalty")
        else:
            d_train = torch.compile(d_train)
    generator.train()
    discriminator.train()
    return GAN(generator, discriminator, ema, opt_g, opt_d, g_train, d_train,
               d_for_g=discriminator if world > 1 else d_train,
               num_classes=int(getattr(discriminator.config, "num_classes", 0)),
               augments=parse_augment(config.augment), code=code)


def _optimizer(config: TrainConfig, module: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """The recipe's optimiser. The MLP's tensors are small enough that Adam's per-tensor
    Python loop costs more than its arithmetic: the fused kernel does one pass."""
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(module.parameters(), lr=lr)
    return torch.optim.Adam(module.parameters(), lr=lr, betas=(config.beta1, config.beta2),
                            fused=config.arch == "mlp" or None)


def _decay_learning_rates(config: TrainConfig, gan: GAN, step: int) -> None:
    """Rates for the step after `step` done, decaying linearly to 0 after the last one;
    from the step alone, so a resume needs no scheduler state."""
    scale = 1.0 - step / config.steps
    for optimizer, lr in ((gan.opt_g, config.lr_g), (gan.opt_d, config.lr_d)):
        for group in optimizer.param_groups:
            group["lr"] = lr * scale


def _real_batches(dataset, config: TrainConfig, device: torch.device, step: int, rank: int,
                  world: int, num_classes: int):
    """An endless stream of (real, labels) on `device`, from the data position of `step`."""
    batches = EpochBatches(len(dataset), config.batch_size, config.seed,
                           skip=step * config.d_steps, rank=rank, world=world)
    if isinstance(dataset, PointsDataset):
        # Points in memory: index the tensor. A DataLoader would build each batch from 64
        # single-point items and cost more than a step of the MLP.
        points, labels = dataset.points.to(device), dataset.labels.to(device)
        return ((points[rows], labels[rows] if num_classes else None)
                for rows in batches.index_batches(device))
    # The loader's own generator: by default starting its iterator draws from the global
    # stream, just after a resume restored it, and the resumed run would drift.
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, num_workers=config.num_workers,
        pin_memory=device.type == "cuda", persistent_workers=config.num_workers > 0,
        generator=torch.Generator().manual_seed(config.seed + rank))
    memory = torch.channels_last if config.channels_last and config.arch == "dcgan" else torch.contiguous_format

    def to_device(real: torch.Tensor, labels: torch.Tensor):
        real = real.to(device, non_blocking=True)
        if real.dim() == 4:
            real = real.contiguous(memory_format=memory)
        return real, (labels.to(device, non_blocking=True) if num_classes else None)

    return (to_device(real, labels) for real, labels in loader)  # starts the loader now


def _autocast(config: TrainConfig, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16) if config.amp else nullcontext()


def _d_view(images: torch.Tensor, config: TrainConfig, gan: GAN, step: int) -> torch.Tensor:
    """What D sees of a batch: augmented (same operations for real and fake), then noised."""
    images = augment(images, gan.augments)
    if config.instance_noise <= 0:
        return images
    std = config.instance_noise * max(0.0, 1.0 - step / config.steps)
    return images + std * torch.randn_like(images)


def _discriminator_step(config: TrainConfig, gan: GAN, real: torch.Tensor, latents: torch.Tensor,
                        labels: torch.Tensor | None, step: int, keep_graph: bool):
    """One update of D on real and G(latents); returns the fakes (with their graph when
    `keep_graph`, for the generator step), the classes D was told they are, D's loss and
    its (real, fake) logits."""
    g_labels = None if gan.code is not None else labels
    fake_labels = gan.fake_labels(latents, labels)
    with _autocast(config, real.device):
        if keep_graph:
            fake = gan.g_train(latents, g_labels)
        else:
            with torch.no_grad():
                fake = gan.generator(latents, g_labels)
        real_view = _d_view(real, config, gan, step).requires_grad_(config.r1 > 0)  # R1 needs grad D(x)
        real_logits = gan.d_train(real_view, labels)
        fake_logits = gan.d_train(_d_view(fake.detach(), config, gan, step), fake_labels)
        d_loss = losses.discriminator_loss(config.loss, real_logits, fake_logits, config.label_smoothing)
        if config.r1 > 0:
            d_loss = d_loss + 0.5 * config.r1 * losses.r1_penalty(real_logits, real_view)
        if config.loss == "wgan-gp":
            d_loss = d_loss + config.gp_weight * losses.gradient_penalty(gan.d_train, real, fake, labels)
    gan.opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    gan.opt_d.step()
    if config.loss == "wgan":
        losses.clip_weights(gan.discriminator, config.clip)
    return fake, fake_labels, d_loss.detach(), (real_logits, fake_logits)


def _generator_step(config: TrainConfig, gan: GAN, fake: torch.Tensor, labels: torch.Tensor | None,
                    step: int, share: float = 1.0) -> torch.Tensor:
    """One update of G through D's view of `fake`, from the `share` of it that D scores
    highest (top-k training); returns G's loss."""
    # D's weight gradients are not needed here: freezing them skips that work.
    # Under DDP the bare module is used, so no gradient reduction is triggered.
    gan.discriminator.requires_grad_(False)
    with _autocast(config, fake.device):
        fake_logits = gan.d_for_g(_d_view(fake, config, gan, step), labels)
        if share < 1.0:  # one logit per judged input (a pack with PacGAN)
            fake_logits = fake_logits.reshape(-1)
            fake_logits = fake_logits.topk(max(1, round(share * fake_logits.numel()))).values
        g_loss = losses.generator_loss(config.loss, fake_logits)
    gan.opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    gan.opt_g.step()
    gan.discriminator.requires_grad_(True)
    return g_loss.detach()


def ema_decay_at(config: TrainConfig, step: int, world: int = 1) -> float:
    """The EMA decay after `step` generator steps, as StyleGAN2-ADA ramps it up: the
    average's half-life, in images, is that of `ema_decay` at this batch size, but at
    most `ema_rampup` times the images seen so far; then per step 0.5 ** (batch / half-life).
    Early on the average follows the weights closely (at step 120, batch 64: a half-life
    of 6 steps, decay 0.89), and it reaches `ema_decay` once the run has seen half-life /
    `ema_rampup` images (0.999, batch 64: 13,900 steps). A function of the step alone,
    so a resumed run averages exactly as an uninterrupted one."""
    if config.ema_rampup <= 0:
        return config.ema_decay
    batch = config.batch_size * world
    half_life = batch * math.log(0.5) / math.log(config.ema_decay)  # images
    half_life = min(half_life, step * batch * config.ema_rampup)
    return 0.5 ** (batch / max(half_life, 1e-8))


@torch.no_grad()
def _update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for ema_param, param in zip(ema.parameters(), model.parameters()):
        ema_param.lerp_(param.detach(), 1.0 - decay)
    for ema_buffer, buffer in zip(ema.buffers(), model.buffers()):
        ema_buffer.copy_(buffer)


def train(config: TrainConfig, resume: str | Path | None = None, progress: bool = True,
          evaluator=None) -> Path:
    """Train with a resolved config (`training.config.resolve`), or continue `resume` (a
    checkpoint or run directory), and return the run directory.

    `evaluator(generator) -> {"fd": ..., ...}` runs every `eval_every` steps; by default
    the periodic evaluator of the run's dataset.
    """
    if left := unresolved(config):
        raise ValueError("train takes a resolved config (training.config.resolve); "
                         f"still to be chosen: {', '.join(left)}")
    # Set-up: processes, data, networks, then the run directory.
    state = load_checkpoint(resume) if resume is not None else None
    rank, world, device = _processes(config)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed + rank)
    # the data first: a missing dataset must not leave an empty run directory behind
    dataset = load_dataset(config.dataset, image_size=config.image_size, channels=config.channels,
                           root=config.data_root, download=config.download, split="train",
                           seed=config.seed)
    gan = _build(config, device, state, rank, world)
    step = int(state["step"]) if state is not None else 0
    real_batches = _real_batches(dataset, config, device, step, rank, world, gan.num_classes)
    batches_per_epoch = max(1, len(dataset) // (config.batch_size * world))
    run = Run(config, gan, state, device, rank, world, progress, evaluator)
    try:
        while step < config.steps:
            if config.lr_decay == "linear":
                _decay_learning_rates(config, gan, step)
            if gan.num_classes and (config.conditioning_start or config.conditioning_steps):
                strength = conditioning_at(config, step)  # the EMA copies G's buffers
                set_conditioning(gan.generator, strength)
                set_conditioning(gan.discriminator, strength)
            # Discriminator: k steps, each on its own real batch and fresh latents (Algorithm 1).
            for k in range(config.d_steps):
                real, labels = next(real_batches)
                latents = torch.randn(real.shape[0], config.nz, device=device)
                fake, fake_labels, d_loss, logits = _discriminator_step(
                    config, gan, real, latents, labels, step, keep_graph=k == config.d_steps - 1)
            # Generator: one step on the last fakes (their graph is kept: no second forward
            # pass of G), with the labels they were made for.
            share = top_k_share(config, step * config.d_steps // batches_per_epoch)
            g_loss = _generator_step(config, gan, fake, fake_labels, step, share)
            step += 1
            # EMA of G's weights, its horizon ramped up with the images seen
            if gan.ema is not None:
                _update_ema(gan.ema, gan.generator, ema_decay_at(config, step, world))
            # Bookkeeping: samples and evaluation ride on the log steps.
            if step % config.log_every == 0 or step == config.steps:
                run.log(step, d_loss, g_loss, *logits)
            if step % config.checkpoint_every == 0 or step == config.steps:
                run.checkpoint(step)
    finally:
        run.close()
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    return run.run_dir
