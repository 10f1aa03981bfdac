"""The Open Inference Protocol (KServe v2, REST) beside the native API, over the same
registry, batchers and generation layer, so Triton's and KServe's clients work unchanged.

    GET  /v2                                      server metadata
    GET  /v2/health/live, /v2/health/ready        200, or 503 while not every model is ready
    GET  /v2/models/<name>[/versions/<v>]         model metadata: platform, versions, tensors
    GET  /v2/models/<name>[/versions/<v>]/ready   200, or 503 while that model is not
    POST /v2/models/<name>[/versions/<v>]/infer   images

Inputs: `seed` (INT64 [N]) or `z` (FP32 [N, nz]), and for a class-conditional model
`label` (INT64 [N]; absent: seed % num_classes, and required with `z`). The request
parameter `truncation` redraws seeds' latent entries beyond it, or clips a given `z`, as
/sample and /interpolate do. Outputs: `images` (UINT8 [N, C, H, W], the pixels of the
native API's PNGs; FP32 in [-1, 1] when the output's parameter `datatype` is "FP32"; a
model of 2-D points gives FP32 only), `seed` or `z` as given, and `label` (conditional
models). Latents and labels come from the generation layer's `plan_tensors`, so seed 7
gives the pixels of `POST /sample {"seed": 7}`.

Tensors travel as JSON (`data`, row-major) or with the binary tensor extension: the
request's JSON header is `Inference-Header-Content-Length` bytes long, followed by each
input with `parameters.binary_data_size` in order; outputs are binary when their
`binary_data` parameter, else the request's `binary_data_output` parameter, says so.
A body compressed with gzip or deflate (`Content-Encoding`) is accepted.

Every refusal has the protocol's form, {"error": "..."}: 400 for a bad request (naming
the input, parameter or output and what it accepts; every limit of the native API
holds: N, nz, label range, latent values, body size), 404 for an unknown model or
version, 503 for a model not ready (the protocol says a 4xx for "not ready"; 503, as
KServe's own server and /readyz answer, is what probes and load balancers expect).
Token and body size are checked by the guard before this module sees the request.
"""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from typing import Any

import bentoml
import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from models import generation as gen
from models.generation import GenerationError
from service import metrics
from service.caching import matches, tag_of
from service.registry import Served, ServeError
from service.runtime import Overloaded, offload

ENDPOINT = "infer"  # the metrics' endpoint label, as the guard counts these requests
PLATFORM = "onnxruntime_onnx"
DTYPES = {"INT64": np.dtype("<i8"), "FP32": np.dtype("<f4"), "UINT8": np.dtype("u1")}
INPUT_TYPES = {"seed": "INT64", "z": "FP32", "label": "INT64"}
REQUEST_PARAMETERS = ("truncation", "binary_data_output")
# Sent by Triton's clients and tools; they ask for nothing this service does differently.
IGNORED_PARAMETERS = ("priority", "timeout", "sequence_id", "sequence_start", "sequence_end")
OUTPUT_PARAMETERS = ("binary_data", "datatype")


