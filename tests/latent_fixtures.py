"""A tiny unconditional MNIST-style generator with both sidecars (an untrained encoder,
SeFa directions and made-up class means), for the latent-space tests."""

from __future__ import annotations

import io
from dataclasses import asdict
from pathlib import Path

import numpy as np

NZ = 8


def export_latent_model(path: Path) -> Path:
    """The generator (16x16, nz 8, seeded random weights, card of an mnist5k model) and
    its sidecars, written beside it."""
    import torch

    from models import build_models
    from models.card import ModelCard
    from models.generation.latent_space import Directions
    from training.directions import first_layer_weight, sefa, write_directions
    from training.encoder import Encoder, export_encoder
    from training.export import export_onnx

    torch.manual_seed(0)
    config = {"nz": NZ, "ngf": 8, "ndf": 8, "nc": 1, "image_size": 16, "num_classes": 0}
    generator, _ = build_models("dcgan", config)
    # Batch-norm statistics of its own activations, so that its images depend on the
    # latent (with a fresh network's unit variances they are one flat grey).
    for module in generator.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # a plain average over the calibration batch
    with torch.no_grad():
        generator.train()(torch.randn(512, NZ))
        for module in generator.modules():
            if isinstance(module, torch.nn.ConvTranspose2d) and module.out_channels == 1:
                module.weight.mul_(20)  # the last layer: out of tanh's flat middle
    card = ModelCard(name="tiny", arch="dcgan", model=asdict(generator.config), step=42,
                     dataset={"name": "mnist5k", "num_classes": 10})
    export_onnx(generator.eval(), card, path)
    export_encoder(Encoder(NZ, 1, 16, width=8), card, path, {"note": "untrained"})
    vectors, values = sefa(first_layer_weight(generator), count=4)
    means = np.random.default_rng(0).standard_normal((10, NZ)).astype(np.float32)
    write_directions(Directions(vectors, values, means, [7] * 10), path)
    return path


def digit_png(k: int = 0, *, invert: bool = False, size: int | None = None, mode: str = "L") -> bytes:
    """A held-out MNIST digit as PNG bytes (k-th test digit), optionally dark-on-light,
    resized, or in another mode."""
    from PIL import Image

    from training.data import class_split, read_mnist5k

    images, labels = read_mnist5k()
    pixels = images[class_split(labels, "test")[k]]
    image = Image.fromarray(255 - pixels if invert else pixels)
    if size:
        image = image.resize((size, size))
    out = io.BytesIO()
    image.convert(mode).save(out, format="PNG")
    return out.getvalue()
