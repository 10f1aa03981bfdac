"""The generator at run time: find the ONNX file, open an ONNX Runtime session on the
right device, read its model card, warm it up, and batch concurrent calls into one.

Batching. BentoML 1.4 merges requests for a `batchable=True` API only when they arrive
over HTTP: a public endpoint that calls such an API (on another service through
`bentoml.depends`, or on `self`) makes an internal HTTP call through BentoML's aiohttp
client, which under concurrency answers some calls with "Cannot write to closing
transport" (BentoML issue #4971; measured here: 31 failures in ~600 calls at 8 clients
with the call on `self`), and costs a second trip through the middleware stack per
request. So the public endpoints feed BentoML's adaptive-batching dispatcher
(`CorkDispatcher`, the very object BentoML builds for a batchable API) directly, in the
same process: same algorithm (one batch in flight per worker, a latency model fitted
as it runs, 503 when a request would wait past `max_latency_ms`), no internal hop.
Batch sizes are counted in images. A request for at least `max_batch_size` images has
nothing to merge with and goes straight to ONNX Runtime: through the dispatcher it
would only pay for the dispatcher polling its queue every millisecond while a batch is
in flight, which on a small CPU slows ONNX Runtime's own threads (measured: n=64
requests at 4 clients, 15% fewer requests/s than without batching). Either way, one
ONNX Runtime call runs at a time per worker.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.card import CardError, ModelCard

logger = logging.getLogger("dcgan.service")

DEFAULT_TAG = "dcgan-mnist:latest"
STORE_FILE = "generator.onnx"  # the file inside a model-store entry
BUNDLED = Path(__file__).resolve().parent.parent / "models" / "pretrained" / "dcgan-mnist.onnx"
DEVICES = ("auto", "cpu", "cuda")


class ModelLoadError(RuntimeError):
    """The generator cannot be served; the message says why, in one line."""


class Overloaded(RuntimeError):
    """A request waited in the batching queue longer than the latency limit."""


def resolve_model(spec: str | None) -> tuple[Path, str]:
    """(path of the .onnx file, version) for DCGAN_MODEL: a path, a model-store tag, or
    unset (the store's default tag if present, else the bundled file)."""
    if spec and (spec.endswith(".onnx") or os.sep in spec or Path(spec).exists()):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ModelLoadError(f"DCGAN_MODEL={spec}: no such file")
        return path, "file"
    import bentoml
    from bentoml.exceptions import NotFound

    tag = spec or DEFAULT_TAG
    try:
        model = bentoml.models.get(tag)
    except NotFound:
        if spec:
            raise ModelLoadError(
                f"DCGAN_MODEL={spec}: no such model in the BentoML model store "
                "(`bentoml models list` shows what is there)"
            ) from None
        if not BUNDLED.is_file():
            raise ModelLoadError(
                f"no model: {DEFAULT_TAG} is not in the BentoML model store and the "
                f"bundled file {BUNDLED.name} is missing; set DCGAN_MODEL"
            ) from None
        return BUNDLED, "bundled"
    except Exception as exc:  # a malformed tag, an unreadable store
        raise ModelLoadError(f"DCGAN_MODEL={tag}: {exc}") from None
    path = Path(model.path_of(STORE_FILE))
    if not path.is_file():
        raise ModelLoadError(f"model-store entry {model.tag} has no {STORE_FILE}")
    return path, str(model.tag.version)


def cpu_threads(configured: int | None = None) -> int:
    """ONNX Runtime intra-op threads: `configured` (the DCGAN_ORT_THREADS setting), else
    the CPUs we may run on, capped by a cgroup CPU quota (a pod limited to 2 CPUs on a
    64-core node gets 2)."""
    if configured is not None:
        return max(1, configured)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:  # cgroup v2: "<quota> <period>" or "max <period>"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def gpu_count() -> int:
    try:
        import pynvml  # nvidia-ml-py, installed with BentoML

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no driver, no library: no GPU
        return 0


@dataclass
class Generator:
    """An ONNX Runtime session of a generator, and what its card says about it."""

    session: object
    card: ModelCard
    path: Path
    version: str
    providers: list[str] = field(default_factory=list)

    @property
    def provider(self) -> str:
        return self.providers[0] if self.providers else "none"

    def run(self, latents: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """(N, nz) float32 [+ (N,) int64] -> (N, *card.output_shape) float32 in [-1, 1]."""
        feed = {"latents": np.ascontiguousarray(latents, dtype=np.float32)}
        if self.card.num_classes:
            feed["labels"] = np.ascontiguousarray(labels, dtype=np.int64)
        return self.session.run(["images"], feed)[0]


def load_generator(path: Path, version: str, device: str = "auto",
                   threads: int | None = None) -> Generator:
    """Open `path` with ONNX Runtime and check it against its model card. `device` and
    `threads` are the DCGAN_DEVICE and DCGAN_ORT_THREADS settings (None: see cpu_threads)."""
    import onnxruntime as ort

    if device not in DEVICES:  # the settings check it; this guards other callers
        raise ModelLoadError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = cpu_threads(threads)
    options.inter_op_num_threads = 1
    # Spinning threads burn the cores that the event loop and the other requests need
    # while they wait for work; on a small CPU that costs more than the wake-up latency.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: ORT's warnings are not for operators
    use_cuda = device == "cuda" or (
        device == "auto"
        and "CUDAExecutionProvider" in ort.get_available_providers()
        and gpu_count() > 0
    )
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if use_cuda else ["CPUExecutionProvider"]
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{path}: ONNX Runtime cannot open it: {first_line}") from None
    try:
        card = ModelCard.from_metadata(session.get_modelmeta().custom_metadata_map, source=str(path))
    except CardError as exc:
        raise ModelLoadError(str(exc)) from None
    _check_signature(session, card, path)
    if use_cuda and "CUDAExecutionProvider" not in session.get_providers():
        logger.warning("a GPU was found but ONNX Runtime could not use it; running on CPU")
    return Generator(session, card, path, version, list(session.get_providers()))


def _check_signature(session, card: ModelCard, path: Path) -> None:
    """The file's inputs and outputs must be what its card promises."""
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    expected = {"latents"} | ({"labels"} if card.num_classes else set())
    problems = []
    if set(inputs) != expected:
        problems.append(f"inputs {sorted(inputs)} (expected {sorted(expected)})")
    elif isinstance(inputs["latents"].shape[1], int) and inputs["latents"].shape[1] != card.nz:
        problems.append(f"latents of length {inputs['latents'].shape[1]} but card nz={card.nz}")
    if "images" not in outputs:
        problems.append(f"outputs {sorted(outputs)} (expected ['images'])")
    else:
        shape = outputs["images"].shape[1:]
        if any(isinstance(a, int) and a != b for a, b in zip(shape, card.output_shape)):
            problems.append(f"images of shape {shape} but card says {card.output_shape}")
    if problems:
        raise ModelLoadError(f"{path}: does not match its model card: {'; '.join(problems)}")


def warm_up(generator: Generator, batch_sizes: Sequence[int]) -> None:
    """First calls allocate buffers (and build CUDA kernels): pay that before ready."""
    card = generator.card
    for n in batch_sizes:
        latents = np.zeros((n, card.nz), np.float32)
        generator.run(latents, np.zeros(n, np.int64))


class Batcher:
    """Concurrent `generate` calls of one worker -> as few ONNX Runtime calls as possible.

    Enabled: BentoML's CorkDispatcher (see the module docstring); `wait` "queue" sends a
    batch as soon as the generator is free (see _queue_only_optimizer), "adaptive" keeps
    BentoML's own waiting rule. Disabled: one call per request, still one at a time per
    worker, as BentoML runs a non-batchable sync API.
    `on_call(seconds, images, requests)` is told about every ONNX Runtime call.
    Merged batches of at most `inline_images` images run in the event loop's own thread
    (default: all of them on CPU, none on a GPU). On CPU, ONNX Runtime's call takes every
    core anyway (the calling thread is one of its intra-op threads), and a hop to a worker
    thread costs the event loop a wake-up and the worker a wait for the GIL behind the
    busy loop: measured with n=1 requests at 8 clients on 2 CPUs, 281 against 230
    requests/s. On a GPU the loop has useful work to do while the device computes.
    Requests that fill a batch alone still run in a worker thread, so that the loop keeps
    accepting requests during a long call.
    """

    def __init__(
        self,
        generator: Generator,
        *,
        enabled: bool,
        max_batch_size: int,
        max_latency_ms: int,
        on_call: Callable[[float, int, int], None],
        wait: str = "queue",
        inline_images: int | None = None,
    ) -> None:
        if wait not in ("queue", "adaptive"):
            raise ModelLoadError(f"DCGAN_BATCH_WAIT must be queue or adaptive, got {wait!r}")
        self.generator = generator
        self.enabled = enabled
        self.max_batch_size = max_batch_size
        if inline_images is None:  # CPU: merged batches in the event loop; GPU: in a thread
            on_gpu = generator.provider == "CUDAExecutionProvider"
            inline_images = 0 if on_gpu else max_batch_size
        self.inline_images = inline_images
        self._on_call = on_call
        self._limiter = None
        self._dispatcher = None
        self._dispatch = None
        if enabled:
            from bentoml._internal.marshal.dispatcher import CorkDispatcher

            self._dispatcher = CorkDispatcher(
                max_latency_in_ms=max_latency_ms,
                max_batch_size=max_batch_size,
                fallback=_overloaded,
                get_batch_size=len,  # rows = images
                batch_dim=(0, 0),
            )
            if wait == "queue":
                self._dispatcher.optimizer = _queue_only_optimizer(self._dispatcher.max_latency)
            self._dispatch = self._dispatcher(self._run_jobs)

    async def generate(self, latents: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        """(N, nz) latents [+ (N,) labels] -> (N, *output_shape) float32 images."""
        import anyio

        if self._dispatch is None or len(latents) >= self.max_batch_size:
            # A request that fills a batch on its own skips the dispatcher (module docstring).
            return await anyio.to_thread.run_sync(
                self._infer, latents, labels, 1, limiter=self._one_call()
            )
        # The dispatcher splits and merges one array along axis 0, so class labels ride
        # along as an extra float32 column (exact for any label below 2**24).
        packed = latents if labels is None else np.column_stack([latents, labels.astype(np.float32)])
        return await self._dispatch(packed)

    async def _run_jobs(self, jobs: Sequence[np.ndarray]) -> list[np.ndarray]:
        import anyio

        packed = np.concatenate(jobs)
        if self.generator.card.num_classes:
            latents, labels = packed[:, :-1], packed[:, -1].astype(np.int64)
        else:
            latents, labels = packed, None
        if len(packed) <= self.inline_images:
            async with self._one_call():  # a call in a thread (a full batch) may be running
                images = self._infer(latents, labels, len(jobs))
        else:
            images = await anyio.to_thread.run_sync(
                self._infer, latents, labels, len(jobs), limiter=self._one_call()
            )
        bounds = np.cumsum([len(job) for job in jobs])[:-1]
        return np.split(images, bounds)

    def _one_call(self):
        """One ONNX Runtime call at a time per worker (created lazily: it needs the
        running event loop)."""
        import anyio

        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(1)
        return self._limiter

    def _infer(self, latents: np.ndarray, labels: np.ndarray | None, requests: int) -> np.ndarray:
        start = time.perf_counter()
        images = self.generator.run(latents, labels)
        self._on_call(time.perf_counter() - start, len(latents), requests)
        return images

    def shutdown(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.shutdown()


def _overloaded():
    raise Overloaded("the server is overloaded: the request waited too long for the generator")


def _queue_only_optimizer(max_latency: float):
    """BentoML's latency model, told that no request ever waited.

    The stock dispatcher holds a lone request on an idle generator for up to the mean
    wait of recent batches, and that mean includes time spent queued behind the batch
    in flight. After a burst the mean stays high: measured here, a single client's
    n=1 requests took 60-80 ms instead of 5 ms for more than 30 s after 64 clients
    stopped. Requests that queue behind a running batch are already batched for free,
    and on CPU a bigger batch barely lowers the cost per image, so we dispatch as soon
    as the generator is free (what Triton's dynamic batcher does by default). The
    duration fit, which decides when a request has waited too long (503), is kept."""
    from bentoml._internal.marshal.dispatcher import Optimizer

    class QueueOnly(Optimizer):
        def log_outbound(self, n: int, wait: float, duration: float) -> None:
            super().log_outbound(n, 0.0, duration)

    return QueueOnly(max_latency)
