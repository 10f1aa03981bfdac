"""A feature space learned from unlabelled images, for datasets with nothing to classify.

A folder of photos has no labels to train the classifiers of `features.py` on, and the
features of a network with random weights say little about what a person sees. So the
first network's strided CNN (`FeatureClassifier`, the same 64 features) is trained
without labels, by contrastive learning (SimCLR, Chen et al. 2020): two random views
of each image of the dataset's train split (the held-out images are never seen) are
pulled together in a projection of the features, and the other images of the batch
pushed apart (the NT-Xent loss). The views come from the augmentations the project
already has: a random zoom, rotation and shift (the affine warp of `features.py`),
DiffAugment's translation and cutout (training/augment.py), and, what stops the
network from matching views by their colours alone, a random brightness, contrast and
saturation per image.

What is learned is checked on the held-out images: how often each view's nearest
neighbour among the batch's other views is its own partner ("view matching", chance is
1 in 2B-1); it is reported with the figures as the classifiers report their accuracy.
Trained once per (dataset, size, channels, version; a folder's file list), seeded, and
cached beside the classifiers. Fewer than MIN_IMAGES training images keep the fallback:
the same CNN with seeded random weights, and the feature-space description says so.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from training.augment import cutout, translation
from training.evaluate.features import (
    CLASSIFIER_SIDE,
    FEATURE_DIM,
    FeatureClassifier,
    cache_dir,
    random_affine,
    save_cached,
    shrink,
)

ENCODER_VERSION = 1  # bump when the encoder or its training changes: new cache key
# A budget in steps, not epochs: a big folder costs no more than MNIST's 4,000 digits
# (about a minute on 2 CPU cores at 32x32); a small one gets at most MAX_EPOCHS passes.
ENCODER_STEPS = 400
MAX_EPOCHS = 40
ENCODER_SEED = 2
MIN_IMAGES = 256  # fewer: the random-weights fallback
BATCH = 128
TEMPERATURE = 0.2
PROJECTION = 32


class ContrastiveEncoder(nn.Module):
    """`FeatureClassifier`'s body (its FEATURE_DIM features are the feature space) with a
    projection head for the contrastive loss in place of the class head."""

    def __init__(self, nc: int):
        super().__init__()
        self.body = FeatureClassifier(nc, 1).body
        self.head = nn.Sequential(nn.Linear(FEATURE_DIM, FEATURE_DIM), nn.ReLU(),
                                  nn.Linear(FEATURE_DIM, PROJECTION))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (N, FEATURE_DIM), projection (N, PROJECTION)) of images in [-1, 1]."""
        features = self.body(shrink(images))
        return features, self.head(features)


