"""The training configuration: every default lives here, in one dataclass.

CLI options default to None and override these fields; `resolve` then fills the ones
left to the dataset and the hardware, once, before training (`--dry-run` prints its
result). Each run writes the resolved config (`config.json`) next to its checkpoints
and inside every checkpoint.
Defaults follow the DCGAN paper (Adam 2e-4, betas 0.5/0.999, batch 64) and use the
non-saturating generator loss of Goodfellow et al. 2014.

A recipe (`--recipe NAME`, see RECIPES) sets a loss together with the optimiser settings
of the paper that introduced it; `resolve` fills from it every objective and optimiser
field left unset (None), and explicit options win over it. The 2-D toys get a schedule
of their own (TOY_STEPS discriminator steps for each toy, learning rates decaying linearly
to 0), because a 3-layer MLP on points affords tens of thousands of steps in minutes.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from models.card import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE

LOSSES = ("minimax", "nonsaturating", "wgan", "wgan-gp", "hinge")
DEVICES = ("auto", "cpu", "cuda")
OPTIMIZERS = ("adam", "rmsprop")
LR_DECAYS = ("none", "linear")

# Each loss with the settings of its paper. "dcgan" is the default and the base that the
# others change; betas are Adam's (RMSProp has none).
_DCGAN = dict(loss="nonsaturating", optimizer="adam", lr_g=2e-4, lr_d=2e-4, beta1=0.5,
              beta2=0.999, d_steps=1, clip=0.01, gp_weight=10.0)
# Goodfellow et al. 2014 trained maxout nets with SGD and momentum on images and gave no
# settings for 2-D points; these are the settings the PacGAN paper (Lin et al. 2018) ran
# its GAN rows of the ring and the grid with: Adam 1e-4, beta1 0.8, one D step.
_GAN2014 = dict(optimizer="adam", lr_g=1e-4, lr_d=1e-4, beta1=0.8, beta2=0.999, d_steps=1)
RECIPES: dict[str, dict[str, Any]] = {
    # Radford et al. 2016 (DCGAN): Adam 2e-4, betas 0.5/0.999, the non-saturating loss
    "dcgan": _DCGAN,
    # Goodfellow et al. 2014: the saturating minimax game
    "gan": {**_DCGAN, **_GAN2014, "loss": "minimax"},
    # the same paper's non-saturating variant (G maximises log D(G(z)))
    "ns-gan": {**_DCGAN, **_GAN2014, "loss": "nonsaturating"},
    # Arjovsky et al. 2017, Algorithm 1: RMSProp 5e-5, 5 critic steps, clipping at 0.01
    "wgan": {**_DCGAN, "loss": "wgan", "optimizer": "rmsprop", "lr_g": 5e-5, "lr_d": 5e-5,
             "d_steps": 5, "clip": 0.01},
    # Gulrajani et al. 2017, Algorithm 1: Adam 1e-4, betas 0/0.9, 5 critic steps, lambda 10
    "wgan-gp": {**_DCGAN, "loss": "wgan-gp", "lr_g": 1e-4, "lr_d": 1e-4, "beta1": 0.0,
                "beta2": 0.9, "d_steps": 5, "gp_weight": 10.0},
    # Zhang et al. 2019 (SAGAN): hinge loss, Adam betas 0/0.9, lr 1e-4 for G and 4e-4 for D
    "hinge": {**_DCGAN, "loss": "hinge", "lr_g": 1e-4, "lr_d": 4e-4, "beta1": 0.0,
              "beta2": 0.9},
}
# On the 2-D toys, what the papers' reference code for toys uses instead: WGAN-GP's
# gan_toy.py has LAMBDA = 0.1 and Adam betas 0.5/0.9.
TOY_RECIPES: dict[str, dict[str, Any]] = {"wgan-gp": {"gp_weight": 0.1, "beta1": 0.5}}
DEFAULT_RECIPE = "dcgan"
RECIPE_FIELDS = tuple(_DCGAN)
# generator steps when --steps is not given; on the toys, D steps (divided by the D steps per
# G step), as many as the non-saturating loss needs to level off on each (BENCHMARKS.md,
# "ring and grid, run to convergence"): the grid's 25 tight modes take 4 times the ring's 8
IMAGE_STEPS = 2000
TOY_STEPS = {"ring": 20_000, "grid": 80_000}
# Top-k training's per-epoch decay of the share of fakes G learns from (the paper's gamma)
TOP_K_DECAY = 0.99


class TrainingError(RuntimeError):
    """Training cannot go on (diverged, bad options for this dataset); one-line message."""


# Options that shape the networks or what they are trained on: a resumed run keeps them
# (its saved weights fit no other shape).
ARCHITECTURE_OPTIONS = ("dataset", "image_size", "channels", "conditional", "latent_classes", "arch",
                        "nz", "ngf", "ndf", "mlp_hidden", "pack", "d_norm")


@dataclass
class TrainConfig:
    # data
    dataset: str = "mnist5k"
    data_root: str | None = None
    download: bool = False
    image_size: int = 32
    channels: int | None = None  # None: the dataset's own
    conditional: bool = False  # class-conditional G and D (labelled datasets only)
    # An unconditional G whose class is linear in its latent: D is class-conditional, a
    # fake's label is the class models.latent.class_code gives its latent (labelled datasets)
    latent_classes: bool = False
    # Transitional conditioning (Shahbazi et al. 2022): unconditional until this step,
    # then the label terms fade in linearly over `conditioning_steps` steps; 0, 0: from the start
    conditioning_start: int = 0
    conditioning_steps: int = 0
    # model: arch "dcgan" for images, "mlp" for the 2-D toys (chosen from the dataset when None)
    arch: str | None = None
    nz: int | None = None  # latent size; None: 100 for dcgan, 2 for mlp
    ngf: int = 64
    ndf: int = 64
    mlp_hidden: int = 256
    pack: int = 1  # PacGAN: samples the discriminator judges together
    d_norm: str | None = None  # batch, layer, spectral, none; None: batch, or layer for wgan-gp
    # objective; None: from the recipe (RECIPES; the DCGAN paper's without one)
    recipe: str | None = None  # a loss with the settings of its paper; None: "dcgan"
    loss: str | None = None  # minimax, nonsaturating, wgan, wgan-gp, hinge
    d_steps: int | None = None  # k discriminator steps per generator step (Algorithm 1, Goodfellow 2014)
    clip: float | None = None  # weight clipping bound for "wgan"
    gp_weight: float | None = None  # gradient-penalty weight for "wgan-gp"
    r1: float = 0.0  # R1 penalty weight gamma on real inputs, any loss; 0: off
    label_smoothing: float = 0.0  # one-sided: real targets become 1 - this (ganhacks)
    instance_noise: float = 0.0  # std of noise added to D's inputs, decaying linearly to 0
    augment: str = ""  # DiffAugment of D's inputs: "translation,cutout", a subset, or ""
    # Top-k training (Sinha et al. 2020): G learns only from the share of its batch that D
    # scores highest, a share shrinking by TOP_K_DECAY per epoch down to this; 1: off
    top_k: float = 1.0
    # optimisation; None: from the recipe, or (steps, lr_decay) from the dataset's kind
    steps: int | None = None  # generator steps; None: IMAGE_STEPS, or TOY_STEPS[dataset] on the toys
    batch_size: int = 64
    optimizer: str | None = None  # adam or rmsprop
    lr_g: float | None = None
    lr_d: float | None = None
    beta1: float | None = None  # Adam's betas
    beta2: float | None = None
    lr_decay: str | None = None  # none, or linear to 0 at the last step; None: linear on toys
    ema_decay: float = 0.999  # EMA of generator weights, exported and served; 0 disables
    # EMA ramp-up (StyleGAN2-ADA): the average's half-life is at most this share of the
    # images seen so far, so early grids show the training's progress; 0: ema_decay throughout
    ema_rampup: float = 0.05
    # hardware
    device: str = "auto"
    amp: bool | None = None  # bf16 autocast; None: on for CUDA
    channels_last: bool | None = None  # None: on for CUDA
    compile: bool = False
    num_workers: int = 0
    threads: int | None = None  # torch CPU threads; None: torch's default
    # bookkeeping
    seed: int = 0
    run_dir: str | None = None  # None: runs/<dataset>-<loss>-<time>
    name: str = ""  # model name for the card and export; None-ish: the dataset
    log_every: int = 50
    sample_every: int = 500
    checkpoint_every: int = 500
    eval_every: int = 0  # 0: no periodic quality evaluation
    eval_samples: int = 500
    command: str = ""  # the exact command line that started the run
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config fields: {', '.join(unknown)}")
        return cls(**data)

    def validate(self) -> None:
        """Checks that need no data: one clear message naming the field. Fields still
        None (to be resolved) pass."""
        choices = (("recipe", tuple(RECIPES)), ("loss", LOSSES), ("optimizer", OPTIMIZERS),
                   ("lr_decay", LR_DECAYS))
        for name, allowed in choices:
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise ValueError(f"{name.replace('_', '-')} must be one of {', '.join(allowed)}, "
                                 f"got {value!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        size = self.image_size
        if not (MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE) or size & (size - 1):
            raise ValueError(f"image-size must be a power of two from {MIN_IMAGE_SIZE} to "
                             f"{MAX_IMAGE_SIZE}, got {size}")
        positive = ("steps", "batch_size", "d_steps", "pack", "ngf", "ndf", "mlp_hidden")
        for name in positive:
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.batch_size % self.pack:
            raise ValueError(f"batch-size ({self.batch_size}) must be a multiple of pack ({self.pack})")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label-smoothing must be in [0, 0.5), got {self.label_smoothing}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema-decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 <= self.ema_rampup <= 1.0:
            raise ValueError(f"ema-rampup must be in [0, 1], got {self.ema_rampup}")
        if self.r1 < 0:
            raise ValueError(f"r1 must be 0 or more, got {self.r1}")
        for name in ("conditioning_start", "conditioning_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name.replace('_', '-')} must be 0 or more, got {getattr(self, name)}")
            if getattr(self, name) and not (self.conditional or self.latent_classes):
                raise ValueError(f"{name.replace('_', '-')} applies to a run with labels: "
                                 "add --conditional or --latent-classes, or leave it at 0")
        if self.conditional and self.latent_classes:
            raise ValueError("conditional and latent-classes exclude each other: a latent-classes "
                             "generator takes no label, its latent gives the class")
        if self.latent_classes and self.pack > 1:
            raise ValueError("latent-classes cannot be combined with pack > 1 (PacGAN): "
                             "D's label projection judges one sample at a time")
        if self.d_norm is not None:
            from models.dcgan import D_NORMS

            if self.d_norm not in D_NORMS:
                raise ValueError(f"d-norm must be one of {', '.join(D_NORMS)}, got {self.d_norm!r}")
        if self.instance_noise < 0:
            raise ValueError(f"instance-noise must be 0 or more, got {self.instance_noise}")
        if not 0.0 < self.top_k <= 1.0:
            raise ValueError(f"top-k must be in (0, 1], got {self.top_k}")
        from training.augment import parse_augment

        parse_augment(self.augment)
        if self.channels not in (None, 1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        for name in ("lr_g", "lr_d", "clip", "gp_weight"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"{name.replace('_', '-')} must be above 0, got {getattr(self, name)}")
        for name in ("beta1", "beta2"):
            if getattr(self, name) is not None and not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")


def conditioning_at(config: TrainConfig, step: int) -> float:
    """The strength of the label terms for the step after `step` done (models.dcgan's
    `conditioning`): 0 before `conditioning_start`, then rising linearly to 1 over
    `conditioning_steps`; 1 throughout for a run that conditions from the start."""
    if step < config.conditioning_start:
        return 0.0
    if config.conditioning_steps <= 0:
        return 1.0
    return min(1.0, (step - config.conditioning_start) / config.conditioning_steps)


def top_k_share(config: TrainConfig, epoch: int) -> float:
    """The share of its batch that the generator learns from in `epoch` (from 0): top-k
    training's max(gamma ** epoch, nu) of Sinha et al. 2020, nu being `top_k`; 1 when off."""
    if config.top_k >= 1.0:
        return 1.0
    return max(TOP_K_DECAY ** epoch, config.top_k)