class ProtocolError(Exception):
    """A request the protocol handler refuses: 400 unless said otherwise."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _service():
    return bentoml.get_current_service()


# --- health and metadata ----------------------------------------------------------------

async def server_metadata(_: Request) -> Response:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("dcgan-service")
    except PackageNotFoundError:
        ours = "unknown"
    return JSONResponse({"name": "dcgan-service", "version": ours,
                         "extensions": ["binary_tensor_data"]})


async def live(_: Request) -> Response:
    return JSONResponse({"live": True})


async def ready(_: Request) -> Response:
    registry = _service().registry
    if registry.all_ready():
        return JSONResponse({"ready": True})
    waiting = sorted(set(registry.models) - registry.ready_everywhere())
    reason = registry.error or f"not ready yet: {', '.join(waiting)}"
    return JSONResponse({"ready": False, "error": reason}, status_code=503)


def _model(request: Request) -> Served:
    """The ready model the path names, at the version it names (ServeError or
    ProtocolError 404 otherwise)."""
    registry = _service().registry
    served = registry.serving(request.path_params["name"])
    asked = request.path_params.get("version")
    if asked is not None and asked != served.version:
        raise ProtocolError(f"model {served.name} has no version {asked!r}; it serves "
                            f"version {served.version}", 404)
    return served


async def model_ready(request: Request) -> Response:
    try:
        served = _model(request)
    except (ServeError, ProtocolError) as exc:
        return error(str(exc), exc.status)
    if served.name not in _service().registry.ready_everywhere():
        return error(f"model {served.name} is not ready in every worker yet", 503)
    return JSONResponse({"name": served.name, "ready": True})


async def model_metadata(request: Request) -> Response:
    try:
        served = _model(request)
    except (ServeError, ProtocolError) as exc:
        return error(str(exc), exc.status)
    card = served.card
    images_type = "UINT8" if card.is_image else "FP32"
    inputs = [tensor("seed", "INT64", [-1]), tensor("z", "FP32", [-1, card.nz])]
    outputs = [tensor("images", images_type, [-1, *card.output_shape]),
               tensor("seed", "INT64", [-1]), tensor("z", "FP32", [-1, card.nz])]
    if card.num_classes:
        inputs.append(tensor("label", "INT64", [-1]))
        outputs.append(tensor("label", "INT64", [-1]))
    limits = _service().limits
    return JSONResponse({
        "name": served.name, "versions": [served.version], "platform": PLATFORM,
        "inputs": inputs, "outputs": outputs,
        "parameters": {"default": served.name == _service().registry.default,
                       "max_batch_size": limits.max_images(card.output_shape),
                       "num_classes": card.num_classes,
                       "truncation": [limits.min_truncation, limits.max_truncation],
                       "digest": served.digest, "card_name": card.name, "step": card.step},
    })


def tensor(name: str, datatype: str, shape: list[int]) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape}


# --- inference ----------------------------------------------------------------------------

async def infer(request: Request) -> Response:
    service = _service()
    label = service.registry.label(request.path_params["name"])
    try:
        served = _model(request)
        body = _decompress(await request.body(), request.headers.get("content-encoding"),
                           service.limits.max_body_bytes)
        header, binary = _split(body, request.headers.get("inference-header-content-length"))
        ask = parse_request(header, binary, served.card, service.limits)
        tag = tag_of(ENDPOINT, served, _canonical(ask))
        if matches(request.headers.get("if-none-match"), tag):
            return service.caching.not_modified(tag)
        plan = await offload(_plan, served.card, ask, heavy=ask["n"] > 8)
        images = await served.batcher.generate(plan.latents, plan.labels)
        content, headers = await offload(encode_response, served, ask, plan, images,
                                         heavy=images.size > 16 * 1024)
    except ServeError as exc:
        metrics.count_rejected(ENDPOINT, "unknown_model" if exc.status == 404 else "not_ready", label)
        return error(str(exc), exc.status)
    except (ProtocolError, GenerationError) as exc:
        status = getattr(exc, "status", 400)
        metrics.count_rejected(ENDPOINT, "unknown_model" if status == 404 else "invalid", label)
        return error(str(exc), status)
    except Overloaded as exc:
        metrics.count_rejected(ENDPOINT, "overloaded", label)
        return JSONResponse({"error": str(exc)}, status_code=503,
                            headers={"Retry-After": str(exc.retry_after)})
    metrics.count_images(ENDPOINT, len(images), served.name)
    return service.caching.mark(Response(content, headers=headers), tag)


def _canonical(ask: dict[str, Any]) -> dict[str, Any]:
    """A parsed request as the JSON values its answer depends on (service/caching.py)."""
    inputs = {name: [values.dtype.str, list(values.shape),
                     hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()]
              for name, values in ask["inputs"].items()}
    answered_id = ask["id"] if isinstance(ask["id"], str) else None  # as encode_response
    return {"inputs": inputs, "truncation": ask["truncation"], "id": answered_id,
            "outputs": [list(output) for output in ask["outputs"]]}


def _decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body as sent before `Content-Encoding` (gzip, deflate), at most `limit` bytes."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise ProtocolError(f"Content-Encoding {encoding} is not supported: send the body "
                            "uncompressed, or with gzip or deflate", 415)
    inflater = zlib.decompressobj(31 if encoding == "gzip" else 15)
    try:
        plain = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise ProtocolError(f"request body: not valid {encoding} data") from None
    if len(plain) > limit or inflater.unconsumed_tail:
        raise ProtocolError(f"request body: at most {limit} bytes once decompressed", 413)
    return plain


def _split(body: bytes, header_length: str | None) -> tuple[dict[str, Any], memoryview]:
    """(JSON header, binary tensor data) of a request body."""
    from service.guard import parse_json

    if header_length is None:
        json_part, binary = body, b""
    else:
        if not header_length.strip().isdigit() or int(header_length) > len(body):
            raise ProtocolError(f"Inference-Header-Content-Length must be an integer from 0 to "
                                f"the body's {len(body)} bytes, got {header_length!r}")
        cut = int(header_length)
        json_part, binary = body[:cut], body[cut:]
    try:
        header = parse_json(json_part)
    except ValueError as exc:
        raise ProtocolError(str(exc)) from None
    if not isinstance(header, dict):
        raise ProtocolError("request body: a JSON object is expected")
    return header, memoryview(binary)


def parse_request(header: dict[str, Any], binary: memoryview, card, limits) -> dict[str, Any]:
    """Check an inference request against the protocol, the model and the limits.
    Returns the inputs as arrays, the truncation, and the outputs asked for."""
    unknown = set(header) - {"id", "parameters", "inputs", "outputs"}
    if unknown:
        raise ProtocolError(f"unknown request field {sorted(unknown)[0]!r} "
                            "(accepted: id, parameters, inputs, outputs)")
    params = _object(header.get("parameters"), "parameters")
    for key in params:
        if key not in REQUEST_PARAMETERS and key not in IGNORED_PARAMETERS:
            raise ProtocolError(f"unknown request parameter {key!r} (accepted: "
                                f"{', '.join(REQUEST_PARAMETERS)})")
    truncation = params.get("truncation")
    if truncation is not None and (isinstance(truncation, bool) or not isinstance(truncation, (int, float))
                                   or not limits.min_truncation <= truncation <= limits.max_truncation):
        raise ProtocolError(f"parameter truncation must be a number from {limits.min_truncation} "
                            f"to {limits.max_truncation}, got {_short(truncation)}")
    binary_default = _flag(params.get("binary_data_output", False), "parameter binary_data_output")

    allowed = ["seed", "z"] + (["label"] if card.num_classes else [])
    most = limits.max_images(card.output_shape)
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    specs = header.get("inputs")
    if not isinstance(specs, list) or not specs:
        raise ProtocolError(f"inputs must be a list of tensors: seed or z{', and label' if card.num_classes else ''}")
    for spec in specs:
        spec = _object(spec, "each input")
        name = spec.get("name")
        if name not in allowed:
            why = ("this model is not class-conditional" if name == "label"
                   else f"accepted: {', '.join(allowed)}")
            raise ProtocolError(f"unknown input {_short(name)} ({why})")
        if name in inputs:
            raise ProtocolError(f"input {name} is given twice")
        shape = _shape(spec.get("shape"), name, card.nz, most)
        if spec.get("datatype") != INPUT_TYPES[name]:
            raise ProtocolError(f"input {name} must have datatype {INPUT_TYPES[name]}, "
                                f"got {_short(spec.get('datatype'))}")
        inputs[name], offset = _tensor(spec, name, shape, binary, offset)
    if offset != len(binary):
        raise ProtocolError(f"the binary part of the body holds {len(binary) - offset} bytes "
                            "beyond the inputs' binary_data_size")
    if ("seed" in inputs) == ("z" in inputs):
        raise ProtocolError("give exactly one of the inputs seed and z")
    n = len(inputs["seed"] if "seed" in inputs else inputs["z"])
    if "label" in inputs and len(inputs["label"]) != n:
        raise ProtocolError(f"input label must have shape [{n}], one per item, got "
                            f"[{len(inputs['label'])}]")
    if "z" in inputs and np.abs(inputs["z"]).max() > limits.max_latent_value:
        bound = limits.max_latent_value
        raise ProtocolError(f"input z must hold finite numbers from {-bound:g} to {bound:g}")
    return {"inputs": inputs, "n": n, "truncation": truncation, "id": header.get("id"),
            "outputs": _outputs(header.get("outputs"), inputs, card, binary_default)}


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} must be a JSON object")
    return value


def _flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise ProtocolError(f"{what} must be true or false, got {_short(value)}")
    return value


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _shape(shape: Any, name: str, nz: int, most: int) -> list[int]:
    expected = f"[N, {nz}]" if name == "z" else "[N]"
    if (not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool)
                                               for d in shape)
            or len(shape) != (2 if name == "z" else 1) or (name == "z" and shape[1] != nz)):
        raise ProtocolError(f"input {name} must have shape {expected}, got {_short(shape)}")
    if not 1 <= shape[0] <= most:
        raise ProtocolError(f"input {name}: N must be an integer from 1 to {most} for this "
                            f"model, got {shape[0]}")
    return shape


def _tensor(spec: dict[str, Any], name: str, shape: list[int], binary: memoryview,
            offset: int) -> tuple[np.ndarray, int]:
    """The input's values, from `data` or from the binary part at `offset`."""
    dtype = DTYPES[INPUT_TYPES[name]]
    count = math.prod(shape)
    size = _object(spec.get("parameters"), f"input {name}'s parameters").get("binary_data_size")
    if size is not None:
        if "data" in spec:
            raise ProtocolError(f"input {name} has both data and binary_data_size")
        if isinstance(size, bool) or not isinstance(size, int) or size != count * dtype.itemsize:
            raise ProtocolError(f"input {name}: binary_data_size must be {count * dtype.itemsize} "
                                f"bytes for shape {shape}, got {_short(size)}")
        if offset + size > len(binary):
            raise ProtocolError(f"input {name}: the body's binary part ends {offset + size - len(binary)} "
                                "bytes short of its binary_data_size")
        values = np.frombuffer(binary[offset:offset + size], dtype=dtype).astype(dtype.newbyteorder("="))
        offset += size
    else:
        values = _json_values(spec.get("data"), name, dtype, count)
    if name == "z" and not np.isfinite(values).all():
        raise ProtocolError("input z must hold finite numbers only (no NaN or infinity)")
    return values.reshape(shape), offset


