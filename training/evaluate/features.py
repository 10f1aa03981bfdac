"""The feature spaces of the quality metrics: two classifiers trained here, the real
data they are compared with, and the standard Inception network from a local file.

Two independent instruments, because one can be fooled: a generator can sit close to
real digits in the features of one network and far in another's (the bundled one:
FD ratio 1.3 in the first, near 2 in a second). They differ in everything that shapes
a feature space: architecture (`FeatureClassifier`, a strided CNN; `ResNetClassifier`,
a small residual network), seed, optimiser and augmentation (one random shift per batch;
a random rotation, scale and shift per image). Each is trained once per (dataset, size,
channels, network, version) on the train split, seeded, and cached under
$DCGAN_CACHE/classifiers (by default ~/.cache/dcgan-service/classifiers), written
atomically; its held-out accuracy is kept with it and reported with every figure.
Unlabelled data has no classes to learn: its feature space is learned without labels
(training/evaluate/encoder.py), and there is no second network.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.evaluate.errors import EvaluationError
from training.folder import HELD_OUT

CLASSIFIER_VERSION = 1  # bump when the classifier or its training changes: new cache key
RESNET_VERSION = 1  # the same for the second network
FEATURE_DIM = 64
CLASSIFIER_SIDE = 64  # larger images are downscaled to this before the classifier
CLASSIFIER_EPOCHS = 10
MAX_TRAIN_IMAGES = 10_000  # classifier training and nearest-neighbour search
BATCH = 250
INCEPTION_HELP = (
    "Inception FID/KID needs the standard FID Inception weights as a local file: download "
    "weights-inception-2015-12-05-6726825d.pth from the torch-fidelity releases (v0.2.0) once, "
    "then pass --inception-weights PATH"
)


# --- the feature classifier ------------------------------------------------------------

class FeatureClassifier(nn.Module):
    """A small strided CNN; its penultimate layer (FEATURE_DIM wide) is the feature space."""

    def __init__(self, nc: int, num_classes: int, width: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(nc, width, 4, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),  # (N, w, S/2, S/2)
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.BatchNorm2d(2 * width), nn.ReLU(),  # S/4
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),  # (N, 2w*16), whatever the input size
            nn.Linear(2 * width * 16, FEATURE_DIM), nn.ReLU(),  # (N, FEATURE_DIM)
        )
        self.head = nn.Linear(FEATURE_DIM, max(num_classes, 1))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (N, FEATURE_DIM), logits (N, num_classes)) of images in [-1, 1]."""
        features = self.body(shrink(images))
        return features, self.head(features)


def shrink(images: torch.Tensor) -> torch.Tensor:
    """(N, C, S, S) -> (N, C, 64, 64) when S > 64: bounds the cost of big images."""
    if images.shape[-1] <= CLASSIFIER_SIDE:
        return images
    return F.interpolate(images, size=(CLASSIFIER_SIDE, CLASSIFIER_SIDE), mode="bilinear",
                         antialias=True, align_corners=False)


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a shortcut (He et al. 2016)."""

    def __init__(self, inputs: int, outputs: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU(),
            nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False), nn.BatchNorm2d(outputs),
        )
        self.shortcut = nn.Identity() if stride == 1 and inputs == outputs else nn.Sequential(
            nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class ResNetClassifier(nn.Module):
    """The second instrument: a small ResNet (3 residual stages, global average pooling),
    deeper than `FeatureClassifier` and built differently; its penultimate layer
    (FEATURE_DIM wide) is the second feature space."""

    def __init__(self, nc: int, num_classes: int, width: int = 24):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(nc, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),  # S/2
            ResidualBlock(width, width, 1),  # (N, w, S/2, S/2)
            ResidualBlock(width, 2 * width, 2),  # (N, 2w, S/4, S/4)
            ResidualBlock(2 * width, 4 * width, 2),  # (N, 4w, S/8, S/8)
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # (N, 4w)
            nn.Linear(4 * width, FEATURE_DIM), nn.ReLU(),  # (N, FEATURE_DIM)
        )
        self.head = nn.Linear(FEATURE_DIM, max(num_classes, 1))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (N, FEATURE_DIM), logits (N, num_classes)) of images in [-1, 1]."""
        features = self.body(shrink(images))
        return features, self.head(features)


@dataclass(frozen=True)
class FeatureNetwork:
    """One instrument: which network, trained how. `tag` names it in the cache key."""

    tag: str
    build: type
    seed: int
    augment: str  # "shift": one shift of up to 2 px per batch; "affine": per image
    optimiser: str  # "adam" or "sgd"
    version: int
    description: str


