"""The latent-space endpoints: the way back (POST /project) and the way across
(GET /directions, POST /edit, POST /combine).

Each handler takes the served model (service/registry.py's `Served`: its card, name
and version; a bare generator works too), the request and what it needs from the
service (`space`: that model's encoder and directions, models.generation.LatentSpace,
opened when the model loads; `generate`: its batcher's `generate`), and returns
(response, images made), the shape `DCGAN._serve` expects. Every request may name its
`model` (absent: the default); /project's multipart upload names it as a form field. The work
itself (decoding pictures, plans, the search) is the generation layer's, shared with
the CLI's `dcgan project`, `edit` and `combine`.

/project takes JSON (`images`: base64 strings) or a multipart upload (one `images`
file part per picture, and the same optional fields as form fields); the guard checks
the token and the body size of both, and the JSON against `ProjectRequest`; each
picture is checked here (bytes, format, pixels from its header) before it is decoded.
"""

from __future__ import annotations

import base64
import binascii
import functools
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from models import generation as gen
from models.generation import GenerationError, OnnxGenerator
from models.generation.image_input import FITS, INVERTS, ImageLimits, read_image
from models.generation.latent_space import (
    LatentSearch,
    LatentSpace,
    pixel_rms,
    plan_combine,
    plan_edit,
    require_directions,
    require_encoder,
)
from models.latent import MAX_SEED
from service.guard import describe
from service.responses import b64_pngs, labels_field, model_field
from service.schemas import MODEL_RULE, Limits, ModelName
from service.schemas import model_field as model_name_field

SEARCH_SEED = 0  # the search is seeded: the same request, the same latents
INLINE_BYTES = 256 * 1024  # pictures up to this much in all decode in the event loop
INLINE_IMAGES = 4  # the encoder runs in the event loop for up to this many pictures


@dataclass(frozen=True)
class LatentLimits:
    max_images: int = 16  # pictures per /project request
    max_image_bytes: int = 2 * 1024 * 1024  # one encoded picture
    max_image_pixels: int = 2048 * 2048  # width x height of one picture, from its header
    max_upload_bytes: int = 8 * 1024 * 1024  # a whole /project body
    max_search: int = 50  # search steps per /project request
    max_terms: int = 16  # seeds and latents summed by /combine
    max_weight: float = 100.0  # of a term, and of a strength

    @property
    def image_limits(self) -> ImageLimits:
        return ImageLimits(max_bytes=self.max_image_bytes, max_pixels=self.max_image_pixels)


LATENT_LIMITS = LatentLimits()


