"""Lightning floor: the LightningModule shared by every path."""

from simplexdiff.lightning.module import DiffusionLM, stratified_times, warmup_cosine

__all__ = ["DiffusionLM", "stratified_times", "warmup_cosine"]
