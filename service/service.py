"""The BentoML service: `bentoml serve service.service:DCGAN`.

Endpoints: POST /sample and POST /interpolate (generation, behind the optional bearer
token), POST /project, /edit, /combine and GET /directions (the latent space, handled
in service/latent_space.py), GET /model (card, providers, limits), GET / (a small web
page), GET /docs (OpenAPI UI; the document is /docs.json), and BentoML's /livez,
/readyz, /metrics.

Settings: the DCGAN_* environment variables, all in service/settings.py (and the
README's table), read once when this module is imported. They shape the request models
(limits, hence the OpenAPI document) and the guard (token, body size) here, and each
service instance (model, device, threads, batching).

Opening the generator, turning a request into latents and labels (the label rule and
the checks that depend on the model) and encoding PNGs and GIFs are the generation
layer's (models.generation), shared with the CLI, so `dcgan sample` and POST /sample
give the same bytes; its GenerationError becomes a 400 naming the field.

The model loads in a background thread, so /livez answers at once and /readyz turns
200 only when the generator is loaded and warmed up; a model that cannot load leaves
one ERROR line in the log and the server alive but not ready (no restart loop). Bad
settings do the same: one ERROR line per bad variable, naming it and what it accepts,
and the server alive but not ready with that reason (the schemas use the defaults).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from pathlib import Path
from typing import Any

import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from models import generation as gen
from models.generation import GenerationError, ModelLoadError, OnnxGenerator
from service import latent_space, metrics
from service.guard import RequestGuard, error_body
from service.responses import b64_pngs as _pngs
from service.responses import labels_field as _labels_field
from service.responses import model_field as _model_field
from service.runtime import Batcher, Overloaded
from service.schemas import (
    InterpolateResponse,
    SampleResponse,
    request_models,
)
from service.settings import Settings, SettingsError

logger = logging.getLogger("bentoml.dcgan")
STATIC = Path(__file__).resolve().parent / "static"
# Below this many output values, encoding in the event loop is cheaper than a thread hop.
INLINE_VALUES = 16 * 1024


def read_settings(environ=os.environ) -> tuple[Settings, SettingsError | None]:
    """The settings, or the defaults and what is wrong: bad settings must not stop the
    import (the server would exit, or restart its workers in a loop) but leave the
    service not ready, saying why."""
    try:
        return Settings.from_env(environ), None
    except SettingsError as exc:
        return Settings(), exc


# Once per process. Service instances read SETTINGS when they are made (tests put theirs here).
SETTINGS, SETTINGS_ERROR = read_settings()
LIMITS = SETTINGS.limits
SampleRequest, InterpolateRequest = request_models(LIMITS)
ProjectRequest, EditRequest, CombineRequest = latent_space.request_models(LIMITS)


@bentoml.service(traffic={"timeout": 60})
class DCGAN:
    def __init__(self) -> None:
        settings = self.settings = SETTINGS
        self.model_spec = settings.model
        self.device = settings.device
        self.ort_threads = settings.ort_threads  # None: the CPUs available (models.generation.cpu_threads)
        self.batching = settings.batching
        self.max_batch_size = settings.max_batch_size
        self.max_latency_ms = settings.max_latency_ms
        self.batch_wait = settings.batch_wait
        self.inline_images = settings.inline_images  # None: by device (runtime.Batcher)
        self.generator: OnnxGenerator | None = None
        self.latent = gen.LatentSpace()  # the generator's encoder and directions (sidecars)
        self.batcher: Batcher | None = None
        self.load_error: str | None = None
        metrics.set_ready(False)
        if SETTINGS_ERROR is not None:  # not ready, with the reason; nothing to load
            for line in SETTINGS_ERROR.problems:
                logger.error("bad setting %s", line)
            self.load_error = f"bad settings: {SETTINGS_ERROR}"
            return
        threading.Thread(target=self._load, name="dcgan-load", daemon=True).start()

    # --- life cycle ----------------------------------------------------------------
    def _load(self) -> None:
        service_name = type(self).__name__
        try:
            path, version = gen.resolve_model(self.model_spec)
            generator = OnnxGenerator(path, device=self.device, threads=self.ort_threads,
                                      version=version)
            # On a GPU every batch size the batcher can form gets its kernels now (the
            # first call of a size costs more there); on the CPU the extremes suffice.
            on_gpu = generator.provider == "CUDAExecutionProvider"
            generator.warm_up(range(1, self.max_batch_size + 1) if on_gpu
                              else sorted({1, self.max_batch_size}))
            self.batcher = Batcher(
                generator, enabled=self.batching, max_batch_size=self.max_batch_size,
                max_latency_ms=self.max_latency_ms, wait=self.batch_wait,
                inline_images=self.inline_images,
                on_call=lambda s, n, r: metrics.observe_inference(s, n, r, service_name),
            )
        except Exception as exc:  # whatever it is: one line, not a traceback loop
            error = str(exc) if isinstance(exc, ModelLoadError) else f"{type(exc).__name__}: {exc}"
            logger.error("cannot serve a generator: %s", error)
            self.load_error = error
            return
        card = generator.card
        self.latent = gen.open_latent_space(path, card, threads=self.ort_threads)
        metrics.set_model(card.name, generator.version, generator.provider)
        self.generator = generator
        metrics.set_ready(True)
        logger.info(
            "serving %s (version %s, step %d, %s) from %s with providers %s; batching %s",
            card.name, generator.version, card.step, "x".join(map(str, card.output_shape)),
            generator.path.name, ",".join(generator.providers),
            f"on (up to {self.max_batch_size} images per call)" if self.batching else "off",
        )

    def __is_ready__(self) -> bool:
        return self.generator is not None

    @bentoml.on_shutdown
    def _stop_batcher(self) -> None:
        if self.batcher is not None:
            self.batcher.shutdown()

    def info(self) -> dict[str, Any]:
        """What GET /model answers."""
        g = self.generator
        body: dict[str, Any] = {
            "ready": g is not None, "error": self.load_error,
            "auth_required": bool(self.settings.api_token),
            "batching": {"enabled": self.batching, "max_batch_size": self.max_batch_size,
                         "max_latency_ms": self.max_latency_ms, "wait": self.batch_wait,
                         "inline_images": self.batcher.inline_images if self.batcher else None},
            "limits": LIMITS.to_dict(),
        }
        if g is not None:
            card = g.card
            body.update(
                name=card.name, version=g.version, file=g.path.name, providers=g.providers,
                card=card.to_dict(), encoder=self.latent.encoder is not None,
                directions=self.latent.directions.names if self.latent.directions else [],
                sidecar_problems=self.latent.problems,
            )
            body["limits"].update(
                max_n=LIMITS.max_images(card.output_shape), nz=card.nz,
                num_classes=card.num_classes,
                label_range=[0, card.num_classes - 1] if card.num_classes else None,
            )
        return body

    # --- endpoints -----------------------------------------------------------------
    @bentoml.api(route="/sample", input_spec=SampleRequest)
    async def sample(self, **params: Any) -> SampleResponse:
        """Draw `n` images, seeds `seed` .. `seed + n - 1` (the same seed always gives the
        same image, whatever `n`). Formats: json (base64 PNGs and seeds), png (one grid),
        array (floats in [-1, 1])."""
        req = SampleRequest.model_construct(**params)
        return await self._serve("sample", self._sample, req)

    @bentoml.api(route="/interpolate", input_spec=InterpolateRequest)
    async def interpolate(self, **params: Any) -> InterpolateResponse:
        """Walk from `start` to `end` (each a seed or a latent vector) in `steps` frames,
        end points included: the first and last frames are the images /sample gives for
        them. Formats: frames (base64 PNGs), png (one strip), gif, array."""
        req = InterpolateRequest.model_construct(**params)
        return await self._serve("interpolate", self._interpolate, req)

    @bentoml.api(route="/edit", input_spec=EditRequest)
    async def edit(self, **params: Any) -> Any:
        """Move a seed or latent along a direction (`direction`, from GET /directions, or
        `from_class` -> `to_class`), one frame per strength. Formats as /interpolate."""
        req = EditRequest.model_construct(**params)
        return await self._serve("edit", self._latent_handler(latent_space.edit), req)

    @bentoml.api(route="/combine", input_spec=CombineRequest)
    async def combine(self, **params: Any) -> Any:
        """The image of a weighted sum of seeds and latents (`terms`). Formats: json
        (base64 PNG and the latent), png, array."""
        req = CombineRequest.model_construct(**params)
        return await self._serve("combine", self._latent_handler(latent_space.combine), req)

    def _latent_handler(self, handler):
        """A handler of service/latent_space.py with this model's sidecars and batcher."""
        return lambda g, req: handler(g, req, space=self.latent, generate=self.batcher.generate)

    async def _serve(self, endpoint: str, handler, req) -> Response:
        if self.generator is None:
            metrics.count_rejected(endpoint, "not_ready")
            reason = self.load_error or "the model is still loading"
            return JSONResponse(error_body(f"not ready: {reason}"), status_code=503)
        try:
            response, count = await handler(self.generator, req)
        except GenerationError as exc:
            metrics.count_rejected(endpoint, "invalid")
            return JSONResponse(error_body(str(exc), exc.field), status_code=400)
        except Overloaded as exc:
            metrics.count_rejected(endpoint, "overloaded")
            return JSONResponse(error_body(str(exc)), status_code=503, headers={"Retry-After": "1"})
        metrics.count_images(endpoint, count)
        return response

    async def _sample(self, g: OnnxGenerator, req: SampleRequest) -> tuple[Response, int]:
        card = g.card
        n = req.n
        if n > (most := LIMITS.max_images(card.output_shape)):
            raise GenerationError("n", f"n must be an integer from 1 to {most} for this model, got {n}")
        plan = functools.partial(gen.plan_sample, card, seed=req.seed, n=n,
                                 truncation=req.truncation, label=req.label, format=req.format)
        latents, labels, seeds = await _run(plan, heavy=req.truncation is not None or n > 8)
        seed = seeds[0]
        images = await self.batcher.generate(latents, labels)
        headers = {"X-Seed": str(seed), "X-Count": str(n)}
        if req.format == "array":
            body = {"seed": seed, "seeds": seeds, **_labels_field(labels),
                    "shape": list(images.shape), "images": images.tolist()}
            return JSONResponse(body, headers=headers), n
        heavy = images.size > INLINE_VALUES
        if req.format == "png":
            png = await _run(gen.grid_png, images, req.columns, heavy=heavy)
            return Response(png, media_type="image/png", headers=headers), n
        pngs = await _run(_pngs, images, heavy=heavy)
        body = {"seed": seed, "seeds": seeds, **_labels_field(labels),
                "shape": list(card.output_shape), "images": pngs, "model": _model_field(g)}
        return JSONResponse(body, headers=headers), n

    async def _interpolate(self, g: OnnxGenerator, req: InterpolateRequest) -> tuple[Response, int]:
        card = g.card
        if req.steps > (most := LIMITS.max_images(card.output_shape)):
            raise GenerationError("steps", f"steps must be an integer from 2 to {most} for this model")
        path, labels, _ = gen.plan_interpolation(
            card, req.start, req.end, steps=req.steps, method=req.method,
            truncation=req.truncation, label=req.label, format=req.format)
        images = await self.batcher.generate(path, labels)
        n = req.steps
        heavy = images.size > INLINE_VALUES
        if req.format == "array":
            body = {"steps": n, "method": req.method, **_labels_field(labels),
                    "shape": list(images.shape), "latents": path.tolist(), "images": images.tolist()}
            return JSONResponse(body), n
        if req.format == "png":
            png = await _run(gen.strip_png, images, heavy=heavy)
            return Response(png, media_type="image/png"), n
        if req.format == "gif":
            gif = await _run(gen.animated_gif, images, heavy=True)
            return Response(gif, media_type="image/gif"), n
        pngs = await _run(_pngs, images, heavy=heavy)
        body = {"steps": n, "method": req.method, **_labels_field(labels),
                "shape": list(card.output_shape), "frames": pngs, "model": _model_field(g)}
        return JSONResponse(body), n


