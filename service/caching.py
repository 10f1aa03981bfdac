"""HTTP caching of the answers that a request determines: a strong `ETag`, 304 for a
matching `If-None-Match`, and `Cache-Control`.

An answer of /sample (with a `seed`), /interpolate, /edit, /combine and the Open
Inference Protocol's infer (seeds or latents, always) is a function of
the model file and the request alone: the same request gives the same bytes (the
generation layer's promise). Its tag is a hash of the model's file digest (SHA-256, the
registry's), its served name, version and execution provider, and the canonical request:
the validated request model with its defaults filled in, keys sorted, the `model` it
names resolved to the served name (so `"model": null` and the default's name share a
tag); for infer, each input tensor's datatype, shape and bytes, the parameters and
the outputs asked for. The format is part of the request body, so nothing in `Accept`
changes the answer. The tag is computed before any generation work, so a matching `If-None-Match`
costs no inference. A /sample without a seed draws a random one: no tag, `no-store`.

`Cache-Control` of a tagged answer: `public, max-age=<DCGAN_CACHE_MAX_AGE>, immutable`;
`private` instead of `public` when a token is required (a shared cache must not hand
the images to clients without the token), with `Vary: Authorization`. The bytes for a
tag never change, but a model redeployed under the same name gives the same request
new bytes (and a new tag): `max-age` bounds how long a cache keeps serving the old
ones without asking; `0` makes every reuse a revalidation (`no-cache`, then 304).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from starlette.responses import Response

# The endpoints whose answers are tagged.
ENDPOINTS = frozenset({"sample", "interpolate", "edit", "combine"})
# Bump when the service encodes the same images differently (PNG options, JSON layout):
# the same request and model would then give other bytes, so they need another tag.
ENCODING_VERSION = 1
NO_STORE = "no-store"


def entity_tag(endpoint: str, served: Any, req: Any) -> str | None:
    """The strong ETag of `endpoint`'s answer to `req` (a validated request model) on
    `served` (a registry's Served), or None when the answer is not reproducible (a seed
    the server draws) or `endpoint` is not tagged."""
    if endpoint not in ENDPOINTS or (endpoint == "sample" and req.seed is None):
        return None
    return tag_of(endpoint, served, {**req.model_dump(mode="json"), "model": served.name})


def tag_of(endpoint: str, served: Any, request: dict[str, Any]) -> str:
    """The strong ETag of `endpoint`'s answer on `served` to `request`, canonical JSON
    values (the Open Inference Protocol's handler makes its own)."""
    key = {"encoding": ENCODING_VERSION, "endpoint": endpoint, "model": served.name,
           "version": served.version, "digest": served.digest,
           "provider": served.generator.provider, "request": request}
    text = json.dumps(key, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'


def matches(if_none_match: str | None, tag: str) -> bool:
    """Whether an `If-None-Match` header names `tag` (RFC 9110 13.1.2: `*`, or a list of
    tags compared weakly, so `W/"x"` matches `"x"`)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    given = (part.strip() for part in if_none_match.split(","))
    return tag in (part[2:] if part.startswith("W/") else part for part in given)


class CachePolicy:
    """The caching headers of the service's answers, from its settings: `max_age` in
    seconds, `private` when a token is required."""

    def __init__(self, max_age: int, private: bool) -> None:
        if max_age > 0:
            scope = "private" if private else "public"
            self.cache_control = f"{scope}, max-age={max_age}, immutable"
        else:
            self.cache_control = ("private, " if private else "") + "no-cache"
        self.vary = "Authorization" if private else None

    def headers(self, tag: str | None) -> dict[str, str]:
        """The headers of an answer tagged `tag` (None: not reproducible)."""
        if tag is None:
            return {"Cache-Control": NO_STORE}
        headers = {"ETag": tag, "Cache-Control": self.cache_control}
        if self.vary:
            headers["Vary"] = self.vary
        return headers

    def not_modified(self, tag: str) -> Response:
        """304: the client's copy is this answer (no body; the headers a 200 would carry)."""
        return Response(status_code=304, headers=self.headers(tag))

    def mark(self, response: Response, tag: str | None) -> Response:
        """Add the caching headers to a successful answer."""
        if response.status_code == 200:
            response.headers.update(self.headers(tag))
        return response
