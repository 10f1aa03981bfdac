"""Pieces of the JSON answers that every generation endpoint shares."""

from __future__ import annotations

from typing import Any

import numpy as np

from models import generation as gen
from models.generation import OnnxGenerator


def b64_pngs(images: np.ndarray) -> list[str]:
    """Generator outputs (N, C, H, W) -> one base64 PNG each."""
    return [gen.b64(png) for png in gen.png_images(images)]


def labels_field(labels: np.ndarray | None) -> dict[str, Any]:
    return {} if labels is None else {"labels": labels.tolist()}


def model_field(g: OnnxGenerator) -> dict[str, Any]:
    return {"name": g.card.name, "version": g.version, "step": g.card.step}
