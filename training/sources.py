"""One way to generate from either a checkpoint (PyTorch) or an exported ONNX file.

The CLI's `sample`, `interpolate` and `evaluate` take either; both sources answer
`generate(latents, labels) -> float32 array` with the card's output shape.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.card import ModelCard


class GeneratorSource:
    card: ModelCard

    def generate(self, latents: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError


class TorchSource(GeneratorSource):
    def __init__(self, path: str | Path, weights: str = "ema", device: str = "cpu"):
        import torch

        from training.checkpoint import load_generator

        self._torch = torch
        self.device = device
        self.generator, self.card = load_generator(path, weights=weights, device=device)

    def generate(self, latents: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        torch = self._torch
        with torch.no_grad():
            z = torch.from_numpy(np.ascontiguousarray(latents, dtype=np.float32)).to(self.device)
            y = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(self.device) if labels is not None else None
            return self.generator(z, y).float().cpu().numpy()


class OnnxSource(GeneratorSource):
    def __init__(self, path: str | Path, device: str = "cpu"):
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if device in ("cuda", "auto") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ValueError(f"{path} is not a loadable ONNX model ({str(exc).splitlines()[0][:160]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        self.card = ModelCard.from_metadata(meta, source=str(path))

    def generate(self, latents: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        feed = {"latents": np.ascontiguousarray(latents, dtype=np.float32)}
        if self.card.num_classes:
            feed["labels"] = np.asarray(labels, dtype=np.int64)
        return self.session.run(["images"], feed)[0]


def open_source(path: str | Path, weights: str = "ema", device: str = "cpu") -> GeneratorSource:
    """An ONNX file (by its .onnx suffix) or a checkpoint / run directory."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint, run directory or ONNX file at {path}")
    if path.suffix == ".onnx":
        return OnnxSource(path, device=device)
    return TorchSource(path, weights=weights, device=device)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8."""
    pixels = np.clip(np.rint((images + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return pixels.transpose(0, 2, 3, 1)


def grid(images: np.ndarray, nrow: int = 8, padding: int = 2) -> np.ndarray:
    """Tile (N, H, W, C) uint8 images into one (rows*H', cols*W', C) image."""
    n, h, w, c = images.shape
    cols = min(nrow, n)
    rows = -(-n // cols)
    out = np.zeros((rows * (h + padding) + padding, cols * (w + padding) + padding, c), np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, cols)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        out[y:y + h, x:x + w] = image
    return out
