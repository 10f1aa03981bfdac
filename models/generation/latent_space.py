"""The way back and the way across: an exported generator's encoder and edit directions,
and what the service and the CLI do with them, without torch.

Both travel beside the generator file as sidecars, each naming the SHA-256 of the
generator file it belongs to (a sidecar of another generator is ignored, with the
reason), so a model-store entry or a folder carries them along:

    mnist.onnx              the generator (its card inside)
    mnist.encoder.onnx      image (N, C, S, S) -> latent (N, nz); `dcgan train-encoder`
    mnist.latent.json       SeFa directions and class mean latents; `dcgan directions`

Directions (`GET /directions`): `sefa0`, `sefa1`, ... are the top eigenvectors of
W^T W for the generator's first layer W (Shen & Zhou 2021, "closed-form factorization":
the latent directions that first layer stretches most), unit vectors with their
eigenvalues; the class means are the mean latents of samples the evaluation classifier
puts in each class (the DCGAN paper's latent arithmetic), and `class a -> b` moves
by (mean b - mean a) per unit of strength.

Refinement without torch (`LatentSearch`): finite differences in latent space, run as
one ONNX Runtime batch per step for every image together: antithetic probes around the
current latent estimate the gradient of the pixel error, and a few points along the
last estimate serve as a line search; the best latent seen is kept, so a step never
makes a projection worse.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models import latent as lat
from models.card import ModelCard
from models.generation.errors import GenerationError, ModelLoadError
from models.generation.plan import EndPoint, Plan, check_format, check_label, end_point_latent

logger = logging.getLogger("dcgan.generation")

ENCODER_KEY = "dcgan.encoder"
DIRECTIONS_FORMAT = 1


# --- sidecars ----------------------------------------------------------------------------

def sidecar_path(generator_path: str | Path, kind: str) -> Path:
    """`mnist.onnx` -> `mnist.encoder.onnx` (kind "encoder") or `mnist.latent.json`
    (kind "latent"); in a model-store entry, beside `generator.onnx` likewise."""
    path = Path(generator_path)
    suffix = {"encoder": ".encoder.onnx", "latent": ".latent.json"}[kind]
    return path.with_name(path.stem + suffix)


def file_digest(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Directions:
    """SeFa directions (k, nz) with their eigenvalues, and class mean latents (K, nz)."""

    sefa: np.ndarray
    eigenvalues: np.ndarray
    class_means: np.ndarray | None = None
    class_counts: list[int] | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [f"sefa{k}" for k in range(len(self.sefa))]

    def to_dict(self, generator_digest: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "format": DIRECTIONS_FORMAT, "generator_sha256": generator_digest,
            "nz": int(self.sefa.shape[1]),
            "sefa": {"eigenvalues": self.eigenvalues.tolist(), "vectors": self.sefa.tolist()},
            "notes": self.notes,
        }
        if self.class_means is not None:
            body["classes"] = {"means": self.class_means.tolist(), "counts": self.class_counts}
        return body

    @classmethod
    def from_dict(cls, data: dict[str, Any], nz: int) -> Directions:
        sefa = np.asarray(data["sefa"]["vectors"], np.float32)
        eigenvalues = np.asarray(data["sefa"]["eigenvalues"], np.float64)
        if sefa.ndim != 2 or sefa.shape[1] != nz or len(eigenvalues) != len(sefa):
            raise ValueError(f"SeFa vectors of shape {list(sefa.shape)} for nz={nz}")
        means = counts = None
        if "classes" in data:
            means = np.asarray(data["classes"]["means"], np.float32)
            counts = [int(c) for c in data["classes"]["counts"]]
            if means.ndim != 2 or means.shape[1] != nz:
                raise ValueError(f"class means of shape {list(means.shape)} for nz={nz}")
        return cls(sefa, eigenvalues, means, counts, dict(data.get("notes", {})))


class OnnxEncoder:
    """The encoder sidecar in ONNX Runtime: images (N, C, S, S) -> latents (N, nz)."""

    def __init__(self, path: str | Path, card: ModelCard, generator_digest: str, *,
                 threads: int | None = None, providers: Sequence | None = None) -> None:
        import onnxruntime as ort

        from models.generation.onnx_generator import cpu_threads

        self.path = Path(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(threads)) if threads else cpu_threads()
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options,
                                                providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelLoadError(f"{path}: ONNX Runtime cannot open it: {first}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            self.info = json.loads(meta[ENCODER_KEY])
        except (KeyError, ValueError):
            raise ModelLoadError(f"{path}: not an encoder exported by `dcgan train-encoder`") from None
        if self.info.get("generator_sha256") != generator_digest:
            raise ModelLoadError(f"{path.name} belongs to another generator (its digest differs): "
                                 "train one for this file with `dcgan train-encoder`")
        shape = self.session.get_inputs()[0].shape[1:]
        if list(shape) != list(card.output_shape) or self.info.get("nz") != card.nz:
            raise ModelLoadError(f"{path.name}: takes images of shape {shape} to nz={self.info.get('nz')}, "
                                 f"but the generator makes {list(card.output_shape)} from nz={card.nz}")

    def encode(self, images: np.ndarray) -> np.ndarray:
        feed = {"images": np.ascontiguousarray(images, dtype=np.float32)}
        return self.session.run(["latents"], feed)[0]


@dataclass
class LatentSpace:
    """What a generator offers beyond sampling: its encoder and directions, each None
    when absent or refused (`problems` says why, one line each)."""

    encoder: OnnxEncoder | None = None
    directions: Directions | None = None
    digest: str = ""
    problems: list[str] = field(default_factory=list)


def open_latent_space(generator_path: str | Path, card: ModelCard, *, threads: int | None = None,
                      providers: Sequence | None = None) -> LatentSpace:
    """The sidecars beside `generator_path` that belong to it (by digest)."""
    space = LatentSpace(digest=file_digest(generator_path))
    encoder_path = sidecar_path(generator_path, "encoder")
    if encoder_path.is_file():
        try:
            space.encoder = OnnxEncoder(encoder_path, card, space.digest, threads=threads,
                                        providers=providers)
        except ModelLoadError as exc:
            space.problems.append(str(exc))
    directions_path = sidecar_path(generator_path, "latent")
    if directions_path.is_file():
        try:
            data = json.loads(directions_path.read_text())
            if data.get("generator_sha256") != space.digest:
                raise ValueError("it belongs to another generator (its digest differs): "
                                 "make one for this file with `dcgan directions`")
            space.directions = Directions.from_dict(data, card.nz)
        except (ValueError, KeyError, TypeError) as exc:
            space.problems.append(f"{directions_path.name}: {exc}")
    for line in space.problems:
        logger.warning("ignoring a sidecar: %s", line)
    return space


def require_encoder(space: LatentSpace) -> OnnxEncoder:
    if space.encoder is None:
        why = "; ".join(p for p in space.problems if "encoder" in p) or \
            "none was trained for it (`dcgan train-encoder MODEL`)"
        raise GenerationError("images", f"images: this model has no encoder to project with: {why}")
    return space.encoder


def require_directions(space: LatentSpace) -> Directions:
    if space.directions is None:
        raise GenerationError("direction", "direction: this model has no directions: make them with "
                              "`dcgan directions MODEL` (or export it again)")
    return space.directions


# --- edits and sums -----------------------------------------------------------------------

def direction_vector(directions: Directions, name: str | None, from_class: int | None,
                     to_class: int | None) -> np.ndarray:
    """A named SeFa direction, or (mean of to_class - mean of from_class)."""
    if (name is None) == (from_class is None and to_class is None):
        raise GenerationError("direction", "give either direction (one of "
                              f"{', '.join(directions.names)}) or from_class and to_class")
    if name is not None:
        if name not in directions.names:
            raise GenerationError("direction", f"direction must be one of "
                                  f"{', '.join(directions.names)}, got {name!r}")
        return directions.sefa[directions.names.index(name)]
    means = directions.class_means
    if means is None:
        raise GenerationError("from_class", "this model has no class directions (its dataset "
                              "has no labels, or it is class-conditional)")
    for key, value in (("from_class", from_class), ("to_class", to_class)):
        if value is None or not 0 <= value < len(means):
            raise GenerationError(key, f"{key} must be an integer from 0 to {len(means) - 1}, "
                                  f"got {value}")
    return means[to_class] - means[from_class]


def plan_edit(card: ModelCard, directions: Directions, start: EndPoint, *,
              strengths: Sequence[float], direction: str | None = None,
              from_class: int | None = None, to_class: int | None = None,
              truncation: float | None = None, label: int | None = None,
              format: str = "frames") -> Plan:
    """The frames of `start` (a seed or latent) moved along a direction by each strength:
    latent + strength * vector."""
    check_label(label, card.num_classes)
    check_format(card, format)
    if not strengths:
        raise GenerationError("strengths", "strengths must list at least one number")
    if truncation is not None and not truncation > 0:
        raise GenerationError("truncation", f"truncation must be above 0, got {truncation}")
    origin = end_point_latent("start", start, card.nz, truncation)
    vector = direction_vector(directions, direction, from_class, to_class)
    amounts = np.asarray(strengths, np.float64)[:, None]
    latents = (origin[None, :] + amounts * vector[None, :]).astype(np.float32)
    return Plan(latents, _labels(card, start, len(latents), label))


def plan_combine(card: ModelCard, terms: Sequence[tuple[EndPoint, float]], *,
                 truncation: float | None = None, label: int | None = None,
                 format: str = "png") -> Plan:
    """One latent: the weighted sum of the terms' seeds or latents."""
    check_label(label, card.num_classes)
    check_format(card, format)
    if not terms:
        raise GenerationError("terms", "terms must list at least one seed or latent")
    total = np.zeros(card.nz, np.float64)
    for k, (value, weight) in enumerate(terms):
        total += float(weight) * end_point_latent(f"terms[{k}]", value, card.nz, truncation)
    if card.num_classes and label is None:
        raise GenerationError("label", "label is required for a class-conditional model "
                              f"(0 to {card.num_classes - 1})")
    labels = np.full(1, label, np.int64) if card.num_classes else None
    return Plan(total[None, :].astype(np.float32), labels)


