"""Requests -> what to generate: the latents and class labels of a sample or a walk.

The label rule lives here and nowhere else. A sample draws the given `label` for every
image, else `seed % num_classes` per seed (so a grid of consecutive seeds shows every
class). A walk draws the given `label` for every frame, else each end point's own class
(its seed % num_classes), switching at the midpoint, so that its first and last frames
are the samples of its end points; a latent-vector end point has no class, so a
class-conditional model then needs a `label`.

The checks that depend on the model (label range, a label for a model without classes,
latent length = nz, a picture format for a model of points) raise GenerationError
naming the request field; limits that do not depend on the model (how many images a
request may ask for) belong to the caller.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from models import latent as lat
from models.card import ModelCard
from models.generation.errors import GenerationError

# An end point of a walk: a seed, or a latent vector of nz numbers.
EndPoint = int | Sequence[float]


class Plan(NamedTuple):
    latents: np.ndarray  # (N, nz) float32
    labels: np.ndarray | None  # (N,) int64; None for a model without classes
    seeds: list[int] | None = None  # a sample's seeds, one per image


def check_label(label: int | None, num_classes: int) -> None:
    if label is None:
        return
    if num_classes == 0:
        raise GenerationError("label", "label: this model is not class-conditional; leave it out")
    if not 0 <= label < num_classes:
        raise GenerationError("label", f"label must be an integer from 0 to {num_classes - 1}, got {label}")


def check_format(card: ModelCard, format: str) -> None:
    """Every format but `array` is a picture, which a model of points cannot make."""
    if not card.is_image and format != "array":
        raise GenerationError("format", f"format {format} needs an image model; this model makes "
                              f"vectors of shape {list(card.output_shape)}: use format array")


def sample_labels(num_classes: int, seeds: Sequence[int], label: int | None) -> np.ndarray | None:
    """The class of each seed's image: `label` for all, else seed % num_classes."""
    if not num_classes:
        return None
    if label is not None:
        return np.full(len(seeds), label, np.int64)
    return lat.labels_for_seeds(seeds, num_classes)


def interpolation_labels(num_classes: int, start: EndPoint, end: EndPoint, steps: int,
                         label: int | None) -> np.ndarray | None:
    """The class of each frame of a walk (see the module docstring)."""
    if not num_classes:
        return None
    if label is None and not (is_seed(start) and is_seed(end)):
        raise GenerationError("label", "label is required for a class-conditional model "
                              f"when start or end is a latent vector (0 to {num_classes - 1})")
    first, last = ((label, label) if label is not None
                   else (int(start) % num_classes, int(end) % num_classes))
    # Labels cannot be blended: each end point keeps its own class, switching halfway.
    t = np.linspace(0.0, 1.0, steps)
    return np.where(t < 0.5, first, last).astype(np.int64)


def plan_sample(card: ModelCard, *, seed: int | None = None, n: int = 1,
                seeds: Sequence[int] | None = None, truncation: float | None = None,
                label: int | None = None, format: str = "png") -> Plan:
    """Seeds `seed` .. `seed + n - 1` (a random first seed when None), or the given
    `seeds`, -> their latents and labels."""
    check_label(label, card.num_classes)
    check_format(card, format)
    if seeds is None:
        if n < 1:
            raise GenerationError("n", f"n must be at least 1, got {n}")
        if seed is None:
            seed = secrets.randbelow(lat.MAX_SEED - n + 2)
        if seed + n - 1 > lat.MAX_SEED:
            raise GenerationError("seed", f"seed + n - 1 must not exceed {lat.MAX_SEED}")
        seeds = range(seed, seed + n)
    seeds = [_seed("seed", s) for s in seeds]
    if not seeds:
        raise GenerationError("seed", "at least one seed is needed")
    latents = lat.latents_from_seeds(seeds, card.nz, _truncation(truncation))
    return Plan(latents, sample_labels(card.num_classes, seeds, label), seeds)


