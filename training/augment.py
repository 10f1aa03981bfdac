"""Differentiable augmentation of the discriminator's inputs (DiffAugment).

Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training": on a
small dataset the discriminator memorises the real images (it scores held-out real
images well below training ones) and the generator's gradient degrades. Augmenting
real and generated images alike, in the discriminator steps and in the generator step,
with operations that gradients pass through, lets D see more variety without the
generator learning the augmentation (it never sees augmented targets).

Operations (applied in this order, each with a fresh draw per image):
- `translation`: shift by up to 1/8 of the side in each direction, filling with -1
  (the background of images in [-1, 1]);
- `cutout`: zero a square of half the side at a random place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

AUGMENTS = ("translation", "cutout")


def parse_augment(spec: str) -> tuple[str, ...]:
    """`"translation,cutout"` -> ("translation", "cutout"); "" or "none" -> ()."""
    names = tuple(part.strip() for part in spec.split(",") if part.strip())
    if names == ("none",):
        return ()
    unknown = [name for name in names if name not in AUGMENTS]
    if unknown:
        raise ValueError(f"augment must be a comma-separated list of {', '.join(AUGMENTS)} "
                         f"(or none), got {unknown[0]!r}")
    return names


def translation(images: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    batch, _, height, width = images.shape
    shift_h, shift_w = int(height * ratio + 0.5), int(width * ratio + 0.5)
    dev = images.device
    dy = torch.randint(-shift_h, shift_h + 1, (batch, 1, 1), device=dev)
    dx = torch.randint(-shift_w, shift_w + 1, (batch, 1, 1), device=dev)
    index_b, index_y, index_x = torch.meshgrid(
        torch.arange(batch, device=dev), torch.arange(height, device=dev),
        torch.arange(width, device=dev), indexing="ij")
    # one pixel of padding: every out-of-range source lands on it
    index_y = torch.clamp(index_y + dy + 1, 0, height + 1)
    index_x = torch.clamp(index_x + dx + 1, 0, width + 1)
    padded = F.pad(images, [1, 1, 1, 1], value=-1.0)
    return padded.permute(0, 2, 3, 1)[index_b, index_y, index_x].permute(0, 3, 1, 2)


def cutout(images: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    batch, _, height, width = images.shape
    size_h, size_w = int(height * ratio + 0.5), int(width * ratio + 0.5)
    dev = images.device
    top = torch.randint(0, height + (1 - size_h % 2), (batch, 1, 1), device=dev) - size_h // 2
    left = torch.randint(0, width + (1 - size_w % 2), (batch, 1, 1), device=dev) - size_w // 2
    rows = torch.arange(height, device=dev).view(1, height, 1)
    cols = torch.arange(width, device=dev).view(1, 1, width)
    # the square, clipped at the borders
    inside = (rows >= top) & (rows < top + size_h) & (cols >= left) & (cols < left + size_w)
    return images * (~inside).to(images.dtype).unsqueeze(1)


OPS = {"translation": translation, "cutout": cutout}


def augment(images: torch.Tensor, names: tuple[str, ...]) -> torch.Tensor:
    """`images` (N, C, H, W) through each named operation; other shapes (2-D points) pass."""
    if not names or images.dim() != 4:
        return images
    for name in names:
        images = OPS[name](images)
    return images
