"""simplexdiff: continuous (Fisher-Rao simplex) and discrete diffusion language models.

Time convention for every family: ``t = 0`` is noise / the prior, ``t = 1`` is data.
"""

from simplexdiff import data, eval, geometry, models, paths, samplers
from simplexdiff.errors import CheckpointError, ConfigError, DataError, SimplexdiffError
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
