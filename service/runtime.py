"""Serving a generator: concurrent requests of one worker batched into few ONNX Runtime
calls. Opening the generator (card, signature, provider, threads) is the generation
layer's, models.generation.OnnxGenerator; this module adds what only serving needs.

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
ONNX Runtime call runs at a time per worker, whatever the model: each model has its own
Batcher (batches never mix models), and the Batchers of one worker share one `CallGate`,
since each session's call already takes every core.

Admission. The dispatcher's own 503 comes only once a request has waited past
`max_latency_ms`: under 128 clients asking for 16 images each, every request was
queued and p99 climbed past 2 s, growing with the clients. So each Batcher first
admits work into a bounded queue counted in images (admitted, not yet generated),
sized from the rate its generator has been measured at and a latency target
(`Admission`); a request that does not fit gets `Overloaded` at once, with a
`Retry-After` from the queue, before it costs any work.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np

from models.generation import ModelLoadError, OnnxGenerator


class Overloaded(RuntimeError):
    """No room for a request: the generator's queue is full, or the request waited in it
    longer than the latency limit. `retry_after`: whole seconds (>= 1) a client should
    wait before it asks again (the `Retry-After` header)."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Admission:
    """The bounded queue of one model's generator, counted in images.

    `queued`: images admitted and not yet generated. A request of `n` images is admitted
    while `queued + n <= bound`, where `bound = max(floor, rate * target)`: what the
    generator makes in `target` seconds at its measured rate, and at least `floor` (one
    batch), so a cold model, whose rate is unknown yet, still admits a batch. A request
    that finds the queue empty is always admitted, whatever its size (it could never be
    otherwise); under steady load one larger than the bound is refused until the queue
    drains, as the costliest requests should be. `target` 0: no bound.

    The rate is images per second at which the queue drains, decayed by `DECAY` per call:
    a call that follows another while requests were already waiting is timed from the
    end of that one, so the rate includes what the worker does between calls (parsing,
    encoding, the other models' calls), not only the generator's time. Calls with
    nothing waiting behind them (light load) say nothing about that, and only time the
    generator; their rate is used until the queue has first been seen busy. Timed by the
    calls alone, the bundled generator drained its queue at half the rate the calls
    suggested (on 2 CPUs: about 1,000 against 2,000 images/s), and after an idle moment
    the bound doubled, admitting twice the work the target allows.
    """

    DECAY = 0.8  # per call: the last ~5 calls count most

    def __init__(self, target_s: float, floor: int, name: str = "") -> None:
        self.target_s, self.floor, self.name = target_s, floor, name
        self.queued = 0
        self._drain = [0.0, 0.0]  # decayed images, seconds: calls timed with their gaps
        self._calls = [0.0, 0.0]  # decayed images, seconds: calls alone
        self._last_end: float | None = None
        self._backlog = False

    @property
    def rate(self) -> float | None:
        """Images per second the queue drains at; None before any call."""
        images, seconds = self._drain if self._drain[1] > 0 else self._calls
        return images / seconds if seconds > 0 else None

    @property
    def bound(self) -> int | None:
        """The most images the queue admits; None: no bound."""
        if not self.target_s:
            return None
        rate = self.rate
        return max(self.floor, int(rate * self.target_s)) if rate else self.floor

    def retry_after(self) -> int:
        """Seconds until the queue as it stands has drained (at least 1)."""
        rate = self.rate
        return max(1, math.ceil(self.queued / rate)) if rate else 1

    def admit(self, images: int) -> None:
        """Count `images` in, or raise Overloaded (the queue is left as it was)."""
        bound = self.bound
        if bound is not None and self.queued and self.queued + images > bound:
            retry = self.retry_after()
            raise Overloaded(
                f"the server is overloaded: model {self.name} has {self.queued} images "
                f"queued and takes at most {bound} (about {round(self.target_s * 1000)} ms "
                f"of work); this request asks for {images}; retry after {retry} s", retry)
        self.queued += images

    def done(self, images: int) -> None:
        self.queued -= images
        if not self.queued:  # idle from here: the next call's gap is not the queue's
            self._backlog = False

    def observe(self, start: float, end: float, images: int) -> None:
        """An ONNX Runtime call made `images` images from `start` to `end` (seconds on
        one clock), while they were still counted in `queued`."""
        _decay(self._calls, images, end - start)
        if self._backlog and self._last_end is not None:
            _decay(self._drain, images, end - self._last_end)
        self._last_end, self._backlog = end, self.queued > images

    def summary(self) -> dict[str, float | int | None]:
        """What GET /model says of the queue."""
        rate = self.rate
        return {"queued_images": self.queued, "bound_images": self.bound,
                "images_per_second": round(rate, 1) if rate else None}