def _json_values(data: Any, name: str, dtype: np.dtype, count: int) -> np.ndarray:
    """Row-major values of `data` (flat or nested lists), exactly `count` of them."""
    flat: list[Any] = []
    stack = [data] if isinstance(data, list) else None
    if stack is None:
        raise ProtocolError(f"input {name} needs data (a list of {count} numbers) or "
                            "parameters.binary_data_size")
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
            continue
        flat.append(item)
        if len(flat) > count:
            break
    if len(flat) != count:
        raise ProtocolError(f"input {name}: data must hold {count} values for its shape, "
                            f"got {'more' if len(flat) > count else len(flat)}")
    if dtype.kind == "i":
        if not all(type(v) is int and -2**63 <= v < 2**63 for v in flat):
            raise ProtocolError(f"input {name}: data must be integers from 0 to 2**63 - 1")
    elif not all(type(v) in (int, float) for v in flat):
        raise ProtocolError(f"input {name}: data must be numbers")
    return np.asarray(flat, dtype=dtype)


def _outputs(asked: Any, inputs: dict[str, np.ndarray], card, binary_default: bool
             ) -> list[tuple[str, str, bool]]:
    """(name, datatype, binary) of each output to send."""
    given = "seed" if "seed" in inputs else "z"
    available = ["images", "z"] + (["seed"] if given == "seed" else []) + (
        ["label"] if card.num_classes else [])
    images_type = "UINT8" if card.is_image else "FP32"
    if asked is None:
        names = ["images", given] + (["label"] if card.num_classes else [])
        return [(n, images_type if n == "images" else _OUT_TYPES[n], binary_default) for n in names]
    if not isinstance(asked, list):
        raise ProtocolError("outputs must be a list of {\"name\": ...} objects")
    chosen = []
    for spec in asked:
        spec = _object(spec, "each output")
        name = spec.get("name")
        if name not in available:
            why = "the request gave z, not seed" if name == "seed" else f"accepted: {', '.join(available)}"
            raise ProtocolError(f"unknown output {_short(name)} ({why})")
        params = _object(spec.get("parameters"), f"output {name}'s parameters")
        for key in params:
            if key not in OUTPUT_PARAMETERS:
                raise ProtocolError(f"output {name}: unknown parameter {key!r} "
                                    f"(accepted: {', '.join(OUTPUT_PARAMETERS)})")
        datatype = params.get("datatype", images_type if name == "images" else _OUT_TYPES[name])
        allowed = ({"UINT8", "FP32"} if card.is_image else {"FP32"}) if name == "images" else {_OUT_TYPES[name]}
        if datatype not in allowed:
            raise ProtocolError(f"output {name}: datatype must be {' or '.join(sorted(allowed))}, "
                                f"got {_short(datatype)}")
        chosen.append((name, datatype, _flag(params.get("binary_data", binary_default),
                                            f"output {name}'s binary_data")))
    return chosen


