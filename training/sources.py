"""Generators to sample from, whatever holds them: a checkpoint (PyTorch) or an ONNX file.

Only the torch case lives here: `TorchGenerator` answers like the generation layer's
`OnnxGenerator` (`.card`, `.generate(latents, labels) -> float32 array` of the card's
output shape), and `open_generator` opens either, by the file's suffix. The CLI's
`sample`, `interpolate` and `evaluate` take both; what happens around `generate`
(latents, labels, pictures) is models.generation's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.generation import OnnxGenerator


class TorchGenerator:
    """The generator of a checkpoint or run directory, in eval mode on `device`."""

    def __init__(self, path: str | Path, weights: str = "ema", device: str = "cpu"):
        import torch

        from training.checkpoint import load_torch_generator

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self._torch = torch
        self.device = device
        self.module, self.card = load_torch_generator(path, weights=weights, device=device)

    def generate(self, latents: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        torch = self._torch
        with torch.no_grad():
            z = torch.from_numpy(np.ascontiguousarray(latents, dtype=np.float32)).to(self.device)
            y = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(self.device) if labels is not None else None
            return self.module(z, y).float().cpu().numpy()


def open_generator(path: str | Path, weights: str = "ema", device: str = "cpu",
                   threads: int | None = None) -> OnnxGenerator | TorchGenerator:
    """An ONNX file (by its .onnx suffix; `threads` for ONNX Runtime, None: the CPUs we
    may use) or a checkpoint / run directory (`weights`: ema or raw). `device`: auto,
    cpu or cuda (a torch device such as cuda:1 for checkpoints)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint, run directory or ONNX file at {path}")
    if path.suffix == ".onnx":
        return OnnxGenerator(path, device=device.split(":")[0], threads=threads)
    return TorchGenerator(path, weights=weights, device=device)
