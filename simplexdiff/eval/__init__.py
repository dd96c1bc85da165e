"""Evaluation floor: likelihood bounds of trained models (``likelihood``)."""

from simplexdiff.eval.likelihood import likelihood

__all__ = ["likelihood"]