# --- helpers ---------------------------------------------------------------------------

async def _run(fn, *args, heavy: bool):
    """Call `fn` in a worker thread when it is heavy enough to stall the event loop."""
    if not heavy:
        return fn(*args)
    import anyio

    return await anyio.to_thread.run_sync(fn, *args)


# --- web page, /model and /docs (GET routes beside BentoML's POST APIs) -----------------

async def _page(_: Request) -> Response:
    return FileResponse(STATIC / "index.html")


async def _model(_: Request) -> Response:
    return JSONResponse(bentoml.get_current_service().info())


async def _project(request: Request) -> Response:
    """POST /project: JSON or a multipart upload, read here (service/latent_space.py)."""
    service = bentoml.get_current_service()
    try:
        pictures = await latent_space.read_pictures(request, ProjectRequest)
    except GenerationError as exc:
        metrics.count_rejected("project", "invalid")
        return JSONResponse(error_body(str(exc), exc.field), status_code=400)
    return await service._serve("project", service._latent_handler(latent_space.project), pictures)


async def _directions(_: Request) -> Response:
    service = bentoml.get_current_service()
    if service.generator is None:
        return JSONResponse(error_body(f"not ready: {service.load_error or 'the model is still loading'}"),
                            status_code=503)
    try:
        return JSONResponse(latent_space.directions_body(service.generator, service.latent))
    except GenerationError as exc:
        return JSONResponse(error_body(str(exc), exc.field), status_code=404)


async def _docs(_: Request) -> Response:
    # BentoML's own Swagger UI page, moved from / (which is ours) to /docs.
    from _bentoml_impl import server

    page = Path(server.__file__).parent / "main-openapi.html"
    return FileResponse(page) if page.is_file() else RedirectResponse("/docs.json")


DCGAN.mount_asgi_app(
    Starlette(routes=[
        Route("/", _page),
        Route("/model", _model),
        Route("/project", _project, methods=["POST"]),
        Route("/directions", _directions),
        Route("/docs", _docs),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]),
    path="/",
)
DCGAN.add_asgi_middleware(
    RequestGuard, routes={"/sample": SampleRequest, "/interpolate": InterpolateRequest,
                          "/edit": EditRequest, "/combine": CombineRequest,
                          "/project": ProjectRequest},
    uploads={"/project": latent_space.LATENT_LIMITS.max_upload_bytes},
    max_body_bytes=LIMITS.max_body_bytes, token=SETTINGS.api_token,
    on_reject=metrics.count_rejected,
)
