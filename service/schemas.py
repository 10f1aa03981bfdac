"""Requests and responses of the service, with their limits, and the guard that checks
every generation request against them before BentoML or the generator sees it.

Static limits (n, steps, truncation, body size) live in the request models, so they
show in the OpenAPI document; limits that depend on the model (label range, latent
length) are checked by the endpoints with `check_*` below. Every violation becomes a
400 whose `error` names the field and what it accepts.
"""

from __future__ import annotations

import hmac
import json
import math
import os
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.generation import GenerationError as RequestError
from models.latent import MAX_SEED


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass(frozen=True)
class Limits:
    max_n: int = _env_int("DCGAN_MAX_N", 128)
    max_steps: int = _env_int("DCGAN_MAX_STEPS", 64)
    min_truncation: float = 0.05  # below this, redrawing latents takes too many draws
    max_truncation: float = 4.0
    max_body_bytes: int = _env_int("DCGAN_MAX_BODY_BYTES", 64 * 1024)
    max_latent_length: int = 4096  # a sanity bound; the model's nz is checked later
    # Images per request are also capped by pixels, so a 256x256 RGB model cannot be
    # asked for 128 float arrays of 0.8 MB each in one go.
    max_values_per_request: int = 2**22

    def max_images(self, output_shape: tuple[int, ...]) -> int:
        per_image = math.prod(output_shape)
        return max(1, min(self.max_n, self.max_values_per_request // per_image))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


LIMITS = Limits()

Seed = Annotated[int, Field(ge=0, le=MAX_SEED, strict=True)]
Truncation = Annotated[
    float,
    Field(ge=LIMITS.min_truncation, le=LIMITS.max_truncation, allow_inf_nan=False,
          description="Truncation trick: redraw latent entries above this magnitude "
                      "(or clip given latent vectors to it). Lower: less variety, cleaner "
                      "images. Absent: no truncation."),
]
Label = Annotated[int, Field(ge=0, strict=True, description="Class to draw, for a "
                                                            "class-conditional model (0 .. num_classes-1). Absent: seed % num_classes.")]
Latent = Annotated[list[float], Field(min_length=1, max_length=LIMITS.max_latent_length)]


class SampleRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        # OpenAPI 3.0 (BentoML's) knows one `example` per schema, not `examples`.
        json_schema_extra={"example": {"n": 16, "seed": 42, "format": "json"}},
    )
    n: Annotated[int, Field(ge=1, le=LIMITS.max_n, strict=True,
                            description="How many images (seeds seed .. seed+n-1).")] = 1
    seed: Seed | None = Field(None, description="First seed; absent: a random one, "
                                                "returned in the response.")
    truncation: Truncation | None = None
    label: Label | None = None
    format: Literal["json", "png", "array"] = Field(
        "json", description="json: base64 PNGs and their seeds; png: one grid image; "
                            "array: the generator's float outputs in [-1, 1].")
    columns: Annotated[int, Field(ge=1, le=LIMITS.max_n, strict=True)] | None = Field(
        None, description="Tiles per row of the png grid (default: square).")


class InterpolateRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"example": {"start": 1, "end": 2, "steps": 8, "method": "slerp",
                                       "format": "frames"}},
    )
    start: Seed | Latent = Field(description="A seed, or a latent vector of nz numbers.")
    end: Seed | Latent = Field(description="A seed, or a latent vector of nz numbers.")
    steps: Annotated[int, Field(ge=2, le=LIMITS.max_steps, strict=True,
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


def error_body(message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": message, "detail": [{"loc": [field] if field else [], "msg": message}]}


_SEED_RULE = f"an integer from 0 to {MAX_SEED}"
_VECTOR_RULE = (f"a seed ({_SEED_RULE}) or a latent vector (a list of up to "
                f"{LIMITS.max_latent_length} numbers)")
_COMMON_RULES = {
    "seed": _SEED_RULE,
    "truncation": f"a number from {LIMITS.min_truncation} to {LIMITS.max_truncation}",
    "label": "an integer from 0 to the model's num_classes - 1",
}
RULES: dict[type[BaseModel], dict[str, str]] = {
    SampleRequest: _COMMON_RULES | {
        "n": f"an integer from 1 to {LIMITS.max_n}",
        "format": "one of json, png, array",
        "columns": f"an integer from 1 to {LIMITS.max_n}",
    },
    InterpolateRequest: _COMMON_RULES | {
        "start": _VECTOR_RULE,
        "end": _VECTOR_RULE,
        "steps": f"an integer from 2 to {LIMITS.max_steps}",
        "method": "one of slerp, lerp",
        "format": "one of frames, png, gif, array",
    },
}


def describe(exc: ValidationError, model: type[BaseModel]) -> dict[str, Any]:
    """A pydantic error -> {"error": one line per field, "detail": [{loc, msg}]}: each
    message names the field and says what it accepts."""
    rules = RULES.get(model, {})
    messages: dict[str, str] = {}
    for err in exc.errors(include_url=False):
        field = str(err["loc"][0]) if err["loc"] else "body"
        if field in messages:  # a union reports one error per branch: keep one line
            continue
        if err["type"] == "extra_forbidden":
            messages[field] = f"{field}: unknown field (accepted: {', '.join(model.model_fields)})"
        elif err["type"] == "missing":
            messages[field] = f"{field} is required: {rules.get(field, 'see /docs')}"
        elif field in rules:
            got = err.get("input") if len(err["loc"]) == 1 else None
            shown = f", got {_short(got)}" if got is not None else ""
            messages[field] = f"{field} must be {rules[field]}{shown}"
        else:
            messages[field] = f"{field}: {err['msg']}"
    return {
        "error": "; ".join(messages.values()),
        "detail": [{"loc": [f], "msg": m} for f, m in messages.items()],
    }


def _short(value: Any) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def check_label(label: int | None, num_classes: int) -> None:
    if label is None:
        return
    if num_classes == 0:
        raise RequestError("label", "label: this model is not class-conditional; leave it out")
    if not 0 <= label < num_classes:
        raise RequestError("label", f"label must be an integer from 0 to {num_classes - 1}, got {label}")


# --- the guard --------------------------------------------------------------------

GUARDED = {"/sample": SampleRequest, "/interpolate": InterpolateRequest}


class RequestGuard:
    """ASGI middleware for the generation routes: bearer token, body size, JSON, and the
    request model, in that order, answering 401/413/415/400 itself. Checking here, before
    BentoML parses the body, keeps bad input from costing work or logging tracebacks.
    Health, metrics, the page and /model pass untouched. `on_reject(endpoint, reason)`
    is told about every refusal."""

    def __init__(self, app, on_reject=None, token: str | None = None,
                 max_body_bytes: int = LIMITS.max_body_bytes) -> None:
        self.app = app
        self._token = token  # None: DCGAN_API_TOKEN, read per request (cheap, and tests vary it)
        self.on_reject = on_reject or (lambda endpoint, reason: None)
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "").rstrip("/")  # "/sample/" is redirected to "/sample"
        model = GUARDED.get(path) if scope["type"] == "http" else None
        if model is None or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        endpoint = path.strip("/")
        headers = dict(scope.get("headers") or [])

        async def refuse(status: int, reason: str, message: str, body=None) -> None:
            self.on_reject(endpoint, reason)
            payload = json.dumps(body or error_body(message)).encode()
            extra = [(b"www-authenticate", b"Bearer")] if status == 401 else []
            await send({"type": "http.response.start", "status": status, "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()), *extra]})
            await send({"type": "http.response.body", "body": payload})

        token = (self._token if self._token is not None else os.environ.get("DCGAN_API_TOKEN", "")).encode()
        if token:
            given = headers.get(b"authorization", b"")
            if not (given.startswith(b"Bearer ") and hmac.compare_digest(given[7:], token)):
                return await refuse(401, "unauthorized", "a bearer token is required: "
                                    "send the header 'Authorization: Bearer <token>'")
        limit = self.max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await refuse(413, "too_large", f"request body: at most {limit} bytes")
        content_type = headers.get(b"content-type", b"application/json").split(b";")[0].strip()
        if content_type not in (b"application/json", b""):
            return await refuse(415, "unsupported_media_type",
                                "request body: send JSON with 'Content-Type: application/json'")
        body = bytearray()
        while True:  # read it all (bounded), then hand BentoML the same bytes
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > limit:
                return await refuse(413, "too_large", f"request body: at most {limit} bytes")
            if not message.get("more_body", False):
                break
        try:
            data = json.loads(body or b"{}")
        except (ValueError, RecursionError):
            return await refuse(400, "malformed_json", "request body: not valid JSON")
        if not isinstance(data, dict):
            return await refuse(400, "malformed_json", "request body: a JSON object is expected")
        try:
            model.model_validate(data)
        except ValidationError as exc:
            return await refuse(400, "invalid", "", describe(exc, model))
        except RecursionError:
            return await refuse(400, "invalid", "request body: nested too deeply")

        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body or b"{}"), "more_body": False}

        await self.app(scope, replay, send)
