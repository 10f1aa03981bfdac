"""The service's settings: every DCGAN_* environment variable it reads, in one frozen
dataclass, read once at start-up with `Settings.from_env()`.

Each field carries its variable, what it accepts and what it means (`field(metadata=...)`);
the README's settings table lists the same (tests/test_settings.py compares them). An
empty variable counts as unset. Every bad value is reported, all at once, in one line
each, naming the variable and what it accepts, as one `SettingsError`: the service then
stays up, not ready, with those lines as its reason (service/service.py).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any

from models.generation import model_name
from service.schemas import Limits

# A served model's name: it goes into URLs (/v2/models/<name>) and metric labels.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
BOOLEANS = {"1": True, "0": False, "true": True, "false": False,
            "yes": True, "no": False, "on": True, "off": False}


class SettingsError(ValueError):
    """Bad settings; `problems` has one line per bad variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _setting(env: str, default: Any, *, meaning: str, kind: type = str,
             low: int | None = None, high: int | None = None,
             choices: tuple[str, ...] | None = None, accepts: str | None = None,
             secret: bool = False) -> Any:
    """A field and its documentation: the variable, what it accepts (said in the error
    line for a bad value), and what it means. `kind` int takes `low` .. `high`; str takes
    `choices` when given."""
    if accepts is None:
        if kind is int:
            accepts = f"an integer from {low} to {high}"
        elif kind is bool:
            accepts = f"one of {', '.join(BOOLEANS)}"
        elif kind is tuple:
            accepts = "a comma-separated list"
        elif choices:
            accepts = f"one of {', '.join(choices)}"
        else:
            accepts = "any text"
    return field(default=default, metadata={
        "env": env, "kind": kind, "low": low, "high": high, "choices": choices,
        "accepts": accepts, "meaning": meaning, "secret": secret})


@dataclass(frozen=True)
class Settings:
    """What the service is told by its environment (defaults: the service as shipped)."""

    models: tuple[tuple[str, str], ...] | None = _setting(
        "DCGAN_MODELS", None, kind=tuple,
        accepts="a comma-separated list of model-store tags and .onnx paths, each "
                "optionally `name=tag-or-path`",
        meaning="the generators to serve, the first by default; a name is the tag's or "
                "file's, without `dcgan-` (`dcgan-mnist:latest` is `mnist`); unset: every "
                "generator in `models/pretrained/`, else every `dcgan-*:latest` in the store")
    model: str | None = _setting(
        "DCGAN_MODEL", None, accepts="a model-store tag or the path of an .onnx file",
        meaning="deprecated: one generator, as `DCGAN_MODELS` with one entry; not with it")
    api_token: str | None = _setting(
        "DCGAN_API_TOKEN", None, accepts="printable ASCII without spaces", secret=True,
        meaning="when set, `/sample`, `/interpolate`, `/project`, `/edit` and `/combine` "
                "need `Authorization: Bearer <token>`")
    device: str = _setting(
        "DCGAN_DEVICE", "auto", choices=("auto", "cpu", "cuda"),
        meaning="where ONNX Runtime runs; `auto`: the GPU when there is one")
    batching: bool = _setting(
        "DCGAN_BATCHING", True, kind=bool,
        meaning="off: one ONNX Runtime call per request")
    max_batch_size: int = _setting(
        "DCGAN_MAX_BATCH_SIZE", 64, kind=int, low=2, high=4096,
        meaning="images per ONNX Runtime call")
    max_latency_ms: int = _setting(
        "DCGAN_MAX_LATENCY_MS", 20000, kind=int, low=1, high=600_000,
        meaning="a request queued longer gets 503")
    latency_target_ms: int = _setting(
        "DCGAN_LATENCY_TARGET_MS", 250, kind=int, low=0, high=600_000,
        meaning="admission: each model's queue takes the images its measured rate makes in "
                "this time (at least one batch); a request beyond gets 503 at once, with "
                "`Retry-After`; `0`: no bound (requests queue up to `DCGAN_MAX_LATENCY_MS`)")
    batch_wait: str = _setting(
        "DCGAN_BATCH_WAIT", "queue", choices=("queue", "adaptive"),
        meaning="`queue`: a batch leaves as soon as the generator is free; `adaptive`: "
                "BentoML's own rule, which may hold a lone request hoping for company "
                "(and after a burst held a lone client's requests 60-80 ms for over 30 s here)")
    inline_images: int | None = _setting(
        "DCGAN_INLINE_IMAGES", None, kind=int, low=0, high=4096,
        meaning="merged batches of up to this many images run in the event loop's thread, "
                "larger ones in a worker thread; unset: `DCGAN_MAX_BATCH_SIZE` on CPU, "
                "`0` on a GPU")
    ort_threads: int | None = _setting(
        "DCGAN_ORT_THREADS", None, kind=int, low=1, high=1024,
        meaning="ONNX Runtime intra-op threads; they never spin; unset: the CPUs available "
                "(cgroup quota included)")
    max_n: int = _setting(
        "DCGAN_MAX_N", 128, kind=int, low=1, high=4096,
        meaning="most images per `/sample` request (fewer for big images: at most 2^22 "
                "values per request)")
    max_steps: int = _setting(
        "DCGAN_MAX_STEPS", 64, kind=int, low=2, high=4096,
        meaning="most frames per `/interpolate` request")
    max_body_bytes: int = _setting(
        "DCGAN_MAX_BODY_BYTES", 64 * 1024, kind=int, low=1, high=64 * 1024 * 1024,
        meaning="largest request body; a larger one gets 413")
    cache_max_age: int = _setting(
        "DCGAN_CACHE_MAX_AGE", 86400, kind=int, low=0, high=31_536_000,
        meaning="seconds a browser or CDN may reuse an answer that the request determines "
                "(a seed given, or latents) without asking again; `0`: always revalidate "
                "with its `ETag`. Lower it when a model is redeployed under the same name")
    body_timeout_ms: int = _setting(
        "DCGAN_BODY_TIMEOUT_MS", 10_000, kind=int, low=100, high=600_000,
        meaning="most time from a request's start to the end of its body; a slower body "
                "gets 408 and its connection closed (a client that never finishes cannot "
                "hold a worker, nor its shutdown)")
    drain_ms: int = _setting(
        "DCGAN_DRAIN_MS", 1000, kind=int, low=0, high=600_000,
        meaning="after SIGTERM, /readyz answers 503 and new requests 503 with "
                "`Connection: close` for at least this long, and until the requests in "
                "flight have finished; then the worker closes its connections and stops")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """The settings in `environ`; raises SettingsError listing every bad value."""
        values: dict[str, Any] = {}
        problems: list[str] = []
        for f in fields(cls):
            raw = environ.get(f.metadata["env"], "")
            if raw == "":
                continue
            try:
                values[f.name] = _parse(f, raw)
            except ValueError as exc:
                problems.append(bad_value_line(f, raw, exc.args[0] if f.metadata["kind"] is tuple else None))
        if "models" in values and "model" in values:
            problems.append("DCGAN_MODEL: leave it unset when DCGAN_MODELS is set (it is the "
                            "deprecated one-model form)")
        if problems:
            raise SettingsError(problems)
        return cls(**values)

    @property
    def model_specs(self) -> list[tuple[str, str]] | None:
        """(name, spec) of each generator to serve, the default first; None: the defaults."""
        if self.models:
            return list(self.models)
        if self.model:
            return [(model_name(self.model), self.model)]
        return None

    @property
    def limits(self) -> Limits:
        return Limits(max_n=self.max_n, max_steps=self.max_steps,
                      max_body_bytes=self.max_body_bytes)


