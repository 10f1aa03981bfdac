"""The way back from an image to a latent: an encoder per generator, trained here, and
gradient-descent refinement of its guesses through the torch generator.

The generator is frozen; only the encoder learns. Two losses, every step:

- latent regression on generated images: for z ~ N(0, I), E(G(z)) should be z. This
  teaches E the generator's own coordinates, on images G can make exactly.
- reconstruction of real training images: G(E(x)) should be x, in pixels (MSE in
  [-1, 1]) and in the features of the evaluation classifier (training/evaluate/features.py,
  the first network's penultimate layer), so that what a reconstruction keeps is what
  makes the digit that digit, not only its ink. The feature term is divided by the
  real features' mean squared norm, so its weight means the same for any dataset.

An exported generator has no checkpoint beside it (the bundled one has none), so
`torch_generator` rebuilds the torch generator from the ONNX file's own weights: the
initializers carry the state_dict's names, and the rebuilt module is checked against
ONNX Runtime before use. Reconstruction needs gradients through G, which ONNX Runtime
cannot give, so that is the way rather than training on (latent, image) pairs alone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.card import ModelCard

logger = logging.getLogger("dcgan.encoder")
PARITY_TOLERANCE = 1e-4


class EncoderError(ValueError):
    """An encoder cannot be trained or exported for this generator; one line."""


@dataclass
class EncoderConfig:
    steps: int = 1000  # optimiser steps
    batch_size: int = 32  # real images, and generated pairs, per step
    lr: float = 1e-3  # Adam, cosine-decayed to 5% of it
    width: int = 32  # feature maps of the first convolution (doubling, capped at 8x)
    latent_weight: float = 1.0
    pixel_weight: float = 1.0
    feature_weight: float = 1.0
    seed: int = 0
    threads: int | None = None


class Encoder(nn.Module):
    """Image (N, nc, S, S) in [-1, 1] -> latent (N, nz): strided convolutions down to
    4x4 (the DCGAN discriminator's shape, with batch norm), then one linear layer."""

    def __init__(self, nz: int, nc: int, image_size: int, width: int = 32):
        super().__init__()
        layers: list[nn.Module] = []
        channels, side, w = nc, image_size, width
        while side > 4:
            layers += [nn.Conv2d(channels, w, 4, 2, 1, bias=False), nn.BatchNorm2d(w),
                       nn.LeakyReLU(0.2)]
            channels, side, w = w, side // 2, min(w * 2, width * 8)  # halves H and W
        self.body = nn.Sequential(*layers, nn.Flatten())  # (N, channels * 16)
        self.head = nn.Linear(channels * 16, nz)  # (N, nz)
        self.shape = {"nz": nz, "nc": nc, "image_size": image_size, "width": width}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(images))


# --- the generator, from a checkpoint or an exported file ------------------------------

def torch_generator(source: str | Path) -> tuple[nn.Module, ModelCard, Path | None]:
    """(torch generator in eval mode, card, the ONNX file or None) of a run directory,
    checkpoint or exported ONNX file."""
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"no run directory, checkpoint or ONNX file at {path}")
    if path.suffix != ".onnx":
        from training.checkpoint import load_torch_generator

        generator, card = load_torch_generator(path)
        return generator, card, None
    return (*generator_from_onnx(path), path)


def generator_from_onnx(path: str | Path) -> tuple[nn.Module, ModelCard]:
    """The torch generator whose weights an exported file holds, checked against ONNX
    Runtime on the same latents."""
    import onnx
    from onnx import numpy_helper

    from models import build_models
    from models.generation import OnnxGenerator

    model = onnx.load(str(path))
    card = ModelCard.from_metadata({p.key: p.value for p in model.metadata_props}, str(path))
    generator, _ = build_models(card.arch, card.model)
    arrays = {init.name: numpy_helper.to_array(init).astype(np.float32)
              for init in model.graph.initializer}
    for node in model.graph.node:  # weights the exporter turned into constants
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            arrays.setdefault(node.output[0], numpy_helper.to_array(node.attribute[0].t).astype(np.float32))
    weights = {name: torch.from_numpy(arrays[name]) for name in generator.state_dict() if name in arrays}
    # The exporter may share identical initializers (a fresh network's zero means and
    # biases) under one name: read what is missing from the graph's nodes, in module order.
    convolutions = [n.input[1] for n in model.graph.node if n.op_type == "ConvTranspose"]
    norms = [n.input[1:5] for n in model.graph.node if n.op_type == "BatchNormalization"]
    modules = [(name, m) for name, m in generator.named_modules()
               if isinstance(m, (nn.ConvTranspose2d, nn.BatchNorm2d))]
    for name, module in modules:
        if isinstance(module, nn.ConvTranspose2d) and convolutions:
            weights.setdefault(f"{name}.weight", torch.from_numpy(arrays.get(convolutions.pop(0), np.zeros(0))))
        elif isinstance(module, nn.BatchNorm2d) and norms:
            for key, source in zip(("weight", "bias", "running_mean", "running_var"), norms.pop(0)):
                if source in arrays:
                    weights.setdefault(f"{name}.{key}", torch.from_numpy(arrays[source]))
    try:
        missing, _ = generator.load_state_dict(weights, strict=False)
    except RuntimeError as exc:
        raise EncoderError(f"{path}: cannot rebuild its generator in torch ({str(exc)[:160]})") from None
    # What the file lacks keeps its initial value (a fresh network's zero means, which
    # the exporter may leave out); the comparison with ONNX Runtime below says whether
    # that was right.
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    generator.eval()
    onnx_generator = OnnxGenerator(path, device="cpu", threads=1)
    latents = np.random.default_rng(0).standard_normal((4, card.nz)).astype(np.float32)
    labels = np.arange(4) % card.num_classes if card.num_classes else None
    with torch.no_grad():
        mine = generator(torch.from_numpy(latents),
                         None if labels is None else torch.from_numpy(labels)).numpy()
    error = float(np.abs(mine - onnx_generator.generate(latents, labels)).max())
    if not error <= 1e-3:  # float16 files round their weights
        lacking = f" (the file has no {', '.join(missing[:3])})" if missing else ""
        raise EncoderError(f"{path}: the rebuilt torch generator differs from ONNX Runtime by "
                           f"{error:.2e}{lacking}")
    return generator, card


