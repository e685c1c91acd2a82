"""The error every bad evaluation input raises (kept free of heavy imports for the command line)."""

from __future__ import annotations

__all__ = ["EvaluationError"]


class EvaluationError(ValueError):
    """Bad input to an evaluation (folders, files, pairing, metric names): the command exits with status 2."""
