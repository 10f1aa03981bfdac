"""The model card: the one contract shared by checkpoints, ONNX files and the service.

Pure Python (json only), so the service can read it without torch. In a checkpoint it
is a plain dict; in an ONNX file it lives in `metadata_props`, as one JSON document
under `CARD_KEY` plus flat copies of the architecture fields for people reading the
file with other tools. The image sides a DCGAN may have are defined here too, so the
model, the training config and torch-free readers share one limit.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

CARD_KEY = "dcgan.card"
CARD_VERSION = 1
FLAT_FIELDS = ("nz", "ngf", "ndf", "nc", "image_size", "num_classes")
# Image sides a DCGAN can have (powers of two in between), for the model and the training
# config alike.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 256


class CardError(ValueError):
    """A file carries no model card, or a card that this version cannot read."""



def finite(value: Any) -> Any:
    """`value` with every non-finite float (NaN, infinities) as None: JSON has no such
    numbers (a table's empty cells, a diverged run's figure), and a card or answer that
    held them would not parse, or not be sent."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value

@dataclass
class ModelCard:
    name: str = "dcgan"
    arch: str = "dcgan"  # "dcgan" (models/dcgan.py) or "mlp" (models/mlp.py)
    model: dict[str, Any] = field(default_factory=dict)  # the architecture config, as a dict
    latent: dict[str, Any] = field(
        default_factory=lambda: {"distribution": "normal", "mean": 0.0, "std": 1.0,
                                 "rng": "numpy PCG64(seed).standard_normal"}
    )
    dataset: dict[str, Any] = field(default_factory=dict)  # name, size, classes, normalisation
    step: int = 0
    command: str = ""
    quality: dict[str, Any] = field(default_factory=dict)
    weights: str = "ema"  # which generator weights: "ema" or "raw"
    created: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    card_version: int = CARD_VERSION

    # --- the architecture, as every consumer needs it -----------------------
    @property
    def nz(self) -> int:
        return int(self.model["nz"])

    @property
    def num_classes(self) -> int:
        return int(self.model.get("num_classes", 0))

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of one generated sample: (nc, H, W) for images, (dim,) for toys."""
        if self.arch == "dcgan":
            size = int(self.model["image_size"])
            return (int(self.model["nc"]), size, size)
        return tuple(int(s) for s in self.model["out_shape"])

    @property
    def is_image(self) -> bool:
        return len(self.output_shape) == 3

    # --- (de)serialisation ---------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        if not isinstance(data, dict) or "model" not in data or "arch" not in data:
            raise CardError("the model card is malformed (no 'arch' or 'model')")
        version = int(data.get("card_version", 0))
        if version > CARD_VERSION:
            raise CardError(
                f"the model card has version {version}; this program reads up to {CARD_VERSION}"
            )
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_metadata(self) -> dict[str, str]:
        """String key/values for ONNX `metadata_props`."""
        props = {CARD_KEY: json.dumps(finite(self.to_dict()), sort_keys=True, allow_nan=False)}
        props.update({f"dcgan.{k}": str(self.model[k]) for k in FLAT_FIELDS if k in self.model})
        props["dcgan.name"] = self.name
        return props

    @classmethod
    def from_metadata(cls, props: dict[str, str], source: str = "the file") -> ModelCard:
        if CARD_KEY not in props:
            raise CardError(
                f"{source} has no model card (metadata key {CARD_KEY!r}); "
                "export it with `dcgan export` so that it carries one"
            )
        try:
            data = json.loads(props[CARD_KEY])
        except json.JSONDecodeError as exc:
            raise CardError(f"{source} has a model card that is not valid JSON: {exc}") from None
        return cls.from_dict(data)
