"""DCGAN generator and discriminator (Radford et al. 2015) for any power-of-two size.

The reference implementation is hard-wired to 64x64; here the number of strided
(transposed) convolutions follows from `image_size`, so 16..256 all work. Channel
widths double per resolution halving and are capped at 8x `ngf`/`ndf`, as in the paper.

Optional class conditioning (`num_classes > 0`): the generator concatenates a learned
label embedding to the latent; the discriminator uses a projection head
(Miyato & Koyama 2018), so "a 7" is something a client can ask for. Both scale their
label term by a `conditioning` strength (a buffer, 1 unless training sets it lower):
on a few hundred images per class, conditioning from the first step lets G draw one
digit per class whatever the latent ("collapse by conditioning", Shahbazi et al. 2022);
their fix, training unconditionally first and then fading the labels in, is
`set_conditioning` driven by the training loop.

Discriminator normalisation (`d_norm`): batch norm as in the paper, layer norm (for
WGAN-GP, whose per-sample penalty batch norm breaks), spectral normalisation of every
convolution instead of a norm layer (Miyato et al. 2018: D is kept 1-Lipschitz per
layer, which steadies training and keeps D from fitting a small data set too sharply),
or none.

Optional packing (PacGAN, Lin et al. 2018): the discriminator judges `pack` samples
at once, stacked along the channel axis, which penalises mode collapse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from models.card import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE

D_NORMS = ("batch", "layer", "spectral", "none")


@dataclass
class DCGANConfig:
    nz: int = 100  # length of the latent vector z
    ngf: int = 64  # generator feature maps at its last hidden layer (doubling towards 4x4)
    ndf: int = 64  # discriminator feature maps at its first layer (doubling towards 4x4)
    nc: int = 1  # image channels: 1 (grey) or 3 (RGB)
    image_size: int = 32  # side of the square image, a power of two in 16..256
    num_classes: int = 0  # > 0: class-conditional generator and discriminator
    pack: int = 1  # PacGAN: samples the discriminator judges together (1 = off)
    d_norm: str = "batch"  # discriminator normalisation: batch, layer, spectral or none

    def __post_init__(self) -> None:
        validate_config(self)


def validate_config(config: DCGANConfig) -> None:
    """Raise ValueError with a message naming the field and the allowed values."""
    size = config.image_size
    if not (MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE) or size & (size - 1):
        raise ValueError(
            f"image_size must be a power of two from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}, got {size}"
        )
    if config.nc not in (1, 3):
        raise ValueError(f"nc (image channels) must be 1 or 3, got {config.nc}")
    for field in ("nz", "ngf", "ndf", "pack"):
        if getattr(config, field) < 1:
            raise ValueError(f"{field} must be at least 1, got {getattr(config, field)}")
    if config.num_classes < 0:
        raise ValueError(f"num_classes must be 0 or more, got {config.num_classes}")
    if config.pack > 1 and config.num_classes > 0:
        raise ValueError("pack > 1 (PacGAN) cannot be combined with class conditioning")
    if config.d_norm not in D_NORMS:
        raise ValueError(f"d_norm must be one of {', '.join(D_NORMS)}, got {config.d_norm!r}")


def _widths(base: int, image_size: int) -> list[int]:
    """Channel widths from the 4x4 layer up to the last hidden layer."""
    n_hidden = int(math.log2(image_size)) - 2  # 4x4 .. image_size/2
    return [base * min(2 ** (n_hidden - 1 - i), 8) for i in range(n_hidden)]


def weights_init(module: nn.Module) -> None:
    """N(0, 0.02) for convolutions, N(1, 0.02) for norm scales (the DCGAN paper)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        # under spectral norm `weight` is computed: initialise the stored original
        parametrized = nn.utils.parametrize.is_parametrized(module, "weight")
        nn.init.normal_(module.parametrizations.weight.original if parametrized else module.weight,
                        0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, 0.0, 0.02)


