"""Folders of a person's own images: every file read once, checked, and cached decoded.

A folder holds images directly (unlabelled) or in class subfolders (the subfolder is the
label, as torchvision's ImageFolder reads it). `FolderImages` reads a folder at one image
size and channel count:

- Every file with an image extension is decoded at start-up, in threads, so that an
  unreadable file (a truncated JPEG, a text file named .png) is found before training
  starts, never mid-run: it is skipped, and the count and the first few names are logged.
- Whatever the file holds becomes 8-bit grey or RGB: photos are turned upright by their
  EXIF orientation; 16-bit and 32-bit grey is scaled down (not clipped); transparency
  (RGBA, grey with alpha, palettes with a transparent colour) is laid on white; CMYK and
  the rest go through Pillow's conversion. Then the shorter side is resized to the image
  size (Lanczos; JPEGs are first decoded at a reduced scale when that is enough) and the
  centre square is kept.
- The decoded, resized images go to a cache on disk, `$DCGAN_CACHE/folders/` (default
  ~/.cache/dcgan-service/folders/): a `.npy` array, memory-mapped when read, and a
  `.json` index (labels, skipped files) written after it. Its name is a hash of the
  folder's file list with each file's size and modification time, and of the
  preprocessing: an added, removed or edited file, or another size, is another cache.
  Both files are written to a temporary name and renamed, so a crash leaves no half
  cache, only one that is rebuilt. Training epochs then read pixels, not JPEGs.

Splits: a fixed 10% of the readable images (chosen by a permutation seeded with 0, the
same for every run on the folder) is held out for evaluation (`test`); the other 90%
are `train`, what training and the evaluation's feature encoder see; `all` is both.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from models.generation.files import atomic_write

log = logging.getLogger("dcgan.data")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp",
                    ".gif")
CACHE_VERSION = 1  # bump when decoding or resizing changes: every cache key changes
HELD_OUT = 0.1  # of the readable images, for evaluation
SPLIT_SEED = 0
NAMES_SHOWN = 5  # skipped files named in the warning
_warned: set[str] = set()  # caches whose skipped files were already reported here


class FolderError(ValueError):
    """The folder cannot be trained on (missing, no images, too few readable); one line."""


def folder_cache_dir() -> Path:
    root = os.environ.get("DCGAN_CACHE") or Path.home() / ".cache" / "dcgan-service"
    return Path(root) / "folders"


def list_images(root: str) -> tuple[list[str], list[int], list[str]]:
    """(paths relative to `root`, labels, class names): class subfolders when there are
    any (their files at any depth; -1 labels otherwise), else the files of `root`."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder {root} does not exist")

    def is_image(name: str) -> bool:
        return name.lower().endswith(IMAGE_EXTENSIONS)

    def images_under(folder: str) -> list[str]:
        found = []
        for parent, dirs, files in os.walk(folder):
            dirs.sort()
            found += [os.path.relpath(os.path.join(parent, name), root)
                      for name in sorted(files) if is_image(name)]
        return found

    entries = sorted(os.listdir(root))
    classes, paths, labels = [], [], []
    for entry in entries:
        if os.path.isdir(os.path.join(root, entry)) and (inside := images_under(os.path.join(root, entry))):
            labels += [len(classes)] * len(inside)
            classes.append(entry)
            paths += inside
    if not classes:
        paths = [entry for entry in entries
                 if is_image(entry) and os.path.isfile(os.path.join(root, entry))]
        labels = [-1] * len(paths)
    if not paths:
        raise FileNotFoundError(
            f"no images in {root} (looked for {', '.join(IMAGE_EXTENSIONS)} files, "
            "directly or in class subfolders)")
    return paths, labels, classes


def fingerprint(root: str, paths: list[str], image_size: int, channels: int) -> str:
    """Hash of the file list, each file's size and mtime, and the preprocessing."""
    digest = hashlib.sha256(f"v{CACHE_VERSION} {image_size}px {channels}ch\n".encode())
    for path in paths:
        stat = os.stat(os.path.join(root, path))
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def to_mode(image, channels: int):
    """Any Pillow image -> mode L (channels 1) or RGB (3), in 8 bits."""
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        # 16-bit files scale from 65535; 32-bit ones holding 8-bit values stay as they are
        top = 65535.0 if image.mode.startswith("I;16") or pixels.max() > 255 else 255.0
        image = Image.fromarray(np.clip(pixels * 255 / top, 0, 255).round().astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
            image.mode in ("P", "L", "RGB") and "transparency" in image.info):
        image = image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image)
    return image.convert("L" if channels == 1 else "RGB")