def request_models(limits: Limits, latent_limits: LatentLimits = LATENT_LIMITS):
    """(ProjectRequest, EditRequest, CombineRequest) enforcing the limits."""
    bound = limits.max_latent_value
    Entry = Annotated[float, Field(ge=-bound, le=bound, allow_inf_nan=False)]
    Latent = Annotated[list[Entry], Field(min_length=1, max_length=limits.max_latent_length)]
    Seed = Annotated[int, Field(ge=0, le=MAX_SEED, strict=True)]
    Weight = Annotated[float, Field(ge=-latent_limits.max_weight, le=latent_limits.max_weight,
                                    allow_inf_nan=False)]
    Truncation = Annotated[float, Field(ge=limits.min_truncation, le=limits.max_truncation,
                                        allow_inf_nan=False)]
    Label = Annotated[int, Field(ge=0, strict=True)]
    point_rule = (f"a seed (an integer from 0 to {MAX_SEED}) or a latent vector (a list of "
                  f"nz numbers, each from {-bound:g} to {bound:g})")
    weight_rule = f"a number from {-latent_limits.max_weight:g} to {latent_limits.max_weight:g}"
    common = {"truncation": f"a number from {limits.min_truncation} to {limits.max_truncation}",
              "label": "an integer from 0 to the model's num_classes - 1", "model": MODEL_RULE}
    encoded_chars = 4 * -(-latent_limits.max_image_bytes // 3)

    class ProjectRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", json_schema_extra={
            "example": {"images": ["<base64 PNG>"], "search": 0}})
        RULES: ClassVar[dict[str, str]] = {
            "images": f"a list of 1 to {latent_limits.max_images} base64-encoded PNG or JPEG "
                      f"images, each at most {latent_limits.max_image_bytes} bytes",
            "search": f"an integer from 0 to {latent_limits.max_search}",
            "fit": f"one of {', '.join(FITS)}",
            "invert": f"one of {', '.join(INVERTS)}",
            "model": MODEL_RULE,
        }
        images: list[Annotated[str, Field(min_length=1, max_length=encoded_chars)]] = Field(
            min_length=1, max_length=latent_limits.max_images,
            description="Pictures to project, base64 PNG or JPEG (or upload them as multipart "
                        "file parts named images).")
        search: Annotated[int, Field(ge=0, le=latent_limits.max_search, strict=True)] = Field(
            0, description="Steps of torch-free refinement after the encoder (finite "
                           "differences in latent space, one batch per step); 0: the encoder's guess.")
        fit: Literal["auto", "digit", "crop"] = Field(
            "auto", description="digit: frame the ink as MNIST frames its digits; crop: resize "
                                "the shorter side and centre-crop; auto: digit for MNIST models.")
        invert: Literal["auto", "yes", "no"] = Field(
            "auto", description="auto: invert a light-ground picture for a dark-ground dataset.")
        model: ModelName = model_name_field()

    class EditRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", json_schema_extra={
            "example": {"start": 3, "direction": "sefa0", "strengths": [-3, -1.5, 0, 1.5, 3],
                        "format": "frames"}})
        RULES: ClassVar[dict[str, str]] = common | {
            "start": point_rule,
            "direction": "the name of a direction of GET /directions (sefa0, sefa1, ...)",
            "from_class": "an integer from 0 to the number of classes - 1",
            "to_class": "an integer from 0 to the number of classes - 1",
            "strengths": f"a list of 1 to {limits.max_steps} numbers, each {weight_rule}",
            "format": "one of frames, png, gif, array",
        }
        start: Seed | Latent = Field(description="A seed, or a latent vector of nz numbers.")
        direction: str | None = Field(None, max_length=64, description="A SeFa direction by "
                                      "name; or give from_class and to_class.")
        from_class: Label | None = None
        to_class: Label | None = None
        strengths: list[Weight] = Field(min_length=1, max_length=limits.max_steps, description=
                                        "One frame per strength: start + strength * direction.")
        truncation: Truncation | None = None
        label: Label | None = None
        format: Literal["frames", "png", "gif", "array"] = "frames"
        model: ModelName = model_name_field()

    class Term(BaseModel):
        model_config = ConfigDict(extra="forbid")
        seed: Seed | None = None
        latent: Latent | None = None
        weight: Weight = 1.0

    class CombineRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", json_schema_extra={
            "example": {"terms": [{"seed": 1, "weight": 1}, {"seed": 2, "weight": -1},
                                  {"seed": 3, "weight": 1}], "format": "png"}})
        RULES: ClassVar[dict[str, str]] = common | {
            "terms": f"a list of 1 to {latent_limits.max_terms} objects, each with a seed or a "
                     f"latent and a weight ({weight_rule})",
            "format": "one of json, png, array",
        }
        terms: list[Term] = Field(min_length=1, max_length=latent_limits.max_terms)
        truncation: Truncation | None = None
        label: Label | None = None
        format: Literal["json", "png", "array"] = "json"
        model: ModelName = model_name_field()

    return ProjectRequest, EditRequest, CombineRequest


# --- handlers: (generator, request, space, generate) -> (response, images made) ----------

@dataclass
class Pictures:
    """A /project request once read: the encoded pictures and the options."""

    images: list[bytes]
    search: int = 0
    fit: str = "auto"
    invert: str = "auto"
    model: str | None = None  # the served model's name; None: the default


async def project(g: OnnxGenerator, req: Pictures, *, space: LatentSpace, generate,
                  limits: LatentLimits = LATENT_LIMITS) -> tuple[Response, int]:
    """Pictures -> latents (encoder, then `search` steps), reconstructions, distances."""
    import anyio

    encoder = require_encoder(space)
    read = functools.partial(_read_all, req, g.card, limits.image_limits)
    # Small pictures cost less than a hop to a worker thread and back (a drawn digit
    # is a few kB); big ones would stall the event loop while they decode.
    if sum(len(data) for data in req.images) > INLINE_BYTES:
        targets = await anyio.to_thread.run_sync(read)
    else:
        targets = read()
    latents = encoder.encode(targets) if len(targets) <= INLINE_IMAGES else \
        await anyio.to_thread.run_sync(encoder.encode, targets)
    made = await generate(latents, None)
    before = pixel_rms(made, targets)
    count = len(made)
    if req.search:
        search = LatentSearch(latents, targets, made, req.search, seed=SEARCH_SEED)
        while not search.done:
            candidates = search.candidates()
            search.update(await generate(candidates, None))
            count += len(candidates)
        latents = search.z
        made = await generate(latents, None)
        count += len(made)
    body = {
        "latents": latents.tolist(), "distances": pixel_rms(made, targets).tolist(),
        "reconstructions": b64_pngs(made), "inputs": b64_pngs(targets),
        "search": {"steps": req.search, "distances_before": before.tolist()},
        "shape": list(g.card.output_shape), "model": model_field(g),
    }
    return JSONResponse(body), count


def _read_all(req: Pictures, card, limits: ImageLimits) -> np.ndarray:
    return np.stack([read_image(data, card, field=f"images[{k}]", limits=limits, fit=req.fit,
                                invert=req.invert) for k, data in enumerate(req.images)])


