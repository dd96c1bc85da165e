"""One sampler interface for every path: ``sample(denoiser, path, num_samples, length, steps, ...)``."""

from simplexdiff.samplers import discrete  # noqa: F401  (registers the discrete steps)
from simplexdiff.samplers.sample import SAMPLERS, SampleOutput, Sampler, register, sample

__all__ = ["SAMPLERS", "SampleOutput", "Sampler", "register", "sample"]
