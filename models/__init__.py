"""What training and serving share: the model definitions and the torch-free path from
an exported generator to pictures.

`latent` and `card` are numpy/json only and safe for the service to import;
`dcgan` and `mlp` need torch and are imported lazily by `build_models`;
`generation` is the torch-free generation layer (the only part here that does I/O:
opening ONNX files, encoding and writing pictures), used by the service and the CLI.
"""

from __future__ import annotations

from typing import Any

ARCHS = ("dcgan", "mlp")


def model_config(arch: str, model: dict[str, Any]):
    """The config dataclass of `arch` from a card's `model` dict."""
    if arch == "dcgan":
        from models.dcgan import DCGANConfig

        return DCGANConfig(**model)
    if arch == "mlp":
        from models.mlp import MLPConfig

        return MLPConfig(**model)
    raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {arch!r}")


def build_models(arch: str, model: dict[str, Any]):
    """(generator, discriminator) for a card's architecture, freshly initialised."""
    config = model_config(arch, model)
    if arch == "dcgan":
        from models.dcgan import Discriminator, Generator, init_weights

        generator, discriminator = Generator(config), Discriminator(config)
        init_weights(generator, discriminator)
        return generator, discriminator
    from models.mlp import MLPDiscriminator, MLPGenerator

    return MLPGenerator(config), MLPDiscriminator(config)