FEATURE_NETWORKS = (
    FeatureNetwork("", FeatureClassifier, 0, "shift", "adam", CLASSIFIER_VERSION,
                   "a strided CNN (2 conv layers)"),
    FeatureNetwork("resnet", ResNetClassifier, 1, "affine", "sgd", RESNET_VERSION,
                   "a ResNet (7 conv layers, 3 residual stages)"),
)


def cache_dir() -> Path:
    """Where trained classifiers are kept: $DCGAN_CACHE/classifiers, by default
    ~/.cache/dcgan-service/classifiers."""
    root = os.environ.get("DCGAN_CACHE") or Path.home() / ".cache" / "dcgan-service"
    return Path(root) / "classifiers"


def classifier_path(dataset: str, image_size: int, nc: int, root: str | None,
                    network: FeatureNetwork = FEATURE_NETWORKS[0],
                    content_key: str | None = None) -> Path:
    tag = f"-{network.tag}" if network.tag else ""  # the first network keeps its old key
    key = f"{dataset}-{image_size}px-{nc}ch{tag}-v{network.version}"
    if content_key:  # a folder's file list: another folder, or an edited one, is another key
        key += f"-{content_key}"
    elif dataset == "folder" and root:  # two folders are two datasets
        key += "-" + hashlib.sha256(os.path.abspath(root).encode()).hexdigest()[:10]
    return cache_dir() / f"{key}.pt"


