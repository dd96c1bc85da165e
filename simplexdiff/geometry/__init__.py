"""Geometry floor: the Fisher-Rao statistical manifold (sphere chart, on geoopt) and the flat simplex."""

from simplexdiff.geometry import simplex, sphere
from simplexdiff.geometry.simplex import dirichlet_ones, one_hot, project_to_simplex
from simplexdiff.geometry.sphere import (
    angle,
    expmap,
    fisher_rao_distance,
    fisher_rao_inner,
    geodesic,
    geodesic_velocity,
    log_to_vertices,
    logmap,
    project_to_orthant,
    proju,
    sin_ratio,
    to_simplex,
    to_sphere,
    transp,
    uniform_orthant,
)

__all__ = [
    "angle",
    "dirichlet_ones",
    "expmap",
    "fisher_rao_distance",
    "fisher_rao_inner",
    "geodesic",
    "geodesic_velocity",
    "log_to_vertices",
    "logmap",
    "one_hot",
    "project_to_orthant",
    "project_to_simplex",
    "proju",
    "simplex",
    "sin_ratio",
    "sphere",
    "to_simplex",
    "to_sphere",
    "transp",
    "uniform_orthant",
]