def read_image(path: str, image_size: int, channels: int) -> np.ndarray:
    """One file -> uint8 (channels, image_size, image_size): upright, converted, the
    shorter side resized, the centre square kept. Raises whatever Pillow raises."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        # JPEG: decode at 1/2, 1/4 or 1/8 scale when that still leaves both sides >= size
        image.draft("L" if channels == 1 else "RGB", (image_size, image_size))
        image = ImageOps.exif_transpose(image)
        image = to_mode(image, channels)
        image = ImageOps.fit(image, (image_size, image_size), Image.Resampling.LANCZOS)
        pixels = np.asarray(image, dtype=np.uint8)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)  # (C, S, S)


def _reason(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class FolderImages:
    """The readable images of a folder at one size and channel count: `images` uint8
    (N, C, S, S) (memory-mapped from the cache), `labels` (N,), `classes`, `skipped`
    [(relative path, reason)] and `total` (files tried)."""

    def __init__(self, root: str, image_size: int, channels: int, workers: int | None = None):
        self.root = root
        paths, labels, self.classes = list_images(root)
        self.key = fingerprint(root, paths, image_size, channels)
        stem = folder_cache_dir() / f"{self.key}-{image_size}px-{channels}ch"
        self.array_path, self.index_path = stem.with_suffix(".npy"), stem.with_suffix(".json")
        self.total = len(paths)
        index = self._read_index()
        if index is None:
            index = self._build(paths, labels, image_size, channels, workers)
        self.images = np.load(self.array_path, mmap_mode="c")  # copy-on-write: writable for torch
        self.labels = np.asarray(index["labels"], dtype=np.int64)
        self.skipped = [tuple(item) for item in index["skipped"]]
        if self.skipped and self.key not in _warned:
            _warned.add(self.key)
            names = ", ".join(f"{name} ({reason})" for name, reason in self.skipped[:NAMES_SHOWN])
            more = f" and {len(self.skipped) - NAMES_SHOWN} more" if len(self.skipped) > NAMES_SHOWN else ""
            log.warning("skipped %d of %d files in %s that could not be read as images: %s%s",
                        len(self.skipped), self.total, root, names, more)

    def check_enough(self, minimum: int = 2) -> None:
        """FolderError unless at least `minimum` images could be read (a split needs 2)."""
        count = len(self.images)
        if count < minimum:
            raise FolderError(
                f"{self.root} has {count} readable image{'s' * (count != 1)} ({len(self.skipped)} "
                f"of {self.total} files could not be read); training needs at least a batch of them")

    def _read_index(self) -> dict | None:
        """The cache's index when both files are there and agree; None: build it."""
        try:
            index = json.loads(self.index_path.read_text())
            shape = np.load(self.array_path, mmap_mode="r").shape
        except (OSError, ValueError):
            return None
        if index.get("key") != self.key or shape[0] != len(index.get("labels", ())):
            return None
        return index

    def _build(self, paths: list[str], labels: list[int], image_size: int, channels: int,
               workers: int | None) -> dict:
        """Decode every file (threads: Pillow releases the GIL while decoding) straight into
        a memory-mapped array on disk, then drop the unreadable ones' rows."""
        self.array_path.parent.mkdir(parents=True, exist_ok=True)
        log.info("reading %d images in %s into the cache %s", len(paths), self.root, self.array_path)
        scratch = self.array_path.with_name(f".{self.array_path.name}.{os.getpid()}.decoding")
        try:
            decoded = np.lib.format.open_memmap(scratch, mode="w+", dtype=np.uint8,
                                                shape=(len(paths), channels, image_size, image_size))

            def decode(row: int) -> str | None:
                try:
                    decoded[row] = read_image(os.path.join(self.root, paths[row]), image_size, channels)
                except Exception as exc:  # any file a person drops in: report it, train on the rest
                    return _reason(exc)
                return None

            with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
                failures = list(pool.map(decode, range(len(paths))))
            good = [row for row, failure in enumerate(failures) if failure is None]
            if len(good) < len(paths):  # copy the readable rows out, a chunk at a time
                compact = np.lib.format.open_memmap(
                    scratch.with_suffix(".compact"), mode="w+", dtype=np.uint8,
                    shape=(len(good), channels, image_size, image_size))
                for start in range(0, len(good), 1024):
                    compact[start:start + 1024] = decoded[good[start:start + 1024]]
                compact.flush()
                del compact, decoded
                os.replace(scratch.with_suffix(".compact"), scratch)
            else:
                decoded.flush()
                del decoded
            os.replace(scratch, self.array_path)
        finally:
            scratch.unlink(missing_ok=True)
            scratch.with_suffix(".compact").unlink(missing_ok=True)
        index = {"key": self.key, "root": os.path.abspath(self.root), "classes": self.classes,
                 "labels": [labels[row] for row in good],
                 "skipped": [[paths[row], failure] for row, failure in enumerate(failures)
                             if failure is not None]}
        # the index last: it is what says the cache is complete
        atomic_write(self.index_path, json.dumps(index).encode())
        return index


def split_rows(count: int, split: str) -> np.ndarray:
    """Rows of `split` among `count` images: a fixed HELD_OUT share for `test`."""
    if split == "all":
        return np.arange(count)
    order = np.random.default_rng(SPLIT_SEED).permutation(count)
    cut = max(1, int(count * HELD_OUT))
    return np.sort(order[:cut] if split == "test" else order[cut:])