def plan_interpolation(card: ModelCard, start: EndPoint, end: EndPoint, *, steps: int = 8,
                       method: str = "slerp", truncation: float | None = None,
                       label: int | None = None, format: str = "png") -> Plan:
    """A walk from `start` to `end` in `steps` frames, end points included: the latent
    path and the labels of its frames."""
    check_label(label, card.num_classes)
    check_format(card, format)
    if method not in lat.METHODS:
        raise GenerationError("method", f"method must be one of {', '.join(lat.METHODS)}, got {method!r}")
    if steps < 2:
        raise GenerationError("steps", f"steps must be at least 2, got {steps}")
    truncation = _truncation(truncation)
    first = end_point_latent("start", start, card.nz, truncation)
    last = end_point_latent("end", end, card.nz, truncation)
    labels = interpolation_labels(card.num_classes, start, end, steps, label)
    return Plan(lat.interpolate(first, last, steps, method), labels)


def is_seed(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def end_point_latent(field: str, value: EndPoint, nz: int, truncation: float | None) -> np.ndarray:
    """The (nz,) latent of a seed (redrawn beyond `truncation`) or of a given vector
    (clipped to it)."""
    if is_seed(value):
        return lat.latent_from_seed(_seed(field, value), nz, truncation)
    try:
        values = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise GenerationError(field, f"{field} must be a seed or a list of {nz} numbers") from None
    try:
        vector = lat.as_latent(values, nz, field)
    except ValueError as exc:  # its messages name the field
        raise GenerationError(field, str(exc)) from None
    return vector if truncation is None else lat.truncate(vector, truncation)


def _seed(field: str, value) -> int:
    try:
        if not is_seed(value):
            raise TypeError
        return lat.check_seed(int(value))
    except (TypeError, ValueError):
        raise GenerationError(field, f"{field} must be an integer from 0 to {lat.MAX_SEED}, "
                              f"got {value}") from None


def _truncation(value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise GenerationError("truncation", f"truncation must be above 0, got {value}")
    return value


def plan_tensors(card: ModelCard, *, seeds: Sequence[int] | None = None,
                 latents: np.ndarray | None = None, labels: Sequence[int] | None = None,
                 truncation: float | None = None) -> Plan:
    """A batch given as tensors (the Open Inference Protocol's inputs): `seeds` (their
    latents, as `plan_sample` draws them, so a seed gives the pixels of /sample) or
    `latents` (N, nz) (clipped to `truncation`), with one label per item or the label
    rule's (seed % num_classes; latent vectors have no class, so a conditional model then
    needs labels). Errors name the input: seed, z or label."""
    if (seeds is None) == (latents is None):
        raise GenerationError("seed", "give either seed or z")
    if seeds is not None:
        plan = plan_sample(card, seeds=seeds, truncation=truncation, format="array")
    else:
        latents = np.asarray(latents, np.float32)
        if latents.ndim != 2 or latents.shape[1] != card.nz or not len(latents):
            raise GenerationError("z", f"z must have shape [N, {card.nz}], got {list(latents.shape)}")
        if not np.isfinite(latents).all():
            raise GenerationError("z", "z must hold finite numbers only (no NaN or infinity)")
        if card.num_classes and labels is None:
            raise GenerationError("label", "label is required for a class-conditional model "
                                  f"when z is given (0 to {card.num_classes - 1})")
        _truncation(truncation)
        latents = latents if truncation is None else lat.truncate(latents, truncation)
        plan = Plan(latents, None)
    if labels is None:
        return plan
    labels = np.asarray(labels, np.int64).reshape(-1)
    if len(labels) != len(plan.latents):
        raise GenerationError("label", f"label must have one entry per item: {len(plan.latents)}, "
                              f"got {len(labels)}")
    for label in np.unique(labels):
        check_label(int(label), card.num_classes)
    return plan._replace(labels=labels)