def resolve(config: TrainConfig) -> TrainConfig:
    """Fill the fields left to be chosen from the recipe, the dataset and the hardware."""
    import torch

    from training.data import dataset_info

    config.validate()
    info = dataset_info(config.dataset)
    config = with_recipe(config, toy=info.kind == "points")
    arch = config.arch or ("mlp" if info.kind == "points" else "dcgan")
    for option in ("conditional", "latent_classes"):
        if getattr(config, option) and not info.labelled:
            raise TrainingError(f"--{option.replace('_', '-')} needs a labelled dataset; "
                                f"{config.dataset} has no labels")
    if config.latent_classes and arch != "dcgan":
        raise TrainingError("--latent-classes needs --arch dcgan (a class-conditional discriminator)")
    if arch == "dcgan" and info.kind == "points":
        raise TrainingError(f"{config.dataset} holds 2-D points: use --arch mlp")
    device = config.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda was asked for, but no CUDA device is available")
    cuda = device == "cuda"
    d_norm = config.d_norm or ("layer" if config.loss == "wgan-gp" else "batch")
    # absolute: evaluate, export and --resume read the data from here, from any directory
    data_root = os.path.abspath(os.path.expanduser(config.data_root)) if config.data_root else None
    run_dir = config.run_dir or str(
        Path("runs") / f"{config.dataset}-{config.loss}-{datetime.now():%Y%m%d-%H%M%S}"
    )
    return replace(
        config, arch=arch, device=device, d_norm=d_norm, run_dir=run_dir, data_root=data_root,
        nz=config.nz or (100 if arch == "dcgan" else 2),
        channels=config.channels or (info.nc or None),
        amp=cuda if config.amp is None else config.amp,
        channels_last=cuda if config.channels_last is None else config.channels_last,
        name=config.name or config.dataset,
    )


