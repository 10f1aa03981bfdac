"""The one error type of the evaluation: the CLI's handler prints it as one line."""

from __future__ import annotations


class EvaluationError(ValueError):
    """The evaluation cannot run as asked; the message is one line for the user."""