async def edit(g: OnnxGenerator, req, *, space: LatentSpace, generate) -> tuple[Response, int]:
    """Frames of a seed or latent moved along a direction by each strength."""
    plan = plan_edit(g.card, require_directions(space), req.start, strengths=req.strengths,
                     direction=req.direction, from_class=req.from_class, to_class=req.to_class,
                     truncation=req.truncation, label=req.label, format=req.format)
    images = await generate(plan.latents, plan.labels)
    n = len(images)
    if req.format == "array":
        return JSONResponse({"strengths": req.strengths, "shape": list(images.shape),
                             **labels_field(plan.labels), "latents": plan.latents.tolist(),
                             "images": images.tolist()}), n
    if req.format == "png":
        return Response(gen.strip_png(images), media_type="image/png"), n
    if req.format == "gif":
        return Response(gen.animated_gif(images), media_type="image/gif"), n
    return JSONResponse({"strengths": req.strengths, **labels_field(plan.labels),
                         "shape": list(g.card.output_shape), "frames": b64_pngs(images),
                         "latents": plan.latents.tolist(), "model": model_field(g)}), n


async def combine(g: OnnxGenerator, req, *, space: LatentSpace, generate) -> tuple[Response, int]:
    """The image of a weighted sum of seeds and latents."""
    terms = []
    for k, term in enumerate(req.terms):
        if (term.seed is None) == (term.latent is None):
            raise GenerationError(f"terms[{k}]", f"terms[{k}] needs exactly one of seed and latent")
        terms.append((term.seed if term.seed is not None else term.latent, term.weight))
    plan = plan_combine(g.card, terms, truncation=req.truncation, label=req.label,
                        format=req.format)
    images = await generate(plan.latents, plan.labels)
    if req.format == "array":
        return JSONResponse({"shape": list(images.shape), "latent": plan.latents[0].tolist(),
                             "images": images.tolist()}), 1
    png = gen.png_images(images)[0]
    if req.format == "png":
        return Response(png, media_type="image/png"), 1
    return JSONResponse({"image": gen.b64(png), "latent": plan.latents[0].tolist(),
                         **labels_field(plan.labels), "shape": list(g.card.output_shape),
                         "model": model_field(g)}), 1


def directions_body(g: OnnxGenerator, space: LatentSpace) -> dict[str, Any]:
    """What GET /directions answers."""
    d = require_directions(space)
    classes = None
    if d.class_means is not None:
        classes = [{"class": k, "samples": count, "mean": d.class_means[k].tolist()}
                   for k, count in enumerate(d.class_counts)]
    return {"sefa": [{"name": name, "eigenvalue": float(value), "vector": vector.tolist()}
                     for name, value, vector in zip(d.names, d.eigenvalues, d.sefa)],
            "classes": classes, "notes": d.notes, "encoder": space.encoder is not None,
            "model": model_field(g)}


# --- reading a /project request: JSON or multipart ----------------------------------------

async def read_pictures(request: Request, model: type[BaseModel],
                        limits: LatentLimits = LATENT_LIMITS) -> Pictures:
    """The pictures and options of a /project request; GenerationError (400) naming the
    field when they are not usable."""
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if content_type == "multipart/form-data":
        return await _read_multipart(request, model, limits)
    data = await request.json()
    try:
        req = model.model_validate(data)  # the guard checked it already; this types it
    except ValidationError as exc:
        described = describe(exc, model)
        raise GenerationError(described["detail"][0]["loc"][0], described["error"]) from None
    images = []
    for k, text in enumerate(req.images):
        try:
            images.append(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            raise GenerationError(f"images[{k}]", f"images[{k}]: not base64") from None
    return Pictures(images, req.search, req.fit, req.invert, req.model)


async def _read_multipart(request: Request, model: type[BaseModel], limits: LatentLimits) -> Pictures:
    from starlette.datastructures import UploadFile

    try:
        form = await request.form(max_files=limits.max_images, max_fields=8, max_part_size=1024)
    except Exception as exc:  # starlette's MultiPartException and the parser's errors
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        raise GenerationError("images", f"images: a bad multipart upload ({message}); send 1 to "
                              f"{limits.max_images} pictures as file parts named images") from None
    try:
        images, fields = [], {}
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if name not in ("images", "image"):
                    raise GenerationError(name, f"unknown file part {name!r}: name each picture images")
                data = await value.read(limits.max_image_bytes + 1)
                if len(data) > limits.max_image_bytes:
                    raise GenerationError(f"images[{len(images)}]", f"images[{len(images)}]: at most "
                                          f"{limits.max_image_bytes} bytes per image")
                images.append(data)
            else:
                fields[name] = int(value) if name == "search" and value.strip().isdigit() else value
    finally:
        await form.close()
    if not images:
        raise GenerationError("images", "images: upload at least one picture as a file part named images")
    try:  # the options, checked by the same model as JSON ("x": a stand-in for each picture)
        req = model.model_validate({**fields, "images": ["x"] * len(images)})
    except ValidationError as exc:
        described = describe(exc, model)
        raise GenerationError(described["detail"][0]["loc"][0], described["error"]) from None
    return Pictures(images, req.search, req.fit, req.invert, req.model)
