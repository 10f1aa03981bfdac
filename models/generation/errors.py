"""The two errors of the generation layer, each a message of one line.

`GenerationError` is a request the model cannot honour (a label out of range, a latent of
the wrong length, a picture format for a model of points); its `field` names the part
of the request at fault, so the service answers 400 naming it and the CLI names its
option. `ModelLoadError` is a generator file that cannot be opened or trusted.
"""

from __future__ import annotations


class GenerationError(ValueError):
    """A request broke a limit that depends on the model; `field` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class ModelLoadError(RuntimeError):
    """The generator cannot be opened or served; the message says why, in one line."""