def with_recipe(config: TrainConfig, toy: bool) -> TrainConfig:
    """`config` with its recipe's settings in the objective and optimiser fields left None,
    and the schedule of its kind of data (`toy`: the 2-D points) where none was given."""
    recipe = config.recipe or DEFAULT_RECIPE
    settings = {**RECIPES[recipe], **(TOY_RECIPES.get(recipe, {}) if toy else {})}
    filled = {name: value for name, value in settings.items() if getattr(config, name) is None}
    steps = config.steps or IMAGE_STEPS
    if toy and not config.steps:  # the D updates are budgeted: 5 critic steps per G step, 1/5
        steps = TOY_STEPS[config.dataset] // (config.d_steps or filled["d_steps"])
    return replace(config, recipe=recipe, **filled, steps=steps,
                   lr_decay=config.lr_decay or ("linear" if toy else "none"))


def unresolved(config: TrainConfig) -> list[str]:
    """The fields `resolve` would still fill (empty for a resolved config)."""
    left = [name for name in ("arch", "nz", "d_norm", "run_dir", "amp", "channels_last",
                              "recipe", "steps", "lr_decay", *RECIPE_FIELDS)
            if getattr(config, name) is None]
    return left + (["device"] if config.device == "auto" else []) + ([] if config.name else ["name"])


