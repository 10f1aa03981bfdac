"""The generator under evaluation: what it offers (`Source`), the one way to open one,
and its samples from fixed seeds.

A checkpoint, run directory or ONNX file is opened by the training side's opener (the
one import of it below); a torch generator in memory comes as a (module, card) pair.
Samples come from the seeds 0..N-1 (labels seed % K for conditional models), so two
evaluations of one model agree, and so do a checkpoint and its ONNX export.
"""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np
import torch
from torch import nn

from models.card import ModelCard
from training.evaluate.features import BATCH
from training.sources import open_generator


class Source(Protocol):
    """What a generator being evaluated offers: its card, and samples of latents."""

    card: ModelCard

    def generate(self, latents: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """(N, nz) float32 latents and (N,) int64 labels, None when unconditional ->
        (N, *card.output_shape) float32 samples."""


class ModuleSource:
    """A torch generator in memory, run in eval mode without gradients; its train/eval
    mode is restored after each call (the training loop evaluates mid-run)."""

    def __init__(self, generator: nn.Module, card: ModelCard):
        self.generator, self.card = generator, card
        self.device = next(generator.parameters()).device

    @torch.no_grad()
    def generate(self, latents: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        was_training = self.generator.training
        self.generator.eval()
        try:
            label_tensor = None if labels is None else torch.from_numpy(labels).to(self.device)
            samples = self.generator(torch.from_numpy(latents).to(self.device), label_tensor)
            return samples.float().cpu().numpy()
        finally:
            self.generator.train(was_training)


def open_for_evaluation(source, device: str = "cpu") -> tuple[Source, str]:
    """(the Source, a one-line description for the report) of a checkpoint file, a run
    directory or an ONNX file, a (generator module, card) pair, or anything that already
    has `card` and `generate(latents, labels)`."""
    if isinstance(source, tuple):
        generator, card = source
        return ModuleSource(generator, card), f"{card.name} (step {card.step})"
    name = ""
    if isinstance(source, (str, os.PathLike)):
        name = os.path.basename(os.path.normpath(source)) + ": "
        source = open_generator(source, device=device)
    card = source.card
    return source, f"{name}{card.name} (step {card.step}, {card.weights} weights)"


def draw_samples(source: Source, count: int, truncation: float | None = None,
                 first_seed: int = 0) -> tuple[torch.Tensor, np.ndarray | None]:
    """(samples (count, ...) float32, labels (count,) or None) from the seeds
    first_seed..first_seed+count-1 (0..count-1 for `dcgan evaluate` and the card, so that
    two evaluations agree; the training loop's from SELECTION_SEEDS),
    their latents truncated at |z| = `truncation` when given (as the service does). A diverged generator's NaN and infinities become 0 and +-1, so it scores badly
    rather than breaking the statistics."""
    from models.latent import labels_for_seeds, latents_from_seeds

    card = source.card
    seeds = range(first_seed, first_seed + count)
    latents = latents_from_seeds(seeds, card.nz, truncation)  # (N, nz)
    labels = labels_for_seeds(seeds, card.num_classes) if card.num_classes else None
    parts = [source.generate(latents[i:i + BATCH], None if labels is None else labels[i:i + BATCH])
             for i in range(0, count, BATCH)]
    samples = torch.from_numpy(np.concatenate(parts).astype(np.float32))
    if not torch.isfinite(samples).all():
        samples = torch.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0)
    return samples, labels