def _labels(card: ModelCard, start: EndPoint, count: int, label: int | None) -> np.ndarray | None:
    if not card.num_classes:
        return None
    from models.generation.plan import is_seed

    if label is None and not is_seed(start):
        raise GenerationError("label", "label is required for a class-conditional model "
                              f"when start is a latent vector (0 to {card.num_classes - 1})")
    return np.full(count, label if label is not None else int(start) % card.num_classes, np.int64)


# --- projection ---------------------------------------------------------------------------

def pixel_rms(made: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per image, the RMS pixel difference in units of the full range (0..1)."""
    diff = (made.astype(np.float64) - targets.astype(np.float64)) / 2.0
    return np.sqrt((diff ** 2).reshape(len(diff), -1).mean(axis=1))


class LatentSearch:
    """Torch-free refinement of projected latents (module docstring), for all images at
    once: `candidates()` gives one batch to generate, `update(images)` takes its outputs;
    `steps` rounds. Seeded, so a request gives the same latents every time."""

    def __init__(self, latents: np.ndarray, targets: np.ndarray, first: np.ndarray,
                 steps: int, *, probes: int = 16, sigma: float = 0.1, seed: int = 0) -> None:
        self.z = np.asarray(latents, np.float32).copy()  # (N, nz): the best so far
        self.targets = targets
        self.loss = pixel_rms(first, targets)  # of self.z
        self.steps, self.pairs, self.sigma = steps, probes // 2, sigma
        self.rng = np.random.default_rng(seed)
        self.alpha = np.full(len(self.z), 0.5)  # line-search step per image
        self.direction = None  # (N, nz) unit descent direction from the last probes
        self.round = 0
        self.line = (0.5, 1.0, 2.0)

    @property
    def done(self) -> bool:
        return self.round >= self.steps

    def candidates(self) -> np.ndarray:
        """This round's latents, all images' together: (N * per_image, nz)."""
        n, nz = self.z.shape
        self._eps = self.rng.standard_normal((n, self.pairs, nz)).astype(np.float32)
        parts = [self.z[:, None] + self.sigma * self._eps,  # antithetic probes (N, 2P, nz)
                 self.z[:, None] - self.sigma * self._eps]
        if self.direction is not None:  # along the last descent direction (N, L, nz)
            lengths = np.asarray(self.line)[None, :, None] * self.alpha[:, None, None]
            parts.append(self.z[:, None] - lengths * self.direction[:, None])
        self._points = np.concatenate(parts, axis=1)  # (N, per_image, nz)
        return self._points.reshape(-1, nz)

    def update(self, images: np.ndarray) -> None:
        """Take the images of `candidates()`; keep each image's best latent so far."""
        n, per_image = self._points.shape[:2]
        targets = np.repeat(self.targets, per_image, axis=0)
        losses = pixel_rms(images, targets).reshape(n, per_image)
        pairs = self.pairs
        slopes = losses[:, :pairs] - losses[:, pairs:2 * pairs]  # (N, P): central differences
        gradient = (slopes[:, :, None] * self._eps).sum(axis=1)  # (N, nz), up to a scale
        norm = np.linalg.norm(gradient, axis=1, keepdims=True)
        best = losses.argmin(axis=1)
        for i in range(n):
            k = best[i]
            if losses[i, k] < self.loss[i]:
                self.z[i], self.loss[i] = self._points[i, k], losses[i, k]
                if k >= 2 * pairs:  # a line-search point won: keep its step length
                    self.alpha[i] *= self.line[k - 2 * pairs]
            elif self.direction is not None:
                self.alpha[i] *= 0.5
        self.direction = (gradient / np.maximum(norm, 1e-12)).astype(np.float32)
        self.round += 1


def search_latents(generate, latents: np.ndarray, targets: np.ndarray, steps: int,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Run LatentSearch with a synchronous `generate(latents) -> images`; returns the
    refined latents and their reconstructions."""
    made = generate(latents)
    search = LatentSearch(latents, targets, made, steps, seed=seed)
    while not search.done:
        search.update(generate(search.candidates()))
    return search.z, generate(search.z)


def check_latents(values: Sequence[Sequence[float]], nz: int, field: str) -> np.ndarray:
    """Client-sent latents (a list of vectors) -> (N, nz) float32."""
    rows = [lat.as_latent(v, nz, f"{field}[{k}]") for k, v in enumerate(values)]
    return np.stack(rows) if rows else np.zeros((0, nz), np.float32)