def resume_config(saved: dict[str, Any], given: dict[str, Any]) -> TrainConfig:
    """The saved config of a run with the options given on the command line on top;
    an architecture option that differs from the run's is refused in one line."""
    # Runs saved before recipes existed trained with Adam at constant learning rates.
    saved = {"optimizer": "adam", "lr_decay": "none", **saved}
    changed = [f"--{name.replace('_', '-')} {given[name]} (the run has {saved.get(name)})"
               for name in (*ARCHITECTURE_OPTIONS, "recipe")
               if name in given and given[name] != saved.get(name)]
    if changed:
        raise TrainingError("a resumed run keeps its architecture, data and recipe; leave out "
                            + ", ".join(changed))
    if "data_root" not in given and (gone := missing_data(saved)):
        raise TrainingError(gone)
    return TrainConfig.from_dict({**saved, **given})


# --- what a run was trained on, for the commands that come after it -------------------------

# Every option that says which data a run saw; config.json and each checkpoint hold them.
DATA_OPTIONS = ("dataset", "data_root", "download", "image_size", "channels")


def run_config(source: str | os.PathLike) -> dict[str, Any] | None:
    """The resolved config a run was trained with: a run directory's config.json, or the
    config inside a checkpoint file; None for anything else (an ONNX file)."""
    path = Path(source)
    if path.is_dir() and (path / "config.json").is_file():
        try:
            return json.loads((path / "config.json").read_text())
        except (OSError, ValueError):
            pass  # a damaged config.json: the checkpoint holds the same
    if path.suffix == ".onnx" or not path.exists():
        return None
    from training.checkpoint import find_checkpoint, load_checkpoint

    return dict(load_checkpoint(find_checkpoint(path, prefer_best=True))["config"])


def missing_data(config: dict[str, Any]) -> str | None:
    """One line when the data folder a run was trained on is gone, else None."""
    root = config.get("data_root")
    if root and not os.path.exists(root) and not config.get("download"):
        return (f"the run was trained on {config.get('dataset')} images in {root}, which no "
                "longer exists (moved or deleted?): pass --data-root DIR to say where they are now")
    return None


def run_data_root(source: str | os.PathLike, dataset: str | None = None,
                  given: str | None = None) -> str | None:
    """The data folder to measure or continue `source` with: `given` when given; else,
    when `dataset` is the run's own (or None), the folder the run was trained on, checked
    to still exist (FileNotFoundError naming it, in one line, when it does not). What
    `dcgan evaluate`, `export` and `report` use, so that only `train` needs --data-root."""
    if given is not None:
        return given
    config = run_config(source)
    if config is None or (dataset is not None and dataset != config.get("dataset")):
        return None
    if gone := missing_data(config):
        raise FileNotFoundError(gone)
    return config.get("data_root")
