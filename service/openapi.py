"""The OpenAPI document, GET /docs.json: what the service really accepts and answers.

BentoML builds its document from each API's argument and return types, and loses what
does not fit that mould: unions (`start`: a seed or a latent vector), nullable fields,
the other answers of one endpoint (`format: "array"` bodies, image/png, image/gif), the
guard's refusals (400/401/413/415, `Error` bodies), 404 and 503, and the routes of the
mounted Starlette app (/model, /models, /project, /directions, the Open Inference
Protocol under /v2). So `document()` keeps only BentoML's title and its health and
metrics routes, and writes every other path here, from the same pydantic models that
check the requests, and the response models of service/schemas.py and
service/answers.py (JSON Schema 2020-12, as pydantic writes it, turned into OpenAPI
3.0's dialect by `_openapi30`). The service serves it
from its own /docs.json route, which comes before BentoML's; tests/test_openapi.py
holds the service to it with schemathesis.

A new endpoint, or a new answer: its operation in `_native_paths` (or `_oip_paths`), its
response models in service/answers.py, and their names in `document()`'s `models`.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from service import answers as a
from service.schemas import (
    Error,
    InterpolateArrays,
    InterpolateResponse,
    SampleArrays,
    SampleResponse,
)

REF = "#/components/schemas/{model}"
TAG, PROTOCOL_TAG, INFRA_TAG = "Service APIs", "Open Inference Protocol", "Infrastructure"


# --- the document ---------------------------------------------------------------------------

def document(base: dict[str, Any], requests: dict[str, type[BaseModel]], *,
             token: bool) -> dict[str, Any]:
    """The document: BentoML's (`base`, for its title and infrastructure routes) with
    every path of ours from `requests` (path -> request model) and the answers' models.
    `token`: the generation routes need a bearer token."""
    models = [*requests.values(), SampleResponse, SampleArrays, InterpolateResponse,
              InterpolateArrays, Error, a.EditFrames, a.EditArrays, a.CombineImage,
              a.CombineArrays, a.ProjectResponse, a.Directions, a.ModelsListing,
              a.ModelDescription, a.ProtocolError, a.ServerMetadata, a.Live, a.Ready,
              a.ModelReady, a.ModelMetadata, a.InferRequest, a.InferResponse]
    _, schemas = models_json_schema([(m, "validation") for m in models], ref_template=REF)
    components: dict[str, Any] = {"schemas": _openapi30(schemas["$defs"])}
    if token:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    infra = {path: copy.deepcopy(base["paths"][path])
             for path in ("/livez", "/healthz", "/readyz", "/metrics") if path in base["paths"]}
    if "/readyz" in infra:
        infra["/readyz"]["get"]["responses"]["503"] = {
            "description": "Not ready (yet): a model is loading or failed to load."}
    if "/metrics" in infra:
        infra["/metrics"]["get"]["responses"]["200"]["content"] = {"text/plain": {"schema": {
            "type": "string"}}}
    paths = {**_native_paths(requests, components["schemas"], token), **_oip_paths(token)}
    for path, item in base["paths"].items():  # BentoML's: each API's docstring
        if "description" in item.get("post", {}) and "post" in paths.get(path, {}):
            paths[path]["post"]["description"] = inspect.cleandoc(item["post"]["description"])
    info = {**base.get("info", {}), "description": _DESCRIPTION}
    return {
        "openapi": "3.0.3", "info": info, "servers": base.get("servers", [{"url": "."}]),
        "tags": [{"name": TAG, "description": "Images from the generators, and their latent space."},
                 {"name": PROTOCOL_TAG, "description": "KServe v2 REST, JSON and binary tensors."},
                 {"name": INFRA_TAG, "description": "Health and metrics."}],
        "paths": {**paths, **infra},
        "components": components,
    }


_DESCRIPTION = ("Images from DCGAN generators: samples by seed, walks through latent space, "
                "projection and edits. Every refusal names the field at fault and what it "
                "accepts. GET /models lists the generators served.")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _json(*names: str) -> dict[str, Any]:
    schema = _ref(names[0]) if len(names) == 1 else {"oneOf": [_ref(n) for n in names]}
    return {"application/json": {"schema": schema}}


BINARY = {"schema": {"type": "string", "format": "binary"}}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying (when overloaded).",
                               "schema": {"type": "integer", "minimum": 0}}}
REFUSALS = {
    400: "A bad request: the error names the field and what it accepts.",
    401: "No valid bearer token (only when the service has one, DCGAN_API_TOKEN).",
    404: "No such model (the error lists the models served), or no such resource.",
    408: "The body took longer than DCGAN_BODY_TIMEOUT_MS to arrive; the connection is closed.",
    413: "The body is larger than the service accepts.",
    415: "The body is not JSON (or not a kind this route takes).",
    503: "The model is not ready (loading or failed, the error says which), or overloaded.",
}


def _refusals(*codes: int, body: str = "Error") -> dict[str, Any]:
    out = {}
    for code in codes:
        out[str(code)] = {"description": REFUSALS[code], "content": _json(body)}
        if code == 503:
            out[str(code)]["headers"] = RETRY_AFTER
        if code == 401:
            out[str(code)]["headers"] = {"WWW-Authenticate": {"required": True,
                                                               "schema": {"type": "string"}}}
    return out


# Answers the request determines (service/caching.py): an ETag to revalidate with, and 304.
CACHE_HEADERS = {
    "ETag": {"description": "A strong tag of the model and the request; absent when the "
                            "server picks the seed.", "schema": {"type": "string"}},
    "Cache-Control": {"description": "How long a cache may keep the answer (no-store when "
                                     "the server picks the seed).", "schema": {"type": "string"}},
    "Vary": {"description": "Authorization, when the service has a token.",
             "schema": {"type": "string"}},
}
IF_NONE_MATCH = {"name": "If-None-Match", "in": "header", "required": False,
                 "description": "An ETag of an earlier answer: 304 if it still holds.",
                 "schema": {"type": "string"}}
NOT_MODIFIED = {"description": "Not modified: the answer of the ETag given still holds.",
                "headers": {key: CACHE_HEADERS[key] for key in ("ETag", "Cache-Control")}}


def _post(operation_id: str, summary: str, request: dict[str, Any], ok: dict[str, Any], *,
          token: bool,
          refusals: tuple[int, ...] = (400, 401, 404, 408, 413, 415, 503),
          body: str = "Error", tag: str = TAG, cached: bool = False, **extra) -> dict[str, Any]:
    responses = {"200": ok, **_refusals(*refusals, body=body)}
    if cached:
        ok["headers"] = {**ok.get("headers", {}), **CACHE_HEADERS}
        responses["304"] = NOT_MODIFIED
        extra["parameters"] = [*extra.get("parameters", []), IF_NONE_MATCH]
    operation = {"operationId": operation_id, "tags": [tag], "summary": summary,
                 "requestBody": {"required": True, "content": request},
                 "responses": responses, **extra}
    if token:
        operation["security"] = [{"bearer": []}]
    return {"post": operation}


def _get(operation_id: str, summary: str, ok: dict[str, Any], *,
         refusals: tuple[int, ...] = (),
         body: str = "Error", tag: str = TAG, parameters: list | None = None) -> dict[str, Any]:
    operation = {"operationId": operation_id, "tags": [tag], "summary": summary,
                 "responses": {"200": ok, **_refusals(*refusals, body=body)}}
    if parameters:
        operation["parameters"] = parameters
    return {"get": operation}


def _query(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": {"type": "string"}}


def _native_paths(requests: dict[str, type[BaseModel]], schemas: dict[str, Any],
                  token: bool) -> dict[str, Any]:
    def body(path: str) -> dict[str, Any]:
        return _json(requests[path].__name__)

    pictures = {"image/png": BINARY, "image/gif": BINARY}
    count = {"X-Seed": {"required": True, "description": "The first seed.",
                        "schema": {"type": "integer", "minimum": 0}},
             "X-Count": {"required": True, "description": "How many images.",
                         "schema": {"type": "integer", "minimum": 1}}}
    # An upload has the JSON request's fields, with files for pictures.
    upload = copy.deepcopy(schemas[requests["/project"].__name__])
    upload["properties"]["images"].update(items={"type": "string", "format": "binary"},
                                          description="One file part per picture (PNG or JPEG).")
    upload.pop("example", None)
    model_query = [_query("model", "The model (absent: the default)."),
                   _query("name", "The same as model.")]
    return {
        "/sample": _post(
            "sample", "Draw images by seed. format: json (base64 PNGs), png (one grid), array (floats).",
            body("/sample"), {"description": "The images, in the format asked for.", "headers": count,
                              "content": {**_json("SampleResponse", "SampleArrays"),
                                          "image/png": BINARY}}, token=token, cached=True),
        "/interpolate": _post(
            "interpolate", "Walk between two seeds or latents. format: frames, png (a strip), gif, array.",
            body("/interpolate"), {"description": "The frames, in the format asked for.",
                                   "content": {**_json("InterpolateResponse", "InterpolateArrays"),
                                               **pictures}}, token=token, cached=True),
        "/edit": _post(
            "edit", "Move a seed or latent along a direction, one frame per strength.",
            body("/edit"), {"description": "The frames, in the format asked for.",
                            "content": {**_json("EditFrames", "EditArrays"), **pictures}},
            token=token, cached=True),
        "/combine": _post(
            "combine", "The image of a weighted sum of seeds and latents.",
            body("/combine"), {"description": "The image, in the format asked for.",
                               "content": {**_json("CombineImage", "CombineArrays"),
                                           "image/png": BINARY}}, token=token, cached=True),
        "/project": _post(
            "project", "Pictures -> latents (the model's encoder), with their reconstructions.",
            {**body("/project"), "multipart/form-data": {"schema": upload}},
            {"description": "The latents.", "content": _json("ProjectResponse")}, token=token),
        "/directions": _get("directions", "A model's edit directions (SeFa, class means).",
                            {"description": "The directions.", "content": _json("Directions")},
                            refusals=(404, 503), parameters=model_query),
        "/models": _get("models", "Every model served, with its state.",
                        {"description": "The models.", "content": _json("ModelsListing")}),
        "/model": _get("model", "One model's card, providers and limits, and the service's settings.",
                       {"description": "The model.", "content": _json("ModelDescription")},
                       refusals=(404, 503),
                       parameters=[_query("name", "The model (absent: the default).")]),
    }


def _oip_paths(token: bool) -> dict[str, Any]:
    error = "ProtocolError"
    paths: dict[str, Any] = {
        "/v2": _get("server_metadata", "Server metadata.", {"description": "The server.",
                                         "content": _json("ServerMetadata")}, tag=PROTOCOL_TAG),
        "/v2/health/live": _get("server_live", "Liveness.", {"description": "Alive.", "content": _json("Live")},
                                tag=PROTOCOL_TAG),
        "/v2/health/ready": _get("server_ready", "Readiness.", {"description": "Every model ready.",
                                                "content": _json("Ready")},
                                 tag=PROTOCOL_TAG, refusals=(503,), body="Ready"),
    }
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    version = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
    # A name holding a line break is not routed to the protocol at all: the router's 404.
    unrouted = {"text/plain": {"schema": {"type": "string"}}}
    for base, parameters, suffix in (("/v2/models/{name}", [name], ""),
                                     ("/v2/models/{name}/versions/{version}", [name, version],
                                      "_version")):
        paths[base] = _get(f"model_metadata{suffix}", "Model metadata: inputs, outputs, limits.",
                           {"description": "The model.", "content": _json("ModelMetadata")},
                           refusals=(404, 503), body=error, tag=PROTOCOL_TAG, parameters=parameters)
        paths[f"{base}/ready"] = _get(
            f"model_ready{suffix}", "Model readiness.", {"description": "Ready.", "content": _json("ModelReady")},
            refusals=(404, 503), body=error, tag=PROTOCOL_TAG, parameters=parameters)
        binary = {"schema": {"type": "string", "format": "binary", "description":
                             "The JSON header, then the binary inputs."}}
        paths[f"{base}/infer"] = _post(
            f"model_infer{suffix}", "Images from seeds or latents (binary tensors too).",
            {**_json("InferRequest"), "application/octet-stream": binary},
            {"description": "The outputs.", "content": {
                **_json("InferResponse"), "application/octet-stream": BINARY},
             "headers": {"Inference-Header-Content-Length": {
                 "description": "With binary outputs: the length of the JSON header.",
                 "schema": {"type": "integer", "minimum": 0}}}},
            token=token, refusals=(400, 401, 404, 408, 413, 415, 503), body=error, tag=PROTOCOL_TAG,
            parameters=parameters, cached=True)
        for path in (base, f"{base}/ready", f"{base}/infer"):
            for operation in paths[path].values():
                operation["responses"]["404"]["content"].update(unrouted)
    return paths


# --- JSON Schema 2020-12 (pydantic's) -> OpenAPI 3.0 ------------------------------------------

def _openapi30(schema: Any) -> Any:
    """OpenAPI 3.0's schema objects know no `{"type": "null"}` (they say `nullable`), no
    `const` and no siblings beside `$ref`, and a default must be a valid value."""
    if isinstance(schema, list):
        return [_openapi30(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: ({name: _openapi30(s) for name, s in value.items()}
                 if key in ("properties", "$defs") else _openapi30(value))
           for key, value in schema.items()}
    for key in ("anyOf", "oneOf"):
        branches = out.get(key)
        if branches and {"type": "null"} in branches:
            rest = [b for b in branches if b != {"type": "null"}]
            out["nullable"] = True
            del out[key]
            if len(rest) == 1 and "$ref" not in rest[0]:
                out = {**rest[0], **out}
            else:
                out[key] = rest
    if "default" in out and out["default"] is None and not out.get("nullable"):
        del out["default"]  # a field that is absent until known, never null
    if "const" in out:
        out["enum"] = [out.pop("const")]
    if "$ref" in out and len(out) > 1:
        out["allOf"] = [{"$ref": out.pop("$ref")}]
    if "examples" in out and isinstance(out["examples"], list):
        out.setdefault("example", out.pop("examples")[0])
    return out
