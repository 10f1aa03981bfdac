"""The guard in front of the generation routes: an ASGI middleware that checks the
bearer token, the body size, the JSON and the request model, in that order, before
BentoML or the generator sees the request, and answers 401/413/415/400 itself with a
message that names the field and what it accepts (`describe`).

Reading a body is bounded in time (`body_timeout_s`, from the request's start): a client
that stops sending gets 408 and its connection closed, so it cannot hold a worker, nor
the worker's shutdown, which waits for the requests in flight.

The Open Inference Protocol's infer routes (`/v2/models/<name>[/versions/<v>]/infer`)
get the token and the body size only: their bodies may be binary tensors, which the
protocol's handler (service/oip.py) parses; refusals there take the protocol's form,
`{"error": "..."}`.

It also times and counts every generation request it lets through or refuses, by
endpoint, model and status code (`on_request`), the model label coming from
`model_label` so that only served names become label values.

What it checks against (the token, the body limit, the request models with their
limits) is given when it is built, from the settings read at start-up.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError


def error_body(message: str, field: str | None = None) -> dict[str, Any]:
    """The body of every refusal of the native API (schemas.Error in the OpenAPI document)."""
    message = _capped(message)
    return {"error": message, "detail": [{"loc": [field] if field else [], "msg": message}]}


# The Open Inference Protocol's infer routes, and the model each names.
INFER_ROUTE = re.compile(r"/v2/models/(?P<model>[^/]+)(?:/versions/[^/]+)?/infer")
INFER_ENDPOINT = "infer"


BOM = b"\xef\xbb\xbf"  # UTF-8's byte-order mark, which RFC 8259 lets a parser ignore
MAX_DETAILS = 10  # entries of `detail`; the rest are counted, not listed
MAX_ERROR_CHARS = 2000  # of the one-line `error`: a bad request cannot buy a big answer


def describe(exc: ValidationError, model: type[BaseModel]) -> dict[str, Any]:
    """A pydantic error -> {"error": one line per field, "detail": [{loc, msg}]}: each
    message names the field and says what it accepts (the model's `RULES`). Unknown
    fields share one message, and both parts are capped, so the answer stays small
    whatever the request holds."""
    rules = getattr(model, "RULES", {})
    messages: dict[str, str] = {}
    unknown: list[str] = []
    for err in exc.errors(include_url=False):
        field = str(err["loc"][0]) if err["loc"] else "body"
        if err["type"] == "extra_forbidden":
            unknown.append(field)
            continue
        if field in messages:  # a union reports one error per branch: keep one line
            continue
        if err["type"] == "missing":
            messages[field] = f"{field} is required: {rules.get(field, 'see /docs')}"
        elif field in rules:
            got = err.get("input") if len(err["loc"]) == 1 else None
            shown = f", got {_short(got)}" if got is not None else ""
            messages[field] = f"{field} must be {rules[field]}{shown}"
        else:
            messages[field] = f"{field}: {_short(err['msg'], 120)}"
    if unknown:
        shown = ", ".join(_short(name, 40) for name in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        word = "field" if len(unknown) == 1 else "fields"
        messages[unknown[0]] = (f"unknown {word} {shown}{more} "
                                f"(accepted: {', '.join(model.model_fields)})")
    detail = [{"loc": [f], "msg": _capped(m)} for f, m in list(messages.items())[:MAX_DETAILS]]
    return {"error": _capped("; ".join(messages.values())), "detail": detail}


def _capped(message: str) -> str:
    """At most MAX_ERROR_CHARS: a message may quote the request (an unknown name)."""
    return message if len(message) <= MAX_ERROR_CHARS else message[: MAX_ERROR_CHARS - 3] + "..."


def _short(value: Any, limit: int = 40) -> str:
    try:
        text = value if isinstance(value, str) and limit > 40 else json.dumps(value)
    except (TypeError, ValueError):
        text = type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_json(body: bytes) -> Any:
    """The request body as JSON (RFC 8259): UTF-8, a leading byte-order mark ignored.
    (NaN and Infinity parse here, so that the request model names the field they are
    in.) Raises ValueError with the one-line reason."""
    if body.startswith(BOM):
        body = body[len(BOM):]
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("request body: JSON must be UTF-8 encoded") from None
    try:
        return json.loads(text or "{}")
    except RecursionError:
        raise ValueError("request body: nested too deeply") from None
    except ValueError:
        raise ValueError("request body: not valid JSON") from None


def bearer_token(values: list[bytes]) -> bytes | None:
    """The credentials of the one `Authorization: Bearer <token>` header (the scheme is
    case-insensitive, RFC 7235), or None when there is none, another scheme, or more
    than one header (which of two tokens counts would be a guess)."""
    if len(values) != 1:
        return None
    scheme, _, credentials = values[0].strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    return credentials.strip()


class RequestGuard:
    """ASGI middleware for the generation routes: bearer token, body size, JSON, and the
    request model, in that order, answering 401/413/415/400 itself. Checking here, before
    BentoML parses the body, keeps bad input from costing work or logging tracebacks.
    Health, metrics, the page and /model pass untouched.

    `routes` maps each guarded path to its request model (the infer routes are always
    guarded); `token` (None or empty: no token needed) and `max_body_bytes` come from
    the settings; `uploads` maps paths that take pictures to their own body limit, and
    there a multipart/form-data body passes on unparsed (after the token and size
    checks) for the endpoint to read; `on_reject(endpoint, reason, model)` is told about every refusal and
    `on_request(endpoint, model, status, seconds)` about every request; `model_label`
    maps the model a request names (None: none named) to its metric label."""

    def __init__(self, app, *, routes: Mapping[str, type[BaseModel]], max_body_bytes: int,
                 token: str | None = None, uploads: Mapping[str, int] | None = None,
                 body_timeout_s: float | None = None,
                 on_reject: Callable[[str, str, str], None] | None = None,
                 on_request: Callable[[str, str, int, float], None] | None = None,
                 model_label: Callable[[str | None], str] | None = None) -> None:
        self.app = app
        self.routes = dict(routes)
        self.uploads = dict(uploads or {})
        self.token = (token or "").encode()
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.on_reject = on_reject or (lambda endpoint, reason, model: None)
        self.on_request = on_request or (lambda endpoint, model, status, seconds: None)
        self.model_label = model_label or (lambda name: "")

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "").rstrip("/")  # "/sample/" is redirected to "/sample"
        if scope["type"] != "http" or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        model = self.routes.get(path)
        infer = None if model is not None else INFER_ROUTE.fullmatch(path)
        if model is None and infer is None:
            return await self.app(scope, receive, send)
        endpoint = INFER_ENDPOINT if infer else path.strip("/")
        # The model label is known from the path (infer) or once the body is parsed.
        labelled = {"model": self.model_label(infer["model"]) if infer else ""}
        status, start = [500], time.perf_counter()

        async def recording_send(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self._guard(scope, receive, recording_send, path, endpoint, model, labelled)
        except asyncio.CancelledError:  # BentoML's request timeout cancels the request
            status[0] = 504
            raise
        finally:
            self.on_request(endpoint, labelled["model"], status[0], time.perf_counter() - start)

    async def _guard(self, scope, receive, send, path: str, endpoint: str,
                     model: type[BaseModel] | None, labelled: dict[str, str]) -> None:
        """Check the request for `endpoint` (request model `model`; None: an infer route,
        token and size only), answer a refusal, or hand it on."""
        raw_headers = list(scope.get("headers") or [])
        headers = dict(raw_headers)
        deadline = (asyncio.get_running_loop().time() + self.body_timeout_s
                    if self.body_timeout_s else None)

        async def refuse(status: int, reason: str, message: str, body=None) -> None:
            self.on_reject(endpoint, reason, labelled["model"])
            if model is None:  # the Open Inference Protocol's form
                body = {"error": message}
            payload = json.dumps(body or error_body(message)).encode()
            extra = [(b"www-authenticate", b"Bearer")] if status == 401 else []
            if status == 408:  # the rest of the body may still come: not on this connection
                extra.append((b"connection", b"close"))
            await send({"type": "http.response.start", "status": status, "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()), *extra]})
            await send({"type": "http.response.body", "body": payload})

        if self.token:
            given = [value for name, value in raw_headers if name == b"authorization"]
            if len(given) > 1:
                return await refuse(400, "unauthorized", "send one Authorization header, "
                                    f"not {len(given)}")
            token = bearer_token(given)
            if token is None or not hmac.compare_digest(token, self.token):
                return await refuse(401, "unauthorized", "a bearer token is required: "
                                    "send the header 'Authorization: Bearer <token>'")
        limit = self.uploads.get(path, self.max_body_bytes)
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await refuse(413, "too_large", f"request body: at most {limit} bytes")
        content_type = headers.get(b"content-type", b"application/json").split(b";")[0]
        content_type = content_type.strip().lower()
        upload = content_type == b"multipart/form-data" and path in self.uploads
        if model is not None and content_type not in (b"application/json", b"") and not upload:
            also = " or a multipart/form-data upload" if path in self.uploads else ""
            return await refuse(415, "unsupported_media_type",
                                f"request body: send JSON with 'Content-Type: application/json'{also}")
        body = bytearray()
        try:
            async with asyncio.timeout_at(deadline):
                while True:  # read it all (bounded), then hand BentoML the same bytes
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    body += message.get("body", b"")
                    if len(body) > limit:
                        return await refuse(413, "too_large", f"request body: at most {limit} bytes")
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            return await refuse(408, "body_timeout", "request body: not received in full within "
                                f"{self.body_timeout_s * 1000:.0f} ms (DCGAN_BODY_TIMEOUT_MS)")
        if model is None:  # an infer route: its handler parses the (maybe binary) body
            return await self.app(scope, _replay(body, receive), send)
        if upload:  # a picture upload: the endpoint reads the form (and its model)
            labelled["model"] = self.model_label(_form_model(body))
            return await self.app(scope, _replay(body, receive), send)
        try:
            data = parse_json(bytes(body))
        except ValueError as exc:
            return await refuse(400, "malformed_json", str(exc))
        if not isinstance(data, dict):
            return await refuse(400, "malformed_json", "request body: a JSON object is expected")
        named = data.get("model")
        labelled["model"] = self.model_label(named if isinstance(named, str) else None)
        try:
            model.model_validate(data)
        except ValidationError as exc:
            return await refuse(400, "invalid", "", describe(exc, model))
        except RecursionError:
            return await refuse(400, "invalid", "request body: nested too deeply")
        if body.startswith(BOM):
            # BentoML parses the body again with pydantic's JSON reader, which does not
            # ignore the mark: hand it the same JSON without it.
            body = body[len(BOM):]
            scope = {**scope, "headers": [(k, str(len(body)).encode() if k == b"content-length" else v)
                                          for k, v in raw_headers]}

        await self.app(scope, _replay(body or b"{}", receive), send)


# The `model` field of a multipart upload, for the metric label only (the endpoint reads
# the form itself).
FORM_MODEL = re.compile(rb'content-disposition:[ \t]*form-data;[ \t]*name="model"\r\n'
                        rb'(?:[^\r\n]*\r\n)*?\r\n([^\r\n]{1,128})\r\n', re.IGNORECASE)


def _form_model(body: bytes | bytearray) -> str | None:
    found = FORM_MODEL.search(body)
    return found.group(1).decode("utf-8", "replace") if found else None


def _replay(body: bytes | bytearray, receive):
    """An ASGI `receive` that gives `body` (already read) once, then defers to `receive`."""
    replayed = False

    async def replay():
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": bytes(body), "more_body": False}

    return replay
