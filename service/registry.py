"""The generators one worker serves, by name: each loads in a background thread of its
own, gets its own batcher, and is ready, loading, or failed with a one-line reason,
while the others serve.

`Registry.serving(name)` is what every endpoint calls first: the ready model of that
name (None: the default, the first configured), or `UnknownModel` (404, listing the
names served) or `NotReady` (503, naming the model and why). The names come from the
settings (DCGAN_MODELS, service/settings.py) or the defaults (every bundled generator,
else every `dcgan-*:latest` in the model store), so they are known before any loads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models import generation as gen
from models.generation import ModelLoadError, OnnxGenerator
from service import metrics
from service.readiness import WorkerReadiness
from service.runtime import Batcher, CallGate
from service.settings import Settings

logger = logging.getLogger("bentoml.dcgan")


class ServeError(Exception):
    """A request the registry cannot route: `status` and a one-line message."""

    status = 503
    field: str | None = None


class UnknownModel(ServeError):
    status, field = 404, "model"


class NotReady(ServeError):
    status = 503


@dataclass
class Served:
    """One configured generator and its state in this worker."""

    name: str
    spec: str
    error: str | None = None
    path: Path | None = None
    version: str | None = None
    digest: str | None = None
    generator: OnnxGenerator | None = None
    batcher: Batcher | None = None
    # the generator's encoder and edit directions (its sidecars), once it has loaded
    latent: gen.LatentSpace = field(default_factory=gen.LatentSpace)

    @property
    def card(self):
        return self.generator.card if self.generator else None

    @property
    def state(self) -> str:
        return "ready" if self.batcher else "failed" if self.error else "loading"

    def summary(self, ready_everywhere: bool) -> dict[str, Any]:
        """What GET /models says of it."""
        body: dict[str, Any] = {
            "name": self.name, "version": self.version, "digest": self.digest,
            "file": self.path.name if self.path else None, "ready": ready_everywhere,
            "state": self.state, "error": self.error,
        }
        if (card := self.card) is not None:
            quality = card.quality or {}
            body.update(
                output_shape=list(card.output_shape), nz=card.nz, num_classes=card.num_classes,
                classes=list(range(card.num_classes)), providers=self.generator.providers,
                card={"name": card.name, "arch": card.arch, "dataset": card.dataset.get("name"),
                      "step": card.step, "created": card.created, "weights": card.weights,
                      # the quality figures a person compares models by, in both feature
                      # networks, with the real-vs-real values beside them
                      **{key: quality.get(key) for key in QUALITY_SUMMARY}},
            )
        return body


QUALITY_SUMMARY = ("fd_ratio", "fd2_ratio", "precision", "precision_floor", "precision2",
                   "precision2_floor", "recall", "recall_floor", "recall2", "recall2_floor",
                   "label_accuracy")


class Registry:
    """The models of one worker. `start()` loads each in its own thread."""

    def __init__(self, settings: Settings, *, error: str | None = None,
                 specs: list[tuple[str, str]] | None = None, service_name: str = "DCGAN",
                 readiness: WorkerReadiness | None = None) -> None:
        self.settings, self.error, self.service_name = settings, error, service_name
        self.readiness = readiness or WorkerReadiness(1, None)
        self.gate = CallGate()
        self.models: dict[str, Served] = {}
        if error is None:
            try:
                specs = specs or settings.model_specs or [
                    (gen.model_name(s), s) for s in gen.default_specs()]
            except ModelLoadError as exc:
                self.error = str(exc)
                logger.error("cannot serve a generator: %s", self.error)
        if self.error is None:
            self.models = {name: Served(name, spec) for name, spec in specs}
            if len(self.models) != len(specs):  # two defaults with one name
                self.error = f"two generators share a name in {', '.join(s for _, s in specs)}"
                self.models = {}
        self.default = next(iter(self.models), None)
        for name in self.models or [""]:
            metrics.set_ready(name, False)

    def start(self) -> None:
        for served in self.models.values():
            threading.Thread(target=self._load, args=(served,), name=f"dcgan-load-{served.name}",
                             daemon=True).start()

    def _load(self, served: Served) -> None:
        s = self.settings
        try:
            served.path, served.version = gen.resolve_model(served.spec)
            served.digest = gen.file_digest(served.path)
            generator = OnnxGenerator(served.path, device=s.device, threads=s.ort_threads,
                                      version=served.version)
            # On a GPU every batch size the batcher can form gets its kernels now (the
            # first call of a size costs more there); on the CPU the extremes suffice.
            on_gpu = generator.provider == "CUDAExecutionProvider"
            generator.warm_up(range(1, s.max_batch_size + 1) if on_gpu
                              else sorted({1, s.max_batch_size}))
            name, service_name = served.name, self.service_name
            batcher = Batcher(
                generator, enabled=s.batching, max_batch_size=s.max_batch_size,
                max_latency_ms=s.max_latency_ms, wait=s.batch_wait,
                inline_images=s.inline_images, gate=self.gate,
                latency_target_ms=s.latency_target_ms, name=name,
                on_wait=lambda sec: metrics.observe_queue_wait(name, sec),
                on_call=lambda sec, n, r: metrics.observe_inference(sec, n, r, service_name, name),
            )
        except Exception as exc:  # whatever it is: one line, not a traceback loop
            served.error = str(exc) if isinstance(exc, ModelLoadError) else f"{type(exc).__name__}: {exc}"
            logger.error("cannot serve a generator: %s: %s", served.name, served.error)
            return
        card = generator.card
        served.latent = gen.open_latent_space(served.path, card, threads=s.ort_threads)
        logger.info(
            "serving %s (%s, version %s, step %d, %s) from %s with providers %s; batching %s",
            served.name, card.name, generator.version, card.step,
            "x".join(map(str, card.output_shape)), served.path.name, ",".join(generator.providers),
            f"on (up to {s.max_batch_size} images per call)" if s.batching else "off",
        )
        metrics.set_model(served.name, card.name, generator.version, generator.provider)
        served.generator, served.batcher = generator, batcher
        metrics.set_ready(served.name, True)
        self.readiness.add(served.name)

    # --- routing ----------------------------------------------------------------------
    def get(self, name: str | None) -> Served:
        """The model called `name` (None: the default), whatever its state."""
        if self.error:
            raise NotReady(f"not ready: {self.error}")
        served = self.models.get(self.default if name is None else name)
        if served is None:
            raise UnknownModel(f"model {name!r} is not served here; the models are: "
                               f"{', '.join(self.models)}")
        return served

    def serving(self, name: str | None) -> Served:
        """The ready model called `name` (None: the default)."""
        served = self.get(name)
        if served.batcher is None:
            reason = served.error or "it is still loading"
            raise NotReady(f"model {served.name} is not ready: {reason}")
        return served

    def label(self, name: str | None) -> str:
        """The metric label for a request naming `name`: "" unless it is served here."""
        if name is None:
            return self.default or ""
        return name if isinstance(name, str) and name in self.models else ""

    def ready_everywhere(self) -> frozenset[str]:
        return frozenset() if self.error else self.readiness.ready_everywhere()

    def loading(self) -> bool:
        """Some model of this worker is still loading (neither ready nor failed)."""
        return any(m.batcher is None and m.error is None for m in self.models.values())

    def all_ready(self) -> bool:
        """Every configured model loaded and warmed up in every worker."""
        return bool(self.models) and self.ready_everywhere() >= set(self.models)

    def not_ready_reason(self) -> str | None:
        """Why this server is not ready, in words (None: it is): what /readyz says."""
        if self.error:
            return f"not ready: {self.error}"
        if not self.models:
            return "not ready: no generator configured"
        here = [f"model {m.name} {'failed: ' + m.error if m.error else 'loading'}"
                for m in self.models.values() if m.batcher is None]
        if here and self.readiness.shared:
            here[0] = f"worker {self.readiness.index}: {here[0]}"
        lacking = here + self.readiness.lagging(self.models)
        return f"not ready: {'; '.join(lacking)}" if lacking else None

    def listing(self) -> dict[str, Any]:
        """What GET /models answers."""
        everywhere = self.ready_everywhere()
        return {"default": self.default, "ready": self.all_ready(), "error": self.error,
                "workers": self.readiness.workers,
                "models": [m.summary(m.name in everywhere) for m in self.models.values()]}

    def shutdown(self) -> None:
        self.readiness.withdraw()
        for served in self.models.values():
            if served.batcher is not None:
                served.batcher.shutdown()


def known_names(registry: Callable[[], Registry | None]) -> Callable[[str | None], str]:
    """For the guard: the metric label of a requested name (see Registry.label)."""

    def label(name: str | None) -> str:
        current = registry()
        return current.label(name) if current is not None else ""

    return label
