"""One sampler interface for every path: ``sample(denoiser, path, num_samples, length, steps, ...)``.

Steps: ``euler``, ``midpoint`` (continuous); ``ancestral``, ``cached`` (discrete and AR);
``remask``, ``semi_ar``, ``confidence`` (masked).
"""

from simplexdiff.samplers import continuous, discrete  # noqa: F401  (register the steps)
from simplexdiff.samplers.base import SAMPLERS, Sampler, StepContext, register
from simplexdiff.samplers.logits import shape_logits
from simplexdiff.samplers.sample import SampleOutput, sample

__all__ = [
    "SAMPLERS",
    "SampleOutput",
    "Sampler",
    "StepContext",
    "register",
    "sample",
    "shape_logits",
]