@torch.enable_grad()  # callers may hold no_grad (a training loop's evaluator does)
def train_classifier(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor,
                     test_labels: torch.Tensor, num_classes: int, seed: int | None = None,
                     network: FeatureNetwork = FEATURE_NETWORKS[0]):
    """(classifier in eval mode, test accuracy), CLASSIFIER_EPOCHS epochs, seeded (by
    default with the network's own seed). The first network: Adam with a one-cycle
    schedule and one random shift of up to 2 pixels per batch (4,000 digits are few); the
    second: SGD with Nesterov momentum and weight decay, one-cycle, and a random rotation
    (up to 10 degrees), scale (0.9 to 1.1) and shift (up to 2 pixels) per image."""
    seed = network.seed if seed is None else seed
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        classifier = network.build(train.shape[1], num_classes)
    batch_size = 128
    steps = CLASSIFIER_EPOCHS * -(-len(train) // batch_size)
    if network.optimiser == "sgd":
        optimizer = torch.optim.SGD(classifier.parameters(), lr=0.02, momentum=0.9,
                                    nesterov=True, weight_decay=5e-4)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=steps)
    else:
        optimizer = torch.optim.Adam(classifier.parameters(), lr=2e-3)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=4e-3, total_steps=steps)
    train, size = shrink(train), min(train.shape[-1], CLASSIFIER_SIDE)
    for _ in range(CLASSIFIER_EPOCHS):
        for rows in torch.randperm(len(train), generator=generator).split(batch_size):
            if network.augment == "affine":
                images = random_affine(train[rows], generator)
            else:
                dy, dx = torch.randint(0, 5, (2,), generator=generator).tolist()
                images = F.pad(train[rows], (2, 2, 2, 2), mode="replicate")[..., dy:dy + size, dx:dx + size]
            _, logits = classifier(images)
            loss = F.cross_entropy(logits, train_labels[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    classifier.eval()
    _, probs = extract(classifier, test)
    return classifier, float((probs.argmax(1) == test_labels).float().mean())


def random_affine(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image (N, C, S, S) rotated by up to 10 degrees, scaled by 0.9 to 1.1 and
    shifted by up to 2 pixels, seeded; the border (background) fills what comes in."""
    count, size = len(images), images.shape[-1]
    angle = (torch.rand(count, generator=generator) * 2 - 1) * torch.pi / 18
    scale = 0.9 + 0.2 * torch.rand(count, generator=generator)
    shift = (torch.rand(count, 2, generator=generator) * 2 - 1) * 2 * 2 / size  # [-1, 1] units
    cos, sin = angle.cos() / scale, angle.sin() / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)  # (N, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, padding_mode="border", align_corners=False)


def load_classifier(dataset: str, image_size: int, nc: int, root: str | None, real: RealData,
                    network: FeatureNetwork = FEATURE_NETWORKS[0]) -> tuple[nn.Module, float]:
    """The cached classifier of (dataset, size, channels, network) of a labelled dataset,
    trained and saved first when missing. (Unlabelled data: `encoder.load_encoder`.)"""
    path = classifier_path(dataset, image_size, nc, root, network, real.content_key)
    if path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=True)
        classifier = network.build(nc, int(state["num_classes"]))
        classifier.load_state_dict(state["weights"])
        return classifier.eval(), state["accuracy"]
    classifier, accuracy = train_classifier(real.train, real.train_labels, real.held_out,
                                            real.held_out_labels, real.num_classes,
                                            network=network)
    save_cached(path, {"weights": classifier.state_dict(), "num_classes": real.num_classes,
                       "accuracy": accuracy, "version": network.version})
    return classifier, accuracy


def save_cached(path: Path, state: dict) -> None:
    """torch.save to a temporary name, then rename: a concurrent reader, or the next run
    after a crash, sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, partial)
    os.replace(partial, path)


@torch.no_grad()
def extract(classifier: nn.Module | None, samples: torch.Tensor):
    """(features float64 (N, d), class probabilities (N, K) or None), in batches.
    Without a classifier (2-D points) the samples are their own features."""
    if classifier is None:
        return samples.reshape(len(samples), -1).double(), None
    device = next(classifier.parameters()).device
    features, probs = [], []
    for batch in samples.split(BATCH):
        feats, logits = classifier(batch.to(device).float())
        features.append(feats.double().cpu())
        probs.append(logits.softmax(1).cpu())
    return torch.cat(features), torch.cat(probs)


# --- the real data ------------------------------------------------------------------------

def stack(dataset, rows, full: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(samples (N, ...), labels (N,)) of `rows` of a Dataset; images are shrunk to at most
    64x64 unless `full` (Inception wants every pixel)."""
    samples, labels = [], []
    for index in rows:
        sample, label = dataset[index]
        samples.append(sample)
        labels.append(label)
    if not samples:
        raise EvaluationError("the dataset is empty")
    batch = torch.stack(samples)
    if batch.ndim == 4 and not full:
        batch = torch.cat([shrink(part) for part in batch.split(BATCH)])
    return batch, torch.tensor(labels)


class RealData:
    """The held-out and train samples of a dataset, at a generator's size and channels."""

    def __init__(self, dataset: str, image_size: int, nc: int, root: str | None, seed: int = 0):
        from training.data import dataset_info, load_dataset

        self.name = dataset
        try:
            self.info = dataset_info(dataset)
            kind = {"image_size": image_size, "channels": nc, "root": root, "seed": seed}
            if self.info.kind == "points":
                kind = {"seed": seed}
            self.held_set = load_dataset(dataset, split="test", **kind)
            self.train_set = load_dataset(dataset, split="train",
                                          num_samples=MAX_TRAIN_IMAGES, **kind)
            self.split_note = ("an independent draw of the mixture" if self.info.kind == "points"
                               else f"a fixed {HELD_OUT:.0%} of the folder's images, never trained on"
                               if dataset == "folder" else "the test split, never trained on")
            held_order = np.random.default_rng(seed).permutation(len(self.held_set))
            self.held_rows = held_order[:MAX_TRAIN_IMAGES].tolist()
            self.train_rows = list(range(len(self.train_set)))
            # a folder's file list, sizes and times: the key of what is trained on it
            self.content_key = getattr(getattr(self.train_set, "folder", None), "key", None)
            self.held_out, self.held_out_labels = stack(self.held_set, self.held_rows)
            self.train, self.train_labels = stack(self.train_set, self.train_rows)
        except (ValueError, FileNotFoundError, OSError) as exc:
            raise EvaluationError(f"dataset {dataset}: {exc}") from None
        labelled = bool((self.train_labels >= 0).all()) and self.info.labelled
        self.num_classes = int(getattr(self.train_set, "num_classes", 0)) if labelled else 0
        self.points = self.info.kind == "points"


def inception_network(path: str, device: str) -> nn.Module:
    """The FID Inception v3 (pool3, 2048 features) from a local weights file only."""
    if not os.path.isfile(path):
        raise EvaluationError(f"no Inception weights file at {path}. {INCEPTION_HELP}")
    from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE

    if not _TORCH_FIDELITY_AVAILABLE:
        raise EvaluationError("Inception FID/KID needs the torch-fidelity package: "
                              "pip install torch-fidelity")
    from torchmetrics.image.fid import NoTrainInceptionV3

    try:
        network = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                     feature_extractor_weights_path=path)
    except Exception as exc:  # a wrong file fails inside torch.load or load_state_dict
        raise EvaluationError(f"{path} is not the FID Inception weights file "
                              f"({type(exc).__name__}). {INCEPTION_HELP}") from None
    return network.to(device)


@torch.no_grad()
def inception_features(network: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(N, 2048) float64 features of images in [-1, 1]; grey images are repeated to RGB."""
    device = next(network.parameters()).device
    features = []
    for batch in images.split(50):
        if batch.shape[1] == 1:
            batch = batch.repeat(1, 3, 1, 1)
        pixels = ((batch + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)  # what it expects
        features.append(network(pixels.to(device)).double().cpu())
    return torch.cat(features)