def check_projectable(card: ModelCard) -> None:
    if not card.is_image:
        raise EncoderError("an encoder needs an image generator; this one makes points")
    if card.num_classes:
        raise EncoderError("projection of class-conditional generators is not supported: "
                           "a latent alone does not give the image its class")


# --- training ----------------------------------------------------------------------------

def real_training_images(card: ModelCard) -> torch.Tensor:
    """The train split of the card's dataset, at the generator's size and channels."""
    from training.data import load_dataset
    from training.evaluate.features import stack

    size, nc = card.output_shape[1], card.output_shape[0]
    dataset = load_dataset(card.dataset.get("name", "mnist5k"), image_size=size, channels=nc,
                           split="train", root=card.dataset.get("root"))
    images, _ = stack(dataset, range(len(dataset)), full=True)
    return images


def feature_network(card: ModelCard):
    """The evaluation classifier (first network) of the card's dataset, frozen."""
    from training.evaluate.features import RealData, load_classifier

    size, nc = card.output_shape[1], card.output_shape[0]
    name = card.dataset.get("name", "mnist5k")
    real = RealData(name, size, nc, card.dataset.get("root"))
    classifier, accuracy = load_classifier(name, size, nc, card.dataset.get("root"), real)
    for p in classifier.parameters():
        p.requires_grad_(False)
    return classifier.eval(), accuracy


def reconstruction_loss(generator, classifier, latents, images, feature_scale: float,
                        pixel_weight: float, feature_weight: float) -> tuple[torch.Tensor, dict]:
    """Pixel MSE plus scaled feature MSE between G(latents) and `images`, per batch."""
    made = generator(latents)
    pixel = F.mse_loss(made, images)
    loss = pixel_weight * pixel
    figures = {"pixel": pixel.item()}
    if classifier is not None and feature_weight:
        feature = F.mse_loss(classifier(made)[0], classifier(images)[0]) / feature_scale
        loss = loss + feature_weight * feature
        figures["feature"] = feature.item()
    return loss, figures


def train_encoder(generator: nn.Module, card: ModelCard, config: EncoderConfig,
                  progress: bool = False) -> tuple[Encoder, dict]:
    """Train an encoder for the frozen `generator`; returns it in eval mode and a report
    (config, final losses, seconds)."""
    check_projectable(card)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = torch.Generator().manual_seed(config.seed)
    generator = generator.eval().cpu()
    for p in generator.parameters():
        p.requires_grad_(False)
    nc, size = card.output_shape[0], card.output_shape[1]
    encoder = Encoder(card.nz, nc, size, config.width)
    real = real_training_images(card)
    classifier, accuracy, feature_scale = None, None, 1.0
    if config.feature_weight:
        classifier, accuracy = feature_network(card)
        with torch.no_grad():
            feature_scale = float(classifier(real[:500])[0].pow(2).mean()) or 1.0
    optimiser = torch.optim.Adam(encoder.parameters(), lr=config.lr, betas=(0.9, 0.99))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, config.steps,
                                                          eta_min=config.lr * 0.05)
    start, figures = time.perf_counter(), {}
    bar = _progress(config.steps) if progress else None
    encoder.train()
    for step in range(1, config.steps + 1):
        latents = torch.randn(config.batch_size, card.nz, generator=rng)
        with torch.no_grad():
            made = generator(latents)
        latent_loss = F.mse_loss(encoder(made), latents)
        rows = torch.randint(0, len(real), (config.batch_size,), generator=rng)
        images = real[rows]
        recon, parts = reconstruction_loss(generator, classifier, encoder(images), images,
                                           feature_scale, config.pixel_weight, config.feature_weight)
        loss = config.latent_weight * latent_loss + recon
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        # a running mean, so the report does not hang on one batch
        now = {"latent": latent_loss.item(), **parts}
        figures = {k: 0.98 * figures.get(k, v) + 0.02 * v for k, v in now.items()}
        if bar is not None:
            bar.update(1, description=" ".join(f"{k} {v:.4f}" for k, v in figures.items()))
        elif step % 100 == 0 or step == config.steps:
            logger.info("step %d/%d %s", step, config.steps,
                        " ".join(f"{k} {v:.4f}" for k, v in figures.items()))
    if bar is not None:
        bar.close()
    encoder.eval()
    report = {"config": asdict(config), "losses": {k: round(v, 5) for k, v in figures.items()},
              "seconds": round(time.perf_counter() - start, 1), "train_images": len(real),
              "classifier_accuracy": accuracy, "step": card.step, "weights": card.weights}
    return encoder, report


