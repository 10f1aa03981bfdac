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


def model_field(served: Any) -> dict[str, Any]:
    """The `model` of an answer: the name a model is served under (a served model,
    service/registry.py; a bare generator: its card's name), version and step."""
    name = served.card.name if isinstance(served, OnnxGenerator) else served.name
    return {"name": name, "version": served.version, "step": served.card.step}
