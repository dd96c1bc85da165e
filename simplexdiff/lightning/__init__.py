"""Lightning floor: the LightningModule shared by every path, and the wall-clock budget callback."""

from simplexdiff.lightning.budget import WallClockBudget
from simplexdiff.lightning.module import DiffusionLM, stratified_times, warmup_cosine

__all__ = ["DiffusionLM", "WallClockBudget", "stratified_times", "warmup_cosine"]