def init_weights(generator: nn.Module, discriminator: nn.Module) -> None:
    """DCGAN init for both networks. The generator's label embedding is then drawn like
    the latent it joins, N(0, 1): at 0.02 the label would barely move the first layer
    and conditioning would be learnt slowly. The discriminator's projection stays small
    so early logits are not dominated by it."""
    generator.apply(weights_init)
    discriminator.apply(weights_init)
    if getattr(generator, "label_embedding", None) is not None:
        nn.init.normal_(generator.label_embedding.weight, 0.0, 1.0)


class Generator(nn.Module):
    def __init__(self, config: DCGANConfig):
        super().__init__()
        self.config = config
        widths = _widths(config.ngf, config.image_size)
        in_ch = config.nz
        if config.num_classes:
            self.label_embedding = nn.Embedding(config.num_classes, config.nz)
            in_ch += config.nz
            # not in the state dict: a loaded or exported model is fully conditional
            self.register_buffer("conditioning", torch.ones(()), persistent=False)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(in_ch, widths[0], 4, 1, 0, bias=False),  # (N, w0, 4, 4)
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(True),
        ]
        for w_in, w_out in zip(widths, widths[1:]):
            layers += [
                nn.ConvTranspose2d(w_in, w_out, 4, 2, 1, bias=False),  # doubles H and W
                nn.BatchNorm2d(w_out),
                nn.ReLU(True),
            ]
        layers += [nn.ConvTranspose2d(widths[-1], config.nc, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)  # (N, nc, image_size, image_size)

    def forward(self, latents: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = latents
        if self.config.num_classes:
            if labels is None:
                raise ValueError("this generator is class-conditional: labels are required")
            x = torch.cat([x, self.conditioning * self.label_embedding(labels)], dim=1)  # (N, 2*nz)
        return self.main(x[:, :, None, None])  # (N, nz, 1, 1) -> (N, nc, H, W)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)  # layer norm over (C, H, W), per sample
    return nn.Identity()


class Discriminator(nn.Module):
    """Returns one logit per (packed) sample; losses apply their own link function."""

    def __init__(self, config: DCGANConfig):
        super().__init__()
        self.config = config
        widths = _widths(config.ndf, config.image_size)[::-1]  # ndf .. at 4x4
        layers: list[nn.Module] = [
            nn.Conv2d(config.nc * config.pack, widths[0], 4, 2, 1, bias=False),  # halves H, W
            nn.LeakyReLU(0.2, inplace=True),
        ]
        for w_in, w_out in zip(widths, widths[1:]):
            layers += [
                nn.Conv2d(w_in, w_out, 4, 2, 1, bias=False),
                _norm(config.d_norm, w_out),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        self.features = nn.Sequential(*layers)  # (N, w_last, 4, 4)
        self.head = nn.Conv2d(widths[-1], 1, 4, 1, 0, bias=False)  # (N, 1, 1, 1)
        if config.num_classes:
            self.label_projection = nn.Embedding(config.num_classes, widths[-1])
            self.register_buffer("conditioning", torch.ones(()), persistent=False)
        if config.d_norm == "spectral":
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    nn.utils.parametrizations.spectral_norm(module)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.config.pack > 1:
            n, c, h, w = images.shape
            images = images.reshape(n // self.config.pack, c * self.config.pack, h, w)
        features = self.features(images)
        logits = self.head(features).flatten()  # (N,)
        if self.config.num_classes:
            if labels is None:
                raise ValueError("this discriminator is class-conditional: labels are required")
            pooled = features.sum(dim=(2, 3))  # (N, w_last)
            logits = logits + self.conditioning * (self.label_projection(labels) * pooled).sum(dim=1)
        return logits


def set_conditioning(module: nn.Module, strength: float) -> None:
    """Set the strength of the label terms (0: unconditional, 1: fully conditional) of
    every conditional network inside `module`."""
    for sub in module.modules():
        buffer = getattr(sub, "conditioning", None)
        if isinstance(buffer, torch.Tensor):
            buffer.fill_(strength)
