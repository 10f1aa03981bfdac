"""Checkpoints: atomic saves, safe loads, and everything needed to resume exactly.

A checkpoint is a plain dict of tensors and primitives (no pickled code), loaded with
`torch.load(weights_only=True)`. It holds G, D, the EMA generator, both optimisers,
the step, the data position, the RNG states, the resolved config and the model card.

In a run directory, `checkpoint.pt` is the latest state (what `--resume` reads) and
`best.pt`, when periodic evaluation ran, the one with the lowest mean FD ratio of the
two feature networks (`training.evaluate.selection_score`). Files are written with the
generation layer's `atomic_write` (re-exported here for the loop and export).
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from models import build_models
from models.card import CardError, ModelCard
from models.generation.files import atomic_write  # also what export and the loop write with

FORMAT = "dcgan-service-checkpoint"
VERSION = 1
LATEST, BEST = "checkpoint.pt", "best.pt"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, foreign or unsafe; the message is one line."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    state = {"format": FORMAT, "version": VERSION, **state}
    return atomic_write(path, lambda handle: torch.save(state, handle))


def find_checkpoint(path: str | Path, prefer_best: bool = False) -> Path:
    """A checkpoint file, or the one to use inside a run directory."""
    path = Path(path)
    if path.is_dir():
        names = (BEST, LATEST) if prefer_best else (LATEST,)
        for name in names:
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"{path} is a directory without {LATEST}: not a run directory")
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint; never unpickles code."""
    path = find_checkpoint(path)
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise CheckpointError(f"{path} is corrupt or not a checkpoint (not a torch archive)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported operand" in str(exc):  # an unknown opcode: damaged bytes, not code
            raise CheckpointError(f"{path} is corrupt or not a checkpoint (damaged data)") from None
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        what = f"it would import {found.group(1)}" if found else "it holds more than plain weights"
        raise CheckpointError(f"{path} was refused: {what}, and checkpoints are loaded without running code") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is corrupt or not a checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a dcgan-service checkpoint (foreign file)")
    if int(state.get("version", 0)) > VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {state['version']}; this program reads up to {VERSION}"
        )
    for key in ("config", "card", "generator", "step"):
        if key not in state:
            raise CheckpointError(f"{path} is incomplete: it has no {key!r}")
    return state


def load_torch_generator(
    path: str | Path, weights: str = "ema", device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, ModelCard]:
    """The generator of a checkpoint (or run directory: best, else latest), in eval mode.

    `weights="ema"` takes the moving average when the run kept one, else the raw weights;
    the card's `weights` field says which was taken."""
    if weights not in ("ema", "raw"):
        raise CheckpointError(f"weights must be ema or raw, got {weights!r}")
    state = load_checkpoint(find_checkpoint(path, prefer_best=True))
    try:
        card = ModelCard.from_dict(state["card"])
        generator, _ = build_models(card.arch, card.model)
    except (CardError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} has an unusable model card: {exc}") from None
    use_ema = weights == "ema" and state.get("ema") is not None
    try:
        generator.load_state_dict(state["ema"] if use_ema else state["generator"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match the card's architecture ({str(exc)[:160]})") from None
    card.weights = "ema" if use_ema else "raw"
    card.step = int(state["step"])
    return generator.to(device).eval(), card
