"""Where generators live: BentoML model-store names, and finding the file to open.

`dcgan export --register` stores a generator as `dcgan-<card name>`, one file
`generator.onnx` per entry; the service opens a path, a store tag, or by default the
store's `dcgan-mnist:latest`, else the generator bundled in models/pretrained.
BentoML is imported only when the store is looked up.
"""

from __future__ import annotations

import os
from pathlib import Path

from models.generation.errors import ModelLoadError

STORE_PREFIX = "dcgan-"
STORE_FILE = "generator.onnx"  # the file inside a model-store entry
DEFAULT_NAME = "mnist"  # the card name of the generator served by default
BUNDLED = Path(__file__).resolve().parent.parent / "pretrained" / f"{STORE_PREFIX}{DEFAULT_NAME}.onnx"


def store_name(name: str) -> str:
    """The model-store name of a generator whose card is called `name`."""
    return f"{STORE_PREFIX}{name}"


DEFAULT_TAG = f"{store_name(DEFAULT_NAME)}:latest"


def resolve_model(spec: str | None, setting: str = "DCGAN_MODEL") -> tuple[Path, str]:
    """(path of the .onnx file, version) for `spec`: a path, a model-store tag, or None
    (the store's default tag if present, else the bundled file). `setting` names where
    the spec came from, in error messages."""
    if spec and (spec.endswith(".onnx") or os.sep in spec or Path(spec).exists()):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ModelLoadError(f"{setting}={spec}: no such file")
        return path, "file"
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
