"""The training configuration: every default lives here, in one dataclass.

CLI options default to None and override these fields; `resolve` then fills the ones
left to the dataset and the hardware, once, before training (`--dry-run` prints its
result). Each run writes the resolved config (`config.json`) next to its checkpoints
and inside every checkpoint.
Defaults follow the DCGAN paper (Adam 2e-4, betas 0.5/0.999, batch 64) and use the
non-saturating generator loss of Goodfellow et al. 2014.
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


class TrainingError(RuntimeError):
    """Training cannot go on (diverged, bad options for this dataset); one-line message."""


# Options that shape the networks or what they are trained on: a resumed run keeps them
# (its saved weights fit no other shape).
ARCHITECTURE_OPTIONS = ("dataset", "image_size", "channels", "conditional", "arch", "nz", "ngf",
                        "ndf", "mlp_hidden", "pack", "d_norm")


@dataclass
class TrainConfig:
    # data
    dataset: str = "mnist5k"
    data_root: str | None = None
    download: bool = False
    image_size: int = 32
    channels: int | None = None  # None: the dataset's own
    conditional: bool = False  # class-conditional G and D (labelled datasets only)
    # model: arch "dcgan" for images, "mlp" for the 2-D toys (chosen from the dataset when None)
    arch: str | None = None
    nz: int | None = None  # latent size; None: 100 for dcgan, 2 for mlp
    ngf: int = 64
    ndf: int = 64
    mlp_hidden: int = 256
    pack: int = 1  # PacGAN: samples the discriminator judges together
    d_norm: str | None = None  # batch, layer, spectral, none; None: batch, or layer for wgan-gp
    # objective
    loss: str = "nonsaturating"
    d_steps: int = 1  # k discriminator steps per generator step (Algorithm 1, Goodfellow 2014)
    clip: float = 0.01  # weight clipping bound for "wgan"
    gp_weight: float = 10.0  # gradient-penalty weight for "wgan-gp"
    r1: float = 0.0  # R1 penalty weight gamma on real inputs, any loss; 0: off
    label_smoothing: float = 0.0  # one-sided: real targets become 1 - this (ganhacks)
    instance_noise: float = 0.0  # std of noise added to D's inputs, decaying linearly to 0
    augment: str = ""  # DiffAugment of D's inputs: "translation,cutout", a subset, or ""
    # optimisation
    steps: int = 2000  # generator steps
    batch_size: int = 64
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
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
        """Checks that need no data: one clear message naming the field."""
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        size = self.image_size
        if not (MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE) or size & (size - 1):
            raise ValueError(f"image-size must be a power of two from {MIN_IMAGE_SIZE} to "
                             f"{MAX_IMAGE_SIZE}, got {size}")
        positive = ("steps", "batch_size", "d_steps", "pack", "ngf", "ndf", "mlp_hidden")
        for name in positive:
            if getattr(self, name) < 1:
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
        if self.d_norm is not None:
            from models.dcgan import D_NORMS

            if self.d_norm not in D_NORMS:
                raise ValueError(f"d-norm must be one of {', '.join(D_NORMS)}, got {self.d_norm!r}")
        if self.instance_noise < 0:
            raise ValueError(f"instance-noise must be 0 or more, got {self.instance_noise}")
        from training.augment import parse_augment

        parse_augment(self.augment)
        if self.channels not in (None, 1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        for name in ("lr_g", "lr_d"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name.replace('_', '-')} must be above 0, got {getattr(self, name)}")


def resolve(config: TrainConfig) -> TrainConfig:
    """Fill the fields left to be chosen from the dataset and the hardware."""
    import torch

    from training.data import dataset_info

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


def unresolved(config: TrainConfig) -> list[str]:
    """The fields `resolve` would still fill (empty for a resolved config)."""
    left = [name for name in ("arch", "nz", "d_norm", "run_dir", "amp", "channels_last")
            if getattr(config, name) is None]
    return left + (["device"] if config.device == "auto" else []) + ([] if config.name else ["name"])


def resume_config(saved: dict[str, Any], given: dict[str, Any]) -> TrainConfig:
    """The saved config of a run with the options given on the command line on top;
    an architecture option that differs from the run's is refused in one line."""
    changed = [f"--{name.replace('_', '-')} {given[name]} (the run has {saved.get(name)})"
               for name in ARCHITECTURE_OPTIONS
               if name in given and given[name] != saved.get(name)]
    if changed:
        raise TrainingError("a resumed run keeps its architecture and data; leave out "
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