class _progress:
    def __init__(self, total: int):
        from rich.progress import Progress

        self.bar = Progress(transient=True)
        self.bar.start()
        self.task = self.bar.add_task("encoder", total=total)

    def update(self, n: int, description: str) -> None:
        self.bar.update(self.task, advance=n, description=description)

    def close(self) -> None:
        self.bar.stop()


# --- refinement through the torch generator -----------------------------------------------

@torch.enable_grad()
def refine_latents(generator: nn.Module, card: ModelCard, latents: np.ndarray,
                   images: np.ndarray, steps: int, lr: float = 0.05,
                   feature_weight: float = 1.0) -> np.ndarray:
    """`steps` of Adam on the latents (N, nz), from the given guesses, lowering the pixel
    and feature distance of G(latents) to `images` (N, C, S, S) in [-1, 1]. Returns the
    refined latents (float32)."""
    if steps <= 0:
        return latents
    generator = generator.eval()
    for p in generator.parameters():
        p.requires_grad_(False)
    classifier, _ = feature_network(card) if feature_weight else (None, None)
    targets = torch.from_numpy(np.asarray(images, np.float32))
    with torch.no_grad():
        scale = float(classifier(targets)[0].pow(2).mean()) if classifier is not None else 1.0
    z = torch.tensor(latents, dtype=torch.float32, requires_grad=True)
    optimiser = torch.optim.Adam([z], lr=lr)
    for _ in range(steps):
        # per image, so that the batch size does not change each latent's step
        loss, _ = reconstruction_loss(generator, classifier, z, targets, max(scale, 1e-8), 1.0,
                                      feature_weight)
        optimiser.zero_grad(set_to_none=True)
        (loss * len(z)).backward()
        optimiser.step()
    return z.detach().numpy().astype(np.float32)


# --- export: the sidecar beside its generator ---------------------------------------------

def export_encoder(encoder: Encoder, card: ModelCard, generator_path: str | Path,
                   report: dict | None = None) -> tuple[Path, float]:
    """Write the encoder as an ONNX sidecar of the exported generator at
    `generator_path` (models.generation.latent_space.sidecar_path), carrying the
    generator's digest, after a parity check with PyTorch. Returns (path, max error)."""
    import io
    import json
    import warnings

    import onnx
    import onnxruntime as ort

    from models.generation import atomic_write
    from models.generation.latent_space import ENCODER_KEY, file_digest, sidecar_path

    encoder = encoder.eval().cpu()
    images = torch.rand(8, *card.output_shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(encoder, (images,), buffer, input_names=["images"],
                          output_names=["latents"], opset_version=18, dynamo=False,
                          dynamic_axes={"images": {0: "batch"}, "latents": {0: "batch"}})
    model = onnx.load_from_string(buffer.getvalue())
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = encoder(images).numpy()
    error = float(np.abs(session.run(["latents"], {"images": images.numpy()})[0] - expected).max())
    if not error <= PARITY_TOLERANCE:
        raise EncoderError(f"the encoder in ONNX Runtime differs from PyTorch by {error:.2e}")
    info = {"generator_sha256": file_digest(generator_path), "generator": Path(generator_path).name,
            "nz": card.nz, "input_shape": list(card.output_shape), "shape": encoder.shape,
            "onnx_max_abs_error": error, "training": report or {}}
    onnx.helper.set_model_props(model, {ENCODER_KEY: json.dumps(info, sort_keys=True)})
    model.producer_name = "dcgan-service"
    onnx.checker.check_model(model, full_check=True)
    path = sidecar_path(generator_path, "encoder")
    atomic_write(path, model.SerializeToString())
    return path, error


def save_encoder(path: str | Path, encoder: Encoder, report: dict) -> Path:
    """The encoder of a run (its weights, shape and report), for `dcgan export` to carry."""
    from training.checkpoint import save_checkpoint

    return save_checkpoint(path, {"encoder": encoder.state_dict(), "shape": encoder.shape,
                                  "report": report})


def load_encoder(path: str | Path) -> tuple[Encoder, dict]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    encoder = Encoder(**state["shape"])
    encoder.load_state_dict(state["encoder"])
    return encoder.eval(), state["report"]