def _decay(sums: list[float], images: int, seconds: float) -> None:
    sums[0] = sums[0] * Admission.DECAY + images
    sums[1] = sums[1] * Admission.DECAY + max(seconds, 1e-6)


class CallGate:
    """One ONNX Runtime call at a time, shared by the Batchers of one worker (the
    limiter is made lazily: it needs the running event loop)."""

    def __init__(self) -> None:
        self._limiter = None

    def limiter(self):
        import anyio

        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(1)
        return self._limiter


class Batcher:
    """Concurrent `generate` calls of one worker -> as few ONNX Runtime calls as possible.

    Enabled: BentoML's CorkDispatcher (see the module docstring); `wait` "queue" sends a
    batch as soon as the generator is free (see _queue_only_optimizer), "adaptive" keeps
    BentoML's own waiting rule. Disabled: one call per request, still one at a time per
    worker, as BentoML runs a non-batchable sync API.
    `on_call(seconds, images, requests)` is told about every ONNX Runtime call; `gate`
    is shared with the other models' Batchers of the worker. Every request is admitted
    first (`admission`, see Admission: `latency_target_ms`, 0 for no bound; `name`, the
    model's, for the refusal), whether batching is on or off; `on_wait(seconds)` is told
    how long each admitted request waited for its images.
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
        generator: OnnxGenerator,
        *,
        enabled: bool,
        max_batch_size: int,
        max_latency_ms: int,
        on_call: Callable[[float, int, int], None],
        wait: str = "queue",
        inline_images: int | None = None,
        gate: CallGate | None = None,
        latency_target_ms: int = 0,
        name: str = "",
        on_wait: Callable[[float], None] | None = None,
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
        self._on_wait = on_wait or (lambda seconds: None)
        self.admission = Admission(latency_target_ms / 1000, floor=max_batch_size,
                                   name=name or generator.card.name)
        self._gate = gate or CallGate()
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
        """(N, nz) latents [+ (N,) labels] -> (N, *output_shape) float32 images; raises
        Overloaded, at once when the queue is full."""
        self.admission.admit(len(latents))
        admitted = time.perf_counter()
        try:
            images = await self._generate(latents, labels)
        finally:  # generated, failed or cancelled (a client that went away)
            self.admission.done(len(latents))
        self._on_wait(time.perf_counter() - admitted)
        return images

    async def _generate(self, latents: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
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
        """One ONNX Runtime call at a time per worker (see CallGate)."""
        return self._gate.limiter()

    def _infer(self, latents: np.ndarray, labels: np.ndarray | None, requests: int) -> np.ndarray:
        start = time.perf_counter()
        images = self.generator.generate(latents, labels)
        end = time.perf_counter()
        self.admission.observe(start, end, len(latents))
        self._on_call(end - start, len(latents), requests)
        return images

    def shutdown(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.shutdown()


async def offload(fn, *args, heavy: bool):
    """Call `fn` in a worker thread when it is heavy enough to stall the event loop."""
    if not heavy:
        return fn(*args)
    import anyio

    return await anyio.to_thread.run_sync(fn, *args)


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