def describe_fields() -> list[dict[str, Any]]:
    """One row per setting: variable, default, accepts, meaning (the README's table)."""
    return [{"variable": f.metadata["env"], "default": f.default, "accepts": f.metadata["accepts"],
             "meaning": f.metadata["meaning"]} for f in fields(Settings) if f.default is not MISSING]


def bad_value_line(f: Field, raw: str, why: str | None = None) -> str:
    """`DCGAN_X=value: must be <what it accepts>` (and why not, when said); a secret's
    value is never shown."""
    name = f.metadata["env"]
    if f.metadata["secret"]:
        shown = name
    elif raw.isprintable() and len(raw) <= 40:
        shown = f"{name}={raw}"
    else:
        shown = f"{name}={raw[:40]!r}"
    return f"{shown}: must be {f.metadata['accepts']}" + (f" ({why})" if why else "")


def parse_models(raw: str) -> tuple[tuple[str, str], ...]:
    """`spec, name=spec, ...` -> ((name, spec), ...); ValueError saying what is wrong."""
    pairs: list[tuple[str, str]] = []
    for entry in (part.strip() for part in raw.split(",")):
        if not entry:
            raise ValueError("an empty entry")
        name, sep, spec = entry.partition("=")
        if not sep or not MODEL_NAME.fullmatch(name.strip()):  # no name given
            name, spec = model_name(entry), entry
        name, spec = name.strip(), spec.strip()
        if not spec:
            raise ValueError(f"no tag or path for {name}")
        if not MODEL_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a usable model name: give one as name=..., "
                             "letters, digits, '.', '_' and '-'")
        if name in dict(pairs):
            raise ValueError(f"two models named {name}: name one as other-name=...")
        pairs.append((name, spec))
    return tuple(pairs)


def _parse(f: Field, raw: str) -> Any:
    meta = f.metadata
    kind = meta["kind"]
    if kind is bool:
        if (flag := BOOLEANS.get(raw.strip().lower())) is None:
            raise ValueError(raw)
        return flag
    if kind is tuple:
        return parse_models(raw)
    if kind is int:
        value = int(raw)  # ValueError for anything but an integer
        if not meta["low"] <= value <= meta["high"]:
            raise ValueError(raw)
        return value
    if meta["choices"] and raw not in meta["choices"]:
        raise ValueError(raw)
    if meta["secret"] and not all("!" <= c <= "~" for c in raw):
        # A header cannot carry it as sent: a stray newline from a secret file, say,
        # would otherwise lock every client out without a word.
        raise ValueError("not printable ASCII")
    return raw
