"""Requests and responses of the service, with their limits.

The limits come from the settings (service/settings.py), read once at start-up:
`request_models(limits)` builds the request models that enforce them, so they show in
the OpenAPI document, and each model carries in `RULES` the words for what each field
accepts, which the guard (service/guard.py) puts in every 400 it answers. Limits that
depend on the model (label range, latent length) are checked by the endpoints with
`check_*` below.
"""

import math
from dataclasses import asdict, dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from models.latent import MAX_SEED
from service.guard import MAX_DETAILS, MAX_ERROR_CHARS


@dataclass(frozen=True)
class Limits:
    """What one request may ask for. The first three are settings (DCGAN_MAX_N,
    DCGAN_MAX_STEPS, DCGAN_MAX_BODY_BYTES: service.settings.Settings.limits)."""

    max_n: int
    max_steps: int
    max_body_bytes: int
    min_truncation: float = 0.05  # below this, redrawing latents takes too many draws
    max_truncation: float = 4.0
    max_latent_length: int = 4096  # a sanity bound; the model's nz is checked later
    # Latent entries are standard normal draws (|z| > 6 has probability 2e-9); far
    # larger values overflow the generator's float32 arithmetic into NaN images.
    max_latent_value: float = 100.0
    # Images per request are also capped by pixels, so a 256x256 RGB model cannot be
    # asked for 128 float arrays of 0.8 MB each in one go.
    max_values_per_request: int = 2**22

    def max_images(self, output_shape: tuple[int, ...]) -> int:
        per_image = math.prod(output_shape)
        return max(1, min(self.max_n, self.max_values_per_request // per_image))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Seed = Annotated[int, Field(ge=0, le=MAX_SEED, strict=True)]
_SEED_RULE = f"an integer from 0 to {MAX_SEED}"
# Every generation request may name its model; a request model for a new endpoint adds
# `model: ModelName = model_field()` and `"model": MODEL_RULE` to its RULES.
MODEL_RULE = "the name of a served model (GET /models lists them)"
ModelName = Annotated[str, Field(min_length=1, max_length=128, strict=True)] | None


def model_field() -> Any:
    return Field(None, description="The generator to use (GET /models lists them). "
                                   "Absent: the default model, the first configured.")


def request_models(limits: Limits) -> tuple[type[BaseModel], type[BaseModel]]:
    """(SampleRequest, InterpolateRequest) enforcing `limits`."""
    Truncation = Annotated[
        float,
        Field(ge=limits.min_truncation, le=limits.max_truncation, allow_inf_nan=False,
              description="Truncation trick: redraw latent entries above this magnitude "
                          "(or clip given latent vectors to it). Lower: less variety, cleaner "
                          "images. Absent: no truncation."),
    ]
    Label = Annotated[int, Field(ge=0, strict=True, description="Class to draw, for a "
                                 "class-conditional model (0 .. num_classes-1). Absent: seed % num_classes.")]
    bound = limits.max_latent_value
    Entry = Annotated[float, Field(ge=-bound, le=bound, allow_inf_nan=False)]
    Latent = Annotated[list[Entry], Field(min_length=1, max_length=limits.max_latent_length)]
    vector_rule = (f"a seed ({_SEED_RULE}) or a latent vector (a list of up to "
                   f"{limits.max_latent_length} numbers, each from {-bound:g} to {bound:g})")
    common_rules = {
        "model": MODEL_RULE,
        "seed": _SEED_RULE,
        "truncation": f"a number from {limits.min_truncation} to {limits.max_truncation}",
        "label": "an integer from 0 to the model's num_classes - 1",
    }

    class SampleRequest(BaseModel):
        model_config = ConfigDict(
            extra="forbid",
            # OpenAPI 3.0 (BentoML's) knows one `example` per schema, not `examples`.
            json_schema_extra={"example": {"n": 16, "seed": 42, "format": "json"}},
        )
        RULES: ClassVar[dict[str, str]] = common_rules | {
            "n": f"an integer from 1 to {limits.max_n}",
            "format": "one of json, png, array",
            "columns": f"an integer from 1 to {limits.max_n}",
        }
        n: Annotated[int, Field(ge=1, le=limits.max_n, strict=True,
                                description="How many images (seeds seed .. seed+n-1).")] = 1
        seed: Seed | None = Field(None, description="First seed; absent: a random one, "
                                                    "returned in the response.")
        truncation: Truncation | None = None
        label: Label | None = None
        format: Literal["json", "png", "array"] = Field(
            "json", description="json: base64 PNGs and their seeds; png: one grid image; "
                                "array: the generator's float outputs in [-1, 1].")
        columns: Annotated[int, Field(ge=1, le=limits.max_n, strict=True)] | None = Field(
            None, description="Tiles per row of the png grid (default: square).")
        model: ModelName = model_field()

    class InterpolateRequest(BaseModel):
        model_config = ConfigDict(
            extra="forbid",
            json_schema_extra={"example": {"start": 1, "end": 2, "steps": 8, "method": "slerp",
                                           "format": "frames"}},
        )
        RULES: ClassVar[dict[str, str]] = common_rules | {
            "start": vector_rule,
            "end": vector_rule,
            "steps": f"an integer from 2 to {limits.max_steps}",
            "method": "one of slerp, lerp",
            "format": "one of frames, png, gif, array",
        }
        start: Seed | Latent = Field(description="A seed, or a latent vector of nz numbers.")
        end: Seed | Latent = Field(description="A seed, or a latent vector of nz numbers.")
        steps: Annotated[int, Field(ge=2, le=limits.max_steps, strict=True,
                                    description="Frames, end points included.")] = 8
        method: Literal["slerp", "lerp"] = Field(
            "slerp", description="slerp follows the sphere Gaussian latents live on; lerp is "
                                 "a straight line.")
        truncation: Truncation | None = None
        label: Label | None = Field(None, description="Class of every frame (conditional "
                                    "models). Absent: each seed's own class, switching at the midpoint.")
        format: Literal["frames", "png", "gif", "array"] = Field(
            "frames", description="frames: base64 PNGs; png: one strip; gif: an animation; "
                                  "array: float outputs and the latent path.")
        model: ModelName = model_field()

    return SampleRequest, InterpolateRequest


# Float outputs, nested as `shape` says: (N, C, H, W) images, or (N, 2) points of a toy model.
Values = list[list[list[list[float]]] | list[float]]


class ModelInfo(BaseModel):
    name: str
    version: str
    step: int


class SampleResponse(BaseModel):
    seed: int = Field(description="The first seed (random when none was given).")
    seeds: list[int]
    labels: list[int] | None = None
    shape: list[int] = Field(description="(channels, height, width) of each image.")
    images: list[str] = Field(description="Base64-encoded PNG images, one per seed.")
    model: ModelInfo


class InterpolateResponse(BaseModel):
    steps: int
    method: str
    labels: list[int] | None = None
    shape: list[int]
    frames: list[str] = Field(description="Base64-encoded PNG frames, start to end.")
    model: ModelInfo


class SampleArrays(BaseModel):
    """/sample with format "array"."""
    seed: int
    seeds: list[int]
    labels: list[int] | None = None
    shape: list[int] = Field(description="(N, channels, height, width), or (N, 2) for points.")
    images: Values = Field(description="The generator's float outputs ([-1, 1] for images).")


class InterpolateArrays(BaseModel):
    """/interpolate with format "array"."""
    steps: int
    method: str
    labels: list[int] | None = None
    shape: list[int] = Field(description="(steps, channels, height, width), or (steps, 2).")
    latents: list[list[float]] = Field(description="The latent of each frame, start to end.")
    images: Values


class ErrorDetail(BaseModel):
    loc: list[str] = Field(description="The field at fault ([] when it is the whole request).")
    msg: str


class Error(BaseModel):
    """Every refusal of the native API (4xx, 503): what is wrong, one line per field."""
    error: str = Field(max_length=MAX_ERROR_CHARS,
                       description="One line per field: its name and what it accepts.")
    detail: list[ErrorDetail] = Field(max_length=MAX_DETAILS,
                                      description="The same, one entry per field.")