_OUT_TYPES = {"seed": "INT64", "z": "FP32", "label": "INT64"}


def _plan(card, ask: dict[str, Any]) -> gen.Plan:
    inputs = ask["inputs"]
    return gen.plan_tensors(
        card, seeds=inputs["seed"].tolist() if "seed" in inputs else None,
        latents=inputs.get("z"), labels=inputs.get("label"), truncation=ask["truncation"])


def encode_response(served: Served, ask: dict[str, Any], plan: gen.Plan,
                    images: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """The response body and headers: JSON, or a JSON header and binary tensors."""
    outputs, blobs = [], []
    for name, datatype, binary in ask["outputs"]:
        if name == "images":
            values = images if datatype == "FP32" else np.ascontiguousarray(
                gen.to_uint8(images).transpose(0, 3, 1, 2))  # the PNGs' pixels, as NCHW
        elif name == "seed":
            values = ask["inputs"]["seed"]
        elif name == "z":
            values = plan.latents
        else:
            values = plan.labels
        values = np.ascontiguousarray(values, dtype=DTYPES[datatype])
        out: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(values.shape)}
        if binary:
            data = values.tobytes()
            out["parameters"] = {"binary_data_size": len(data)}
            blobs.append(data)
        else:
            out["data"] = values.reshape(-1).tolist()
        outputs.append(out)
    response: dict[str, Any] = {"model_name": served.name, "model_version": served.version,
                                "outputs": outputs}
    if isinstance(ask["id"], str):
        response["id"] = ask["id"]
    head = json.dumps(response, separators=(",", ":")).encode()
    if not blobs:
        return head, {"content-type": "application/json"}
    return b"".join([head, *blobs]), {"content-type": "application/octet-stream",
                                      "inference-header-content-length": str(len(head))}


def routes() -> list[Route]:
    """The protocol's routes, for the service's Starlette app."""
    model = "/v2/models/{name}"
    versioned = "/v2/models/{name}/versions/{version}"
    return [
        Route("/v2", server_metadata),
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        *(Route(base, model_metadata) for base in (model, versioned)),
        *(Route(f"{base}/ready", model_ready) for base in (model, versioned)),
        *(Route(f"{base}/infer", infer, methods=["POST"]) for base in (model, versioned)),
    ]
