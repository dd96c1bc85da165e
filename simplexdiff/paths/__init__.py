"""Paths: one file per noising process, built by name.

>>> import simplexdiff as sd
>>> path = sd.paths.build("fisher_rao", vocab_size=27)
"""

from __future__ import annotations

from typing import Any

from simplexdiff.paths import schedules
from simplexdiff.paths.autoregressive import Autoregressive
from simplexdiff.paths.base import Denoiser, LossOutput, Path
from simplexdiff.paths.continuous import ContinuousPath
from simplexdiff.paths.dirichlet import DirichletPath
from simplexdiff.paths.discrete import DiscretePath
from simplexdiff.paths.fisher_rao import FisherRao
from simplexdiff.paths.linear import LinearSimplex
from simplexdiff.paths.masked import Masked
from simplexdiff.paths.rdlm import RDLM
from simplexdiff.paths.uniform import Uniform
from simplexdiff.registry import Registry

PATHS: Registry[Path] = Registry("path")
PATHS.register("dirichlet")(DirichletPath)
PATHS.register("fisher_rao")(FisherRao)
PATHS.register("linear")(LinearSimplex)
PATHS.register("masked")(Masked)
PATHS.register("uniform")(Uniform)
PATHS.register("ar")(Autoregressive)
PATHS.register("rdlm")(RDLM)


def build(name: str, **kwargs: Any) -> Path:
    """Build a registered path, e.g. ``build("fisher_rao", vocab_size=27, objective="fm")``."""
    return PATHS.build(name, **kwargs)


def available() -> list[str]:
    return PATHS.names()


__all__ = [
    "PATHS",
    "schedules",
    "Autoregressive",
    "ContinuousPath",
    "Denoiser",
    "DirichletPath",
    "DiscretePath",
    "FisherRao",
    "LinearSimplex",
    "LossOutput",
    "Masked",
    "Path",
    "RDLM",
    "Uniform",
    "available",
    "build",
]
