"""Where generators live: BentoML model-store names, finding the files to open, and the
names they are served under.

`dcgan export --register` stores a generator as `dcgan-<card name>`, one file
`generator.onnx` per entry. A spec is a path to an .onnx file or a model-store tag;
`model_name` gives the name a service serves it under (`dcgan-mnist:v3` and
`.../dcgan-mnist.onnx` are both `mnist`), and `default_specs` what a service serves when
told nothing: every generator bundled in models/pretrained, else every `dcgan-*:latest`
in the store, the default generator (`mnist`) first. BentoML is imported only when the
store is looked up.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from models.generation.errors import ModelLoadError

STORE_PREFIX = "dcgan-"
STORE_FILE = "generator.onnx"  # the file inside a model-store entry
DEFAULT_NAME = "mnist"  # the card name of the generator served by default
PRETRAINED = Path(__file__).resolve().parent.parent / "pretrained"
BUNDLED = PRETRAINED / f"{STORE_PREFIX}{DEFAULT_NAME}.onnx"


def store_name(name: str) -> str:
    """The model-store name of a generator whose card is called `name`."""
    return f"{STORE_PREFIX}{name}"


DEFAULT_TAG = f"{store_name(DEFAULT_NAME)}:latest"


def is_path(spec: str) -> bool:
    """A spec naming a file rather than a model-store tag."""
    return spec.endswith(".onnx") or os.sep in spec or Path(spec).exists()


def model_name(spec: str) -> str:
    """The name a generator is served under: the file's stem or the tag's name, without
    the store's `dcgan-` prefix."""
    stem = Path(spec).name.removesuffix(".onnx") if is_path(spec) else spec.split(":")[0]
    return stem[len(STORE_PREFIX):] if stem.startswith(STORE_PREFIX) and stem != STORE_PREFIX else stem


def _default_first(names: list[str]) -> list[str]:
    return sorted(names, key=lambda n: (model_name(n) != DEFAULT_NAME, n))


def default_specs() -> list[str]:
    """Every bundled generator file (not a generator's encoder sidecar, `*.encoder.onnx`),
    else every `dcgan-*:latest` in the model store; the default generator first.
    ModelLoadError when there is none."""
    bundled = [str(p) for p in PRETRAINED.glob(f"{STORE_PREFIX}*.onnx")
               if p.is_file() and not p.name.endswith(".encoder.onnx")]
    if bundled:
        return _default_first(bundled)
    import bentoml

    try:
        names = {m.tag.name for m in bentoml.models.list() if m.tag.name.startswith(STORE_PREFIX)}
    except Exception as exc:  # an unreadable store
        raise ModelLoadError(f"cannot list the BentoML model store: {exc}") from None
    if not names:
        raise ModelLoadError(
            f"no model: no bundled generator in {PRETRAINED.name}/ and no {STORE_PREFIX}* "
            "model in the BentoML model store; set DCGAN_MODELS")
    return [f"{name}:latest" for name in _default_first(sorted(names))]


def file_digest(path: str | Path) -> str:
    """`sha256:<hex>` of a file, to tell two versions of a generator apart."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def resolve_model(spec: str | None, setting: str = "DCGAN_MODELS") -> tuple[Path, str]:
    """(path of the .onnx file, version) for `spec`: a path (version `bundled` for the
    files in models/pretrained, else `file`), a model-store tag, or None (the store's
    default tag if present, else the bundled file). `setting` names where the spec came
    from, in error messages."""
    if spec and is_path(spec):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ModelLoadError(f"{setting}={spec}: no such file")
        return path, "bundled" if path.resolve().parent == PRETRAINED else "file"
    import bentoml
    from bentoml.exceptions import NotFound

    tag = spec or DEFAULT_TAG
    try:
        model = bentoml.models.get(tag)
    except NotFound:
        if spec:
            raise ModelLoadError(
                f"{setting}={spec}: no such model in the BentoML model store "
                "(`bentoml models list` shows what is there)"
            ) from None
        if not BUNDLED.is_file():
            raise ModelLoadError(
                f"no model: {DEFAULT_TAG} is not in the BentoML model store and the "
                f"bundled file {BUNDLED.name} is missing; set {setting}"
            ) from None
        return BUNDLED, "bundled"
    except Exception as exc:  # a malformed tag, an unreadable store
        raise ModelLoadError(f"{setting}={tag}: {exc}") from None
    path = Path(model.path_of(STORE_FILE))
    if not path.is_file():
        raise ModelLoadError(f"model-store entry {model.tag} has no {STORE_FILE}")
    return path, str(model.tag.version)
