"""Training for a wall-clock budget, the unit of equal compute (DESIGN, section 7).

``WallClockBudget(budget_seconds, points=(60, 120, ...), dirpath=...)`` is a Lightning callback:

* it stops training once ``budget_seconds`` of training have passed (time spent in validation and
  in its own checkpoint writes is not counted);
* at each point ``p`` of ``points`` it writes ``dirpath/{p}s.ckpt`` (weights and the model's
  rebuild record, loadable with ``DiffusionLM.load``) and records the step, the tokens seen and the
  elapsed seconds: a learning curve is the bound of these checkpoints, one estimator for all;
* with ``label`` it prints one progress line at each point;
* with ``anneal=True`` it sets the learning rate from the elapsed *time* instead of the step:
  a linear warm-up over ``warmup_seconds`` (``None``: over the module's ``warmup_steps``), then a
  cosine from the base rate down to ``min_lr_ratio`` of it, reached exactly at the budget. A
  step-based cosine needs ``max_steps`` known in advance, which concurrent runs sharing one device
  cannot predict; this schedule makes every run of an equal-compute comparison finish annealed,
  whatever its step speed.

The points are wall-clock, so a run slower per step contributes fewer steps at each point; the
records say how many.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from simplexdiff.errors import ConfigError
from simplexdiff.lightning.module import cosine_decay


class WallClockBudget(Callback):
    """Stop after ``budget_seconds`` of training; checkpoint at ``points`` (seconds)."""

    def __init__(
        self,
        budget_seconds: float,
        points: tuple[float, ...] | list[float] = (),
        dirpath: str | Path | None = None,
        anneal: bool = False,
        warmup_seconds: float | None = None,
        label: str | None = None,
    ) -> None:
        points = sorted(float(p) for p in points)
        if not budget_seconds > 0 or any(not 0 < p <= budget_seconds for p in points):
            raise ConfigError(
                f"budget_seconds must be > 0 and every point in (0, budget]: got {budget_seconds}, "
                f"{points}"
            )
        if warmup_seconds is not None and not 0 < warmup_seconds < budget_seconds:
            raise ConfigError(f"warmup_seconds must lie in (0, budget), got {warmup_seconds}")
        if points and dirpath is None:
            raise ConfigError("WallClockBudget needs a dirpath for its checkpoints")
        self.budget, self.points, self.anneal = float(budget_seconds), points, anneal
        self.warmup_seconds = warmup_seconds
        self.label = label  # when given, each point prints one progress line with it
        self.dirpath = Path(dirpath) if dirpath is not None else None
        self.records: list[dict[str, Any]] = []
        self.factor = 1.0  # the learning-rate multiplier of the latest step (anneal=True)
        self._start = self._paused = 0.0
        self._pause_from: float | None = None
        self._warm_end: float | None = None  # seconds of training when the warm-up ended

    def elapsed(self) -> float:
        """Seconds of training so far (validation and checkpoint writes excluded)."""
        return time.perf_counter() - self._start - self._paused

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start, self._paused, self.records = time.perf_counter(), 0.0, []
        self._warm_end = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pause_from = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pause_from is not None:
            self._paused += time.perf_counter() - self._pause_from
            self._pause_from = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not self.anneal:
            return
        hp = pl_module.hparams
        step, now = trainer.global_step, self.elapsed()
        if self.warmup_seconds is None:
            warming, rise = step < hp.warmup_steps, (step + 1) / hp.warmup_steps
        else:
            warming = now < self.warmup_seconds
            rise = max(now, 1e-3 * self.warmup_seconds) / self.warmup_seconds
        if warming:
            factor = rise
        else:
            if self._warm_end is None:
                self._warm_end = now
            progress = (now - self._warm_end) / max(1e-9, self.budget - self._warm_end)
            factor = cosine_decay(progress, hp.min_lr_ratio)
        self.factor = factor
        for opt in trainer.optimizers:
            for group in opt.param_groups:
                group["lr"] = group.get("initial_lr", hp.lr) * factor

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
    ) -> None:
        now = self.elapsed()
        while len(self.records) < len(self.points) and now >= self.points[len(self.records)]:
            self._save(trainer, self.points[len(self.records)], now)
        if now >= self.budget:
            trainer.should_stop = True

    def _save(self, trainer: L.Trainer, point: float, now: float) -> None:
        assert self.dirpath is not None
        begin = time.perf_counter()
        file = self.dirpath / f"{point:g}s.ckpt"
        trainer.save_checkpoint(file, weights_only=True)
        self.records.append(
            {
                "point_seconds": point,
                "elapsed_seconds": round(now, 2),
                "step": trainer.global_step,
                "tokens": trainer.global_step * tokens_per_step(trainer),
                "checkpoint": str(file),
            }
        )
        if self.label:
            print(f"{self.label}: {point:g} s, step {trainer.global_step}", flush=True)
        self._paused += time.perf_counter() - begin


def tokens_per_step(trainer: L.Trainer) -> int:
    """Tokens of one optimiser step over all processes: batch x sequence length x processes x
    accumulated batches (from the trainer's data module; 0 without one)."""
    dm = getattr(trainer, "datamodule", None)
    per_batch = getattr(dm, "batch_size", 0) * getattr(dm, "seq_len", 0)
    return int(per_batch * trainer.world_size * trainer.accumulate_grad_batches)
