"""User-facing errors: each carries a one-line message naming the problem."""


class SimplexdiffError(ValueError):
    """Base class; the CLI prints ``simplexdiff: error: <message>`` and exits with status 2."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))  # always a single line


class ConfigError(SimplexdiffError):
    """A recipe key, registry name or option that does not exist or does not fit."""


class DataError(SimplexdiffError):
    """A missing, empty, corrupt or out-of-vocabulary data file."""


class CheckpointError(SimplexdiffError):
    """A missing or unreadable checkpoint, or one that does not match the data."""


class SamplingError(SimplexdiffError):
    """Sampling cannot go on, e.g. the denoiser returned non-finite logits (a diverged model)."""
