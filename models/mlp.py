"""The fully connected GAN of Goodfellow et al. 2014, for 2-D toys and flat images.

The generator maps z through ReLU layers to `out_shape` (linear output for toy
points, tanh for images in [-1, 1]); the discriminator is LeakyReLU layers ending
in one logit. Packing (PacGAN) concatenates `pack` samples before the first layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class MLPConfig:
    nz: int = 2  # length of the latent vector z
    hidden: int = 256  # units per hidden layer
    layers: int = 3  # hidden layers in each network
    out_shape: list[int] = field(default_factory=lambda: [2])  # [2] for toys, [C, H, W] for images
    output: str = "linear"  # generator output: linear (toys) or tanh (images)
    pack: int = 1  # PacGAN: samples the discriminator judges together
    num_classes: int = 0  # kept for a uniform card; conditioning is DCGAN-only

    def __post_init__(self) -> None:
        if self.output not in ("linear", "tanh"):
            raise ValueError(f"output must be linear or tanh, got {self.output!r}")
        if self.num_classes:
            raise ValueError("the MLP GAN has no class conditioning; use the DCGAN")
        for name in ("nz", "hidden", "layers", "pack"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        self.out_shape = [int(s) for s in self.out_shape]

    @property
    def out_dim(self) -> int:
        return math.prod(self.out_shape)


def _stack(sizes: list[int], activation: type[nn.Module], **kwargs) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes, sizes[1:]):
        layers += [nn.Linear(n_in, n_out), activation(**kwargs)]
    return layers


class MLPGenerator(nn.Module):
    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = config
        hidden = [config.nz] + [config.hidden] * config.layers
        layers = _stack(hidden, nn.ReLU) + [nn.Linear(config.hidden, config.out_dim)]
        if config.output == "tanh":
            layers.append(nn.Tanh())
        self.main = nn.Sequential(*layers)

    def forward(self, latents: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.main(latents).reshape(-1, *self.config.out_shape)  # (N, *out_shape)


class MLPDiscriminator(nn.Module):
    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = config
        sizes = [config.out_dim * config.pack] + [config.hidden] * config.layers
        layers = _stack(sizes, nn.LeakyReLU, negative_slope=0.2)
        self.main = nn.Sequential(*layers, nn.Linear(config.hidden, 1))

    def forward(self, samples: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        flat = samples.reshape(samples.shape[0] // self.config.pack, -1)  # (N/pack, pack*dim)
        return self.main(flat).flatten()  # (N/pack,)
