"""Lightning floor: the LightningModule shared by every path, the resumable checkpoint callback
and the wall-clock budget callback."""

from simplexdiff.lightning.budget import WallClockBudget
from simplexdiff.lightning.checkpoint import RunCheckpoint
from simplexdiff.lightning.module import DiffusionLM, stratified_times, warmup_cosine

__all__ = ["DiffusionLM", "RunCheckpoint", "WallClockBudget", "stratified_times", "warmup_cosine"]
