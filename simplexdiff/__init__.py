"""simplexdiff: continuous (Fisher-Rao simplex) and discrete diffusion language models.

Time convention for every family: ``t = 0`` is noise / the prior, ``t = 1`` is data.

The subpackages load on first use (``sd.paths``, ``sd.DiffusionLM``, ...), so that code needing
only paths and models, and the command line's help and input checks, do not wait for Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from simplexdiff.errors import CheckpointError, ConfigError, DataError, SimplexdiffError

if TYPE_CHECKING:
    from simplexdiff import data, eval, geometry, models, paths, samplers
    from simplexdiff.lightning import DiffusionLM

__version__ = "0.1.0"
__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DiffusionLM",
    "SimplexdiffError",
    "data",
    "eval",
    "geometry",
    "models",
    "paths",
    "samplers",
]
_SUBPACKAGES = {"data", "eval", "geometry", "models", "paths", "samplers", "lightning"}


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"simplexdiff.{name}")
    if name == "DiffusionLM":
        return importlib.import_module("simplexdiff.lightning").DiffusionLM
    raise AttributeError(f"module 'simplexdiff' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
