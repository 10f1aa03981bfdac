"""The BentoML service: `bentoml serve service.service:DCGAN`.

Endpoints: POST /sample and POST /interpolate (generation, behind the optional bearer
token; each may name its `model`), POST /project, /edit, /combine and GET
/directions[?model=] (the latent space, each model's own sidecars, handled in
service/latent_space.py), GET /models (every generator served: name, version, digest,
shape, classes, card summary, readiness), GET /model[?name=] (one model's card,
providers, limits, encoder and directions), GET / (a small web page), GET /docs
(OpenAPI UI; the document is /docs.json, service/openapi.py), the Open Inference
Protocol under /v2 (service/oip.py), and BentoML's /livez, /readyz, /metrics.

Settings: the DCGAN_* environment variables, all in service/settings.py (and the
README's table), read once when this module is imported. They shape the request models
(limits, hence the OpenAPI document) and the guard (token, body size) here, and each
service instance (models, device, threads, batching).

Many generators: the registry (service/registry.py) holds every configured model by
name, each loading in its own background thread with its own batcher. Every endpoint
goes through `_serve`, which routes the request's `model` (absent: the default, the
first configured) to a ready model, or answers 404 listing the served names, or 503
naming the model and why it is not ready, while the other models serve. /readyz turns
200 only when every model is loaded and warmed up in every worker (readiness.py). A
model that cannot load leaves one ERROR line in the log; bad settings leave one ERROR
line per bad variable, naming it and what it accepts; either way the server stays
alive, not ready, with the reason in /model and /models (no restart loop). An answer
that the request determines (a seed given, or latents) carries a strong ETag and
Cache-Control, and a request whose If-None-Match names it gets 304 before any work
(service/caching.py).

Opening a generator, turning a request into latents and labels (the label rule and the
checks that depend on the model) and encoding PNGs and GIFs are the generation layer's
(models.generation), shared with the CLI, so `dcgan sample` and POST /sample give the
same bytes; its GenerationError becomes a 400 naming the field.

Adding an endpoint that takes `model`: a request model with the `model` field
(schemas.ModelName, schemas.MODEL_RULE), an `@bentoml.api` method that calls
`self._serve("<endpoint>", self._<handler>, req)`, a handler `(served, req) ->
(response, images)` using `served.card` and `served.batcher`, the route in `REQUESTS`
below (the guard's routes), and its operation and answers in the OpenAPI document
(service/openapi.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from pathlib import Path
from typing import Any

import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from models import generation as gen
from models.card import finite  # a card from any file may hold NaN: answers stay JSON
from models.generation import GenerationError
from service import latent_space, lifecycle, metrics, oip, openapi
from service.caching import ENDPOINTS as CACHED
from service.caching import CachePolicy, entity_tag, matches
from service.guard import RequestGuard, error_body
from service.readiness import WorkerReadiness, worker_count
from service.registry import Registry, Served, ServeError, known_names
from service.responses import b64_pngs as _pngs
from service.responses import labels_field as _labels_field
from service.responses import model_field as _model_field
from service.runtime import Overloaded, offload
from service.schemas import (
    InterpolateResponse,
    SampleResponse,
    request_models,
)
from service.settings import Settings, SettingsError

logger = logging.getLogger("bentoml.dcgan")
STATIC = Path(__file__).resolve().parent / "static"
# BentoML restarts a worker that dies, except in its containers (BENTOML_CONTAINERIZED).
WORKERS_RESTART = "BENTOML_CONTAINERIZED" not in os.environ
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
# The guarded routes' request models (the guard checks them; /docs.json declares them).
REQUESTS = {"/sample": SampleRequest, "/interpolate": InterpolateRequest, "/edit": EditRequest,
            "/combine": CombineRequest, "/project": ProjectRequest}


@bentoml.service(traffic={"timeout": 60})
class DCGAN:
    def __init__(self) -> None:
        self.settings = SETTINGS
        self.limits = LIMITS
        self.caching = CachePolicy(SETTINGS.cache_max_age, private=bool(SETTINGS.api_token))
        from bentoml._internal.context import server_context

        error = None
        if SETTINGS_ERROR is not None:  # not ready, with the reason; nothing to load
            for line in SETTINGS_ERROR.problems:
                logger.error("bad setting %s", line)
            error = f"bad settings: {SETTINGS_ERROR}"
        readiness = WorkerReadiness(worker_count(DCGAN), server_context.worker_index)
        self.registry = Registry(SETTINGS, error=error, service_name=type(self).__name__,
                                 readiness=readiness)
        self.registry.start()

    def __is_alive__(self) -> bool:
        """False once a sibling worker is gone for good: in a container BentoML does not
        restart workers, and a pod left with fewer would stay not ready; failing /livez
        gets the container restarted instead."""
        return not (self.registry.readiness.gone() and not WORKERS_RESTART)

    def __is_ready__(self) -> bool:
        """Every configured model loaded and warmed up, in every worker (readiness.py)."""
        return self.registry.all_ready()

    @bentoml.on_startup
    async def _load_before_listening(self) -> None:
        """With more than one worker, or in place of one that died, a worker takes
        connections only once its models have loaded (or failed): it never answers 503
        while its siblings serve, and requests wait in the socket's queue for it rather
        than get 503. (One worker's first start listens at once, so that /livez answers
        while it loads.)"""
        readiness = self.registry.readiness
        while (readiness.shared or readiness.replacing) and self.registry.loading():
            await asyncio.sleep(0.05)

    @bentoml.on_shutdown
    def _stop_batchers(self) -> None:
        self.registry.shutdown()

    def info(self, name: str | None = None) -> dict[str, Any]:
        """What GET /model answers: one model (None: the default) with the service's
        batching, limits and token settings. Raises UnknownModel."""
        s, registry = self.settings, self.registry
        body: dict[str, Any] = {
            "ready": False, "error": registry.error,
            "auth_required": bool(s.api_token),
            "batching": {"enabled": s.batching, "max_batch_size": s.max_batch_size,
                         "max_latency_ms": s.max_latency_ms, "wait": s.batch_wait,
                         "inline_images": None, "latency_target_ms": s.latency_target_ms,
                         "queue": None},
            "limits": LIMITS.to_dict(),
        }
        if registry.error:
            return body
        served = registry.get(name)
        body.update(name=served.name, ready=served.name in registry.ready_everywhere(),
                    error=served.error, version=served.version, digest=served.digest)
        if (g := served.generator) is not None:
            card, space = g.card, served.latent
            body["batching"].update(inline_images=served.batcher.inline_images,
                                    queue=served.batcher.admission.summary())
            body.update(file=g.path.name, providers=g.providers, card=card.to_dict(),
                        encoder=space.encoder is not None,
                        directions=space.directions.names if space.directions else [],
                        sidecar_problems=space.problems)
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
        return await self._serve("sample", self._sample, req, _if_none_match())

    @bentoml.api(route="/interpolate", input_spec=InterpolateRequest)
    async def interpolate(self, **params: Any) -> InterpolateResponse:
        """Walk from `start` to `end` (each a seed or a latent vector) in `steps` frames,
        end points included: the first and last frames are the images /sample gives for
        them. Formats: frames (base64 PNGs), png (one strip), gif, array."""
        req = InterpolateRequest.model_construct(**params)
        return await self._serve("interpolate", self._interpolate, req, _if_none_match())

    @bentoml.api(route="/edit", input_spec=EditRequest)
    async def edit(self, **params: Any) -> Any:
        """Move a seed or latent along a direction (`direction`, from GET /directions, or
        `from_class` -> `to_class`), one frame per strength. Formats as /interpolate."""
        req = EditRequest.model_construct(**params)
        return await self._serve("edit", self._edit, req, _if_none_match())

    @bentoml.api(route="/combine", input_spec=CombineRequest)
    async def combine(self, **params: Any) -> Any:
        """The image of a weighted sum of seeds and latents (`terms`). Formats: json
        (base64 PNG and the latent), png, array."""
        req = CombineRequest.model_construct(**params)
        return await self._serve("combine", self._combine, req, _if_none_match())

    async def _project(self, served: Served, req: latent_space.Pictures) -> tuple[Response, int]:
        return await latent_space.project(served, req, space=served.latent,
                                          generate=served.batcher.generate)

    async def _edit(self, served: Served, req) -> tuple[Response, int]:
        return await latent_space.edit(served, req, space=served.latent,
                                       generate=served.batcher.generate)

    async def _combine(self, served: Served, req) -> tuple[Response, int]:
        return await latent_space.combine(served, req, space=served.latent,
                                          generate=served.batcher.generate)

    async def _serve(self, endpoint: str, handler, req, if_none_match: str | None = None) -> Response:
        """Route `req` to the model it names (`req.model`; None: the default) and run
        `handler(served, req) -> (response, images)` on it; every refusal is a 4xx/503
        naming the field. A new endpoint that takes `model` is one more such handler.
        An answer the request determines carries its ETag, and a request whose
        If-None-Match names it gets 304 before any work (service/caching.py)."""
        label = self.registry.label(req.model)
        try:
            served = self.registry.serving(req.model)
            tag = entity_tag(endpoint, served, req)
            if tag and matches(if_none_match, tag):
                return self.caching.not_modified(tag)
            response, count = await handler(served, req)
        except ServeError as exc:
            metrics.count_rejected(endpoint, "unknown_model" if exc.status == 404 else "not_ready", label)
            return JSONResponse(error_body(str(exc), exc.field), status_code=exc.status)
        except GenerationError as exc:
            metrics.count_rejected(endpoint, "invalid", label)
            return JSONResponse(error_body(str(exc), exc.field), status_code=400)
        except Overloaded as exc:
            metrics.count_rejected(endpoint, "overloaded", label)
            return JSONResponse(error_body(str(exc)), status_code=503,
                                headers={"Retry-After": str(exc.retry_after)})
        metrics.count_images(endpoint, count, served.name)
        return self.caching.mark(response, tag) if endpoint in CACHED else response

    async def _sample(self, served: Served, req: SampleRequest) -> tuple[Response, int]:
        card = served.card
        n = req.n
        if n > (most := LIMITS.max_images(card.output_shape)):
            raise GenerationError("n", f"n must be an integer from 1 to {most} for this model, got {n}")
        plan = functools.partial(gen.plan_sample, card, seed=req.seed, n=n,
                                 truncation=req.truncation, label=req.label, format=req.format)
        latents, labels, seeds = await offload(plan, heavy=req.truncation is not None or n > 8)
        seed = seeds[0]
        images = await served.batcher.generate(latents, labels)
        headers = {"X-Seed": str(seed), "X-Count": str(n)}
        if req.format == "array":
            body = {"seed": seed, "seeds": seeds, **_labels_field(labels),
                    "shape": list(images.shape), "images": images.tolist()}
            return JSONResponse(body, headers=headers), n
        heavy = images.size > INLINE_VALUES
        if req.format == "png":
            png = await offload(gen.grid_png, images, req.columns, heavy=heavy)
            return Response(png, media_type="image/png", headers=headers), n
        pngs = await offload(_pngs, images, heavy=heavy)
        body = {"seed": seed, "seeds": seeds, **_labels_field(labels),
                "shape": list(card.output_shape), "images": pngs, "model": _model_field(served)}
        return JSONResponse(body, headers=headers), n

    async def _interpolate(self, served: Served, req: InterpolateRequest) -> tuple[Response, int]:
        card = served.card
        if req.steps > (most := LIMITS.max_images(card.output_shape)):
            raise GenerationError("steps", f"steps must be an integer from 2 to {most} for this model")
        path, labels, _ = gen.plan_interpolation(
            card, req.start, req.end, steps=req.steps, method=req.method,
            truncation=req.truncation, label=req.label, format=req.format)
        images = await served.batcher.generate(path, labels)
        n = req.steps
        heavy = images.size > INLINE_VALUES
        if req.format == "array":
            body = {"steps": n, "method": req.method, **_labels_field(labels),
                    "shape": list(images.shape), "latents": path.tolist(), "images": images.tolist()}
            return JSONResponse(body), n
        if req.format == "png":
            png = await offload(gen.strip_png, images, heavy=heavy)
            return Response(png, media_type="image/png"), n
        if req.format == "gif":
            gif = await offload(gen.animated_gif, images, heavy=True)
            return Response(gif, media_type="image/gif"), n
        pngs = await offload(_pngs, images, heavy=heavy)
        body = {"steps": n, "method": req.method, **_labels_field(labels),
                "shape": list(card.output_shape), "frames": pngs, "model": _model_field(served)}
        return JSONResponse(body), n


def _if_none_match() -> str | None:
    """The If-None-Match header of the API request being answered (BentoML keeps the
    request in a context variable; a `ctx` parameter would also make BentoML overwrite
    every answer's status with its own)."""
    return DCGAN.context.request.headers.get("if-none-match")


# --- web page, /model and /docs (GET routes beside BentoML's POST APIs) -----------------

async def _page(_: Request) -> Response:
    return FileResponse(STATIC / "index.html")


async def _model(request: Request) -> Response:
    try:
        return JSONResponse(finite(bentoml.get_current_service().info(request.query_params.get("name"))))
    except ServeError as exc:
        return JSONResponse(error_body(str(exc), exc.field), status_code=exc.status)


async def _project(request: Request) -> Response:
    """POST /project: JSON or a multipart upload, read here (service/latent_space.py)."""
    service = bentoml.get_current_service()
    try:
        pictures = await latent_space.read_pictures(request, ProjectRequest)
    except GenerationError as exc:
        metrics.count_rejected("project", "invalid", "")
        return JSONResponse(error_body(str(exc), exc.field), status_code=400)
    return await service._serve("project", service._project, pictures)


async def _directions(request: Request) -> Response:
    """GET /directions[?model=|?name=]: one model's edit directions (absent: the default)."""
    registry = bentoml.get_current_service().registry
    name = request.query_params.get("model") or request.query_params.get("name")
    try:
        served = registry.serving(name)
        return JSONResponse(latent_space.directions_body(served, served.latent))
    except ServeError as exc:
        return JSONResponse(error_body(str(exc), exc.field), status_code=exc.status)
    except GenerationError as exc:
        return JSONResponse(error_body(str(exc), exc.field), status_code=404)


async def _models(_: Request) -> Response:
    return JSONResponse(finite(bentoml.get_current_service().registry.listing()))


def _current_registry() -> Registry | None:
    try:
        return bentoml.get_current_service().registry
    except Exception:  # no service instance yet (or any more)
        return None


@functools.lru_cache(maxsize=2)
def _document(token: bool) -> dict[str, Any]:
    return openapi.document(DCGAN.openapi_spec.asdict(), REQUESTS, token=token)


async def _docs_json(_: Request) -> Response:
    """The OpenAPI document (service/openapi.py), in place of BentoML's."""
    return JSONResponse(_document(bool(bentoml.get_current_service().settings.api_token)))


async def _docs(_: Request) -> Response:
    # BentoML's own Swagger UI page, moved from / (which is ours) to /docs.
    from _bentoml_impl import server

    page = Path(server.__file__).parent / "main-openapi.html"
    return FileResponse(page) if page.is_file() else RedirectResponse("/docs.json")


DCGAN.mount_asgi_app(
    Starlette(routes=[
        Route("/", _page),
        Route("/model", _model),
        Route("/models", _models),
        Route("/project", _project, methods=["POST"]),
        Route("/directions", _directions),
        Route("/docs", _docs),
        Route("/docs.json", _docs_json),
        *oip.routes(),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]),
    path="/",
)
DCGAN.add_asgi_middleware(
    lifecycle.Lifecycle, drain_s=SETTINGS.drain_ms / 1000,
    reason=lambda: (r.not_ready_reason() if (r := _current_registry()) else "not ready: starting"),
    readiness=lambda: (r.readiness if (r := _current_registry()) else None),
)
DCGAN.add_asgi_middleware(
    RequestGuard, routes=REQUESTS,
    uploads={"/project": latent_space.LATENT_LIMITS.max_upload_bytes},
    max_body_bytes=LIMITS.max_body_bytes, token=SETTINGS.api_token,
    body_timeout_s=SETTINGS.body_timeout_ms / 1000,
    on_reject=metrics.count_rejected, on_request=metrics.observe_request,
    model_label=known_names(_current_registry),
)
# `bentoml serve`'s supervisor imports this module too: it logs a worker that dies.
lifecycle.log_worker_deaths()