def views(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One random view of each image (N, C, S, S) in [-1, 1], from `generator` (and the
    global stream that DiffAugment draws from, forked by the caller)."""
    count = len(images)
    zoom = 1 + 0.5 * torch.rand(count, generator=generator)  # crop 44% to 100% of the area
    images = random_affine(images, generator)
    theta = torch.zeros(count, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / zoom
    theta[:, :, 2] = (torch.rand(count, 2, generator=generator) * 2 - 1) * (1 - 1 / zoom)[:, None]
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, padding_mode="border", align_corners=False)
    images = cutout(translation(images), ratio=0.25)
    shape = (count, 1, 1, 1)
    brightness = (torch.rand(shape, generator=generator) - 0.5) * 0.4
    contrast = 0.7 + 0.6 * torch.rand(shape, generator=generator)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = (images - mean) * contrast + mean + brightness
    if images.shape[1] == 3:
        grey = images.mean(dim=1, keepdim=True)
        saturation = 1.6 * torch.rand(shape, generator=generator)  # 0: grey, 1: as is
        images = grey + (images - grey) * saturation
    return images.clamp(-1, 1)


def nt_xent(projections: torch.Tensor, temperature: float = TEMPERATURE) -> tuple[torch.Tensor, float]:
    """(loss, view-matching accuracy) of 2B projections, rows i and i + B being views of
    one image: cross-entropy of each row's partner among the 2B - 1 others."""
    both = F.normalize(projections.float(), dim=1)
    half = len(both) // 2
    similarity = both @ both.T / temperature  # (2B, 2B)
    similarity.fill_diagonal_(float("-inf"))
    partners = torch.cat([torch.arange(half, 2 * half), torch.arange(half)]).to(both.device)
    matched = float((similarity.argmax(1) == partners).float().mean())
    return F.cross_entropy(similarity, partners), matched


@torch.enable_grad()  # callers may hold no_grad (a training loop's evaluator does)
@torch.enable_grad()  # callers may hold no_grad (a training loop's evaluator does)
def train_encoder(train: torch.Tensor, held_out: torch.Tensor, nc: int,
                  steps: int = ENCODER_STEPS, seed: int = ENCODER_SEED) -> tuple[nn.Module, dict]:
    """(encoder in eval mode, facts: steps, epochs, held-out view matching), trained on
    `train` (N, C, S, S). Every random draw is seeded, and the caller's random streams
    are left as they were (a training run's evaluator builds this mid-run)."""
    generator = torch.Generator().manual_seed(seed)
    train = shrink(train)
    batch = min(BATCH, len(train) // 2 * 2)
    per_epoch = len(train) // batch
    steps = min(steps, MAX_EPOCHS * per_epoch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = ContrastiveEncoder(nc)
        optimizer = torch.optim.Adam(encoder.parameters(), lr=2e-3, weight_decay=1e-6)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
        for step in range(steps):
            if step % per_epoch == 0:
                order = torch.randperm(len(train), generator=generator)
            images = train[order[(step % per_epoch) * batch:(step % per_epoch + 1) * batch]]
            _, projections = encoder(torch.cat([views(images, generator), views(images, generator)]))
            loss, _ = nt_xent(projections)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        encoder.eval()
        with torch.no_grad():
            held = shrink(held_out)[:batch]
            _, projections = encoder(torch.cat([views(held, generator), views(held, generator)]))
            _, matched = nt_xent(projections)
    return encoder, {"steps": steps, "epochs": round(steps / per_epoch, 1), "batch": batch,
                     "view_matching": matched, "view_matching_chance": 1 / (2 * len(held) - 1)}


def encoder_path(dataset: str, image_size: int, nc: int, content_key: str | None) -> Path:
    key = f"{dataset}-{image_size}px-{nc}ch-contrastive-v{ENCODER_VERSION}"
    if content_key:  # a folder: its file list, so another folder (or an edited one) is another key
        key += f"-{content_key}"
    return cache_dir() / f"{key}.pt"


def load_encoder(dataset: str, image_size: int, nc: int, content_key: str | None,
                 train: torch.Tensor, held_out: torch.Tensor) -> tuple[nn.Module, dict]:
    """(network, facts about it) for an unlabelled image dataset: the cached contrastive
    encoder, trained and saved first when missing; with fewer than MIN_IMAGES training
    images, the seeded random-weights CNN. Facts: `kind` ("contrastive" or "random"),
    `images`, `epochs`, `view_matching` (held-out) or `why` (the fallback's reason)."""
    if len(train) < MIN_IMAGES:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            network = FeatureClassifier(nc, 0).eval()
        return network, {"kind": "random", "images": len(train),
                         "why": f"{len(train)} training images are too few to train an encoder "
                                f"(it needs {MIN_IMAGES})"}
    path = encoder_path(dataset, image_size, nc, content_key)
    if path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=True)
        encoder = ContrastiveEncoder(nc)
        encoder.load_state_dict(state["weights"])
        return encoder.eval(), dict(state["facts"])
    encoder, trained = train_encoder(train, held_out, nc, steps=ENCODER_STEPS)
    facts = {"kind": "contrastive", "images": len(train), **trained,
             "side": min(image_size, CLASSIFIER_SIDE)}
    save_cached(path, {"weights": encoder.state_dict(), "facts": facts, "version": ENCODER_VERSION})
    return encoder, facts


def describe(facts: dict, where: str) -> str:
    """The feature-space line of the report for an encoder's `facts`."""
    if facts["kind"] == "random":
        return (f"penultimate layer ({FEATURE_DIM}) of a seeded untrained CNN, the fallback: "
                f"{facts['why']}; {where}")
    return (f"penultimate layer ({FEATURE_DIM}) of a strided CNN trained without labels "
            f"(contrastive, SimCLR) on the train split of {where} ({facts['images']} images, "
            f"{facts['epochs']} epochs); held-out view matching {facts['view_matching']:.1%} "
            f"(chance {facts['view_matching_chance']:.1%})")
