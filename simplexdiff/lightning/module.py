"""``DiffusionLM``: one LightningModule for every path (continuous, discrete, autoregressive).

The path owns the noising and the loss, the model owns the prediction, the sampler owns the loop;
this module only wires them to Lightning: stratified times, AdamW with linear warm-up and cosine
decay, validation metrics, checkpoints that rebuild without pickled code, and ``generate()``.
"""

from __future__ import annotations

import math
from pathlib import Path as FsPath
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torchmetrics import MeanMetric

from simplexdiff.data.stream import Batch
from simplexdiff.data.tokenizer import Tokenizer, tokenizer_from_config
from simplexdiff.errors import CheckpointError, ConfigError
from simplexdiff.eval.flow_bound import flow_bound
from simplexdiff.eval.metrics import BitsPerByte, BitsPerToken
from simplexdiff.models import MODELS
from simplexdiff.paths import PATHS, Path
from simplexdiff.paths.base import Condition
from simplexdiff.paths.continuous import FLOW_BOUND
from simplexdiff.samplers import SampleOutput, sample

CHECKPOINT_KEY = "simplexdiff"
CHECKPOINT_FORMAT = 2
"""Format of the ``simplexdiff`` entry. 2: ``positions="rotary"`` pairs adjacent channels; in
format 1 (no ``format`` key) it meant the half-split pairs, now ``"rotary_halves"``."""
BEFORE_OPTION = {"tie_weights": False}
"""Model options added with a default other than what came before: what a checkpoint without
the option ran with."""


def model_config(spec: dict[str, Any]) -> dict[str, Any]:
    """The model config of a checkpoint's ``simplexdiff`` entry in today's terms: format 1's
    ``positions="rotary"`` is ``"rotary_halves"`` (the same function of the same weights), and an
    option the model gained after the checkpoint was written takes what it trained with: its
    ``BEFORE_OPTION`` value (``tie_weights=False``: heads were untied before the option), else
    the option's default."""
    model = dict(spec["model"])
    if model.get("name") in MODELS:
        for option, default in MODELS.options(model["name"]).items():
            if option not in model and default is not MODELS.REQUIRED:
                model[option] = BEFORE_OPTION.get(option, default)
    if spec.get("format", 1) < 2 and model.get("positions") == "rotary":
        model["positions"] = "rotary_halves"
    return model


def stratified_times(
    batch: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    rank: int = 0,
    world: int = 1,
) -> Tensor:
    """Low-discrepancy uniforms on ``[0, 1)``: ``(u + i / (B W)) mod 1`` with one shared ``u``
    (antithetic/stratified time sampling, Kingma et al. 2021, *Variational Diffusion Models*).
    The global batch of ``W`` processes is stratified as one: rank ``r`` takes
    ``i = r B, ..., r B + B - 1``, given the same ``generator`` state on every rank."""
    u = torch.rand(1, generator=generator, device=device, dtype=torch.float64)
    i = torch.arange(rank * batch, (rank + 1) * batch, device=device, dtype=torch.float64)
    return ((u + i / (batch * world)) % 1.0).float()


def seed_of(*keys: int) -> int:
    """A 63-bit seed mixed from integer ``keys`` (``numpy.random.SeedSequence``)."""
    return int(
        np.random.SeedSequence([k % 2**64 for k in keys]).generate_state(1, np.uint64)[0] >> 1
    )


def unpack(batch: Batch) -> tuple[Tensor, Condition | None]:
    """A batch's clean ids and its prompts as a ``Condition`` (``None`` for plain text): a
    conditional batch's first ``prompt_len`` ids of a row are its prompt."""
    if isinstance(batch, Tensor):
        return batch, None
    ids = batch["ids"]
    return ids, Condition.prefix(batch["prompt_len"].to(ids.device), ids.shape[1])


def scored(ids: Tensor, cond: Condition | None) -> Tensor:
    """Tokens each row is scored on ``[B]``: all, or the free (response) ones."""
    if cond is None:
        return torch.full((ids.shape[0],), ids.shape[1], device=ids.device)
    return cond.free.sum(-1)


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up to 1, then cosine decay to ``min_ratio`` at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return cosine_decay((step - warmup_steps) / max(1, total_steps - warmup_steps), min_ratio)


def cosine_decay(progress: float, min_ratio: float) -> float:
    """LR multiplier ``min_ratio + (1 - min_ratio) (1 + cos(pi p)) / 2`` at ``p = progress``
    clipped to ``[0, 1]``: from 1 down to ``min_ratio``."""
    progress = min(1.0, max(0.0, progress))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class DiffusionLM(L.LightningModule):
    """``DiffusionLM(model=DiT(...), path=paths.build(...), lr=3e-4)``.

    On conditional data (prompt / response batches) only responses are noised and scored, and
    ``prompt_dropout`` is the share of training rows whose prompt the denoiser sees hidden
    (``Path.hide``), which trains the unconditional model of classifier-free guidance (``cfg``
    of ``generate``)."""

    def __init__(
        self,
        model: nn.Module,
        path: Path,
        lr: float = 3e-4,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.99),
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
        tokenizer: Tokenizer | None = None,
        prompt_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0 <= prompt_dropout < 1:
            raise ConfigError(f"prompt_dropout must lie in [0, 1), got {prompt_dropout}")
        width = path.model_vocab_size  # V, or m b for a split continuous path
        if getattr(model, "vocab_size", width) != width:
            raise ConfigError(f"model vocab_size {model.vocab_size} != the path's {width}")
        if tokenizer is not None and tokenizer.vocab_size != path.vocab_size:
            raise ConfigError(
                f"tokenizer has {tokenizer.vocab_size} symbols but the path has "
                f"vocab_size {path.vocab_size}"
            )
        if getattr(model, "causal", False) != path.causal:
            need = "a causal model (e.g. 'causal')" if path.causal else "a bidirectional model"
            raise ConfigError(f"the {path.registry_name!r} path needs {need}")
        self.save_hyperparameters(ignore=["model", "path", "tokenizer"])
        self.model, self.path, self.tokenizer = model, path, tokenizer
        # the training data's TextDataModule.config(), where a checkpoint recorded it
        self.data_config: dict[str, Any] | None = None
        # float64 means: the same value (to summation order) on any number of processes
        self.val_loss = MeanMetric().set_dtype(torch.float64)
        self.val_x1_ce = MeanMetric().set_dtype(torch.float64)
        # the path's likelihood bound: float64 sums of nats and tokens (bits per token, perplexity)
        self.val_bpc = BitsPerToken()
        self.val_bpb = BitsPerByte()  # the same bound over the UTF-8 bytes of the text

    def forward(self, inputs: Tensor, t: Tensor) -> Tensor:
        return self.model(inputs, t)

    # --- training ----------------------------------------------------------------------------
    def _loss(
        self, ids: Tensor, generator: torch.Generator | None = None, cond: Condition | None = None
    ):
        u = stratified_times(ids.shape[0], generator, ids.device)
        times = self.path.training_times(u)
        return self.path.training_loss(self.model, ids, times, generator, cond)

    train_seed: int | None = None
    """Seed of the training randomness; rank 0's ``torch.initial_seed()`` when fitting starts
    (``seed_everything`` sets it), then carried by checkpoints."""

    def on_fit_start(self) -> None:
        if self.train_seed is None:  # not restored from a checkpoint
            self.train_seed = int(self.trainer.strategy.broadcast(torch.initial_seed(), src=0))

    def on_train_start(self) -> None:
        if self.trainer.val_check_batch == float("inf") and self.trainer.limit_val_batches != 0:
            rank_zero_warn(
                "the training data is an endless stream (e.g. TextDataModule's), so validation at "
                "epoch ends never runs: set Trainer(val_check_interval=N, "
                "check_val_every_n_epoch=None) to validate every N steps"
            )

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """One micro-batch. Its randomness is a function of ``(train_seed, k, rank)`` alone, with
        ``k`` the global micro-batch index: the times' shared offset from ``(train_seed, k)`` (one
        stratified draw over the global batch), the noise and any dropout from the global RNG
        reseeded with ``(train_seed, k, rank)``. A resumed run draws what the uninterrupted run
        drew, and every process draws its own noise (and its prompt dropout)."""
        batch, cond = unpack(batch)
        trainer = self.trainer
        acc = trainer.accumulate_grad_batches
        k = self.global_step * acc + batch_idx % acc
        seed = self.train_seed if self.train_seed is not None else torch.initial_seed()
        shared = torch.Generator(batch.device).manual_seed(seed_of(seed, k))
        u = stratified_times(
            batch.shape[0], shared, batch.device, trainer.global_rank, trainer.world_size
        )
        torch.manual_seed(seed_of(seed, k, 1 + trainer.global_rank))
        if cond is not None and self.hparams.prompt_dropout > 0:
            cond.hidden = torch.rand(batch.shape[0], device=batch.device) < (
                self.hparams.prompt_dropout
            )
        tau = self.path.warp_times(u)
        out = self.path.training_loss(self.model, batch, self.path.training_times(tau), cond=cond)
        if self.path.warp is not None:
            self._observe(tau, out.sequence_ce)
        self.log("train/loss", out.loss, prog_bar=True)
        for name, value in out.metrics.items():
            self.log(f"train/{name}", value)
        return out.loss

    def _observe(self, tau: Tensor, sequence_ce: Tensor | None) -> None:
        """Feed the learned time warp every process's times and losses of this micro-batch
        (gathered, so every process fits the same warp and draws from it)."""
        if sequence_ce is None:
            return
        if self.trainer.world_size > 1:
            tau, sequence_ce = (self.all_gather(x).flatten() for x in (tau, sequence_ce))
        self.path.observe(tau, sequence_ce)

    def validation_step(self, batch: Batch | tuple[int, Batch], batch_idx: int) -> None:
        self._score(batch, batch_idx)

    def test_step(self, batch: Batch | tuple[int, Batch], batch_idx: int) -> None:
        self._score(batch, batch_idx)

    def _score(self, batch: Batch | tuple[int, Batch], batch_idx: int) -> None:
        """Accumulate the loss, the x1 cross-entropy and the likelihood bound of one evaluation
        batch, its noise seeded by the batch's global index ``k`` (``TextDataModule`` serves
        ``(k, batch)`` pairs; a plain batch has ``k = batch_idx``): the same draws at every
        validation and on any number of processes. Conditional batches score their responses."""
        k, batch = batch if isinstance(batch, (tuple, list)) else (batch_idx, batch)
        batch, cond = unpack(batch)
        if batch.shape[0] == 0:  # a process with no batch of its own (EvalBatches)
            return
        batch_idx = int(k)
        gen = torch.Generator(batch.device).manual_seed(batch_idx)
        out = self._loss(batch, gen, cond)
        self.val_loss.update(out.loss)
        if "x1_ce" in out.metrics:
            self.val_x1_ce.update(out.metrics["x1_ce"])
        if self.path.bound == FLOW_BOUND:
            if batch_idx < self.flow_bound_batches:  # an ODE solve per batch: the first only
                self._update_flow_bound(batch, gen, cond)
        elif self.path.bound is not None:
            # the bound itself, over all of [0, 1): one stratified point per sequence through the
            # path's bound_times (simplexdiff.eval.likelihood uses a grid of them per sequence)
            t, weight = self.path.bound_times(stratified_times(batch.shape[0], gen, batch.device))
            nats = weight * self.path.sequence_bound(self.model, batch, t, gen, cond).double()
            self._update_bound(nats * scored(batch, cond), batch, cond)  # per token -> totals

    flow_bound_batches: int = 1
    """Continuous paths: validation batches scored by the flow bound (an ODE solve each)."""
    flow_bound_steps: int = 16
    """Continuous paths: midpoint steps of that ODE solve (``simplexdiff.eval.likelihood`` for
    the reported numbers)."""

    def _update_flow_bound(
        self, batch: Tensor, generator: torch.Generator, cond: Condition | None = None
    ) -> None:
        """``val/bpc`` of a continuous path: the dequantized flow bound (one draw per sequence).
        It differentiates the field, so it leaves ``inference_mode`` (Lightning's default for
        ``validate`` / ``test``) for the solve; the weights are not changed."""
        with torch.inference_mode(False), torch.enable_grad():
            nats, _ = flow_bound(
                self.model,
                self.path,
                batch.clone(),  # an inference tensor cannot enter autograd; its copy can
                steps=self.flow_bound_steps,
                generator=generator,
                cond=cond,
            )
        self._update_bound(nats, batch, cond)

    def _update_bound(self, nats: Tensor, batch: Tensor, cond: Condition | None = None) -> None:
        """Add per-sequence bound totals ``nats`` ``[B]`` of ``batch`` (of its responses, with
        ``cond``) to bits per token and, with a tokenizer, bits per byte."""
        self.val_bpc.update(nats, scored(batch, cond).sum())
        if self.tokenizer is not None:
            where = None if cond is None else cond.free
            self.val_bpb.update(nats, self.tokenizer.count_bytes(batch, where).sum())

    def on_validation_epoch_end(self) -> None:
        self._log_scores("val")

    def on_test_epoch_end(self) -> None:
        self._log_scores("test")

    def _updated_anywhere(self, metric: Any) -> bool:
        """Whether any process updated ``metric`` (every process must then ``compute`` it: the
        flow bound, for one, scores only the first batch, which one process holds)."""
        count = torch.tensor(float(metric.update_count), device=self.device)
        if self._trainer is not None and self.trainer.world_size > 1:
            count = self.trainer.strategy.reduce(count, reduce_op="sum")
        return bool(count > 0)

    def _log_scores(self, stage: str) -> None:
        """Log the epoch means (synchronised across processes by torchmetrics): ``{stage}/loss``;
        ``{stage}/x1_ce_bits`` where the path reports an x1 cross-entropy (continuous paths);
        ``{stage}/bpc`` and ``{stage}/ppl``, the path's likelihood bound in bits per token and as
        a per-token perplexity ``2 ** bpc``, where it has one, and ``{stage}/bpb``, the bound in
        bits per UTF-8 byte of the text, where the module has a tokenizer."""
        values = {f"{stage}/loss": self.val_loss.compute()}
        if self._updated_anywhere(self.val_x1_ce):
            values[f"{stage}/x1_ce_bits"] = self.val_x1_ce.compute() / math.log(2)
        if self._updated_anywhere(self.val_bpc):
            values[f"{stage}/bpc"] = bpc = self.val_bpc.compute()
            values[f"{stage}/ppl"] = torch.exp2(bpc)
        if self._updated_anywhere(self.val_bpb):
            values[f"{stage}/bpb"] = self.val_bpb.compute()
        for name, value in values.items():
            # torchmetrics already synchronised them: the max over processes of equal values
            # keeps them bit-exact (and tells Lightning they are synchronised)
            self.log(
                name, value, prog_bar=not name.endswith("ppl"), sync_dist=True, reduce_fx="max"
            )
        self.val_loss.reset()
        self.val_x1_ce.reset()
        self.val_bpc.reset()
        self.val_bpb.reset()

    def configure_optimizers(self):
        decay = [p for p in self.model.parameters() if p.ndim >= 2]
        no_decay = [p for p in self.model.parameters() if p.ndim < 2]
        opt = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.hparams.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.hparams.lr,
            betas=tuple(self.hparams.betas),
        )
        total = int(self.trainer.estimated_stepping_batches) if self._trainer else 10**9
        total = total if total > 0 and total < 10**9 else 10**9
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt,
            lambda s: warmup_cosine(s, self.hparams.warmup_steps, total, self.hparams.min_lr_ratio),
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer else None
        tokenizer = getattr(dm, "tokenizer", None)
        if tokenizer is not None:
            if tokenizer.vocab_size != self.path.vocab_size:
                raise CheckpointError(
                    f"vocabulary mismatch: the model has {self.path.vocab_size} symbols but the "
                    f"data's tokenizer has {tokenizer.vocab_size}"
                )
            if self.tokenizer is not None and self.tokenizer.config() != tokenizer.config():
                raise CheckpointError(
                    "tokenizer mismatch: the data's tokenizer is not the model's (same size, "
                    "different symbols)"
                )
            self.tokenizer = self.tokenizer or tokenizer

    # --- sampling ----------------------------------------------------------------------------
    def trained_length(self) -> int:
        """The sequence length the model was trained on (its data's ``seq_len``, else the
        backbone's ``max_len``)."""
        length = (self.data_config or {}).get("seq_len") or self.model.config().get("max_len")
        if not length:
            raise CheckpointError("the checkpoint records no sequence length: give a length")
        return int(length)

    @torch.no_grad()
    def generate(
        self,
        num_samples: int = 8,
        length: int = 256,
        steps: int = 128,
        sampler: str | None = None,
        prompt: Tensor | None = None,
        generator: torch.Generator | None = None,
        **options: Any,
    ) -> Tensor:
        """Token ids ``[num_samples, length]`` from the shared sampler (model in eval mode);
        ``sampler=None`` takes the path's ``default_sampler``; ``options`` go to
        ``simplexdiff.samplers.sample`` (``temperature``, ``top_k``, ``top_p``, ``infill``,
        ``time_grid``, ``decode``, the sampler's own options)."""
        return self.generate_output(
            num_samples, length, steps, sampler, prompt, generator, **options
        ).tokens

    @torch.no_grad()
    def generate_output(
        self,
        num_samples: int = 8,
        length: int = 256,
        steps: int = 128,
        sampler: str | None = None,
        prompt: Tensor | None = None,
        generator: torch.Generator | None = None,
        **options: Any,
    ) -> SampleOutput:
        """``generate``, returning the sampler's whole ``SampleOutput`` (tokens, denoiser calls,
        trajectory when asked)."""
        was_training = self.model.training
        self.model.eval()
        try:
            return sample(
                self.model,
                self.path,
                num_samples,
                length,
                steps,
                sampler=sampler,
                prompt=prompt,
                generator=generator,
                device=self.device,
                **options,
            )
        finally:
            self.model.train(was_training)

    # --- checkpoints -------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store what rebuilds the model without code: model, path and tokenizer configs, and the
        data it was trained on (``TextDataModule.config()``; else ``data_config``, or ``None``)."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer else None
        checkpoint[CHECKPOINT_KEY] = {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.config(),
            "path": self.path.config(),
            "path_state": self.path.state(),
            "tokenizer": self.tokenizer.config() if self.tokenizer else None,
            "data": dm.config() if callable(getattr(dm, "config", None)) else self.data_config,
            "train_seed": self.train_seed,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resuming (``Trainer.fit(ckpt_path=...)``): the checkpoint must hold this model and
        path (one line naming what differs, before any weights load); it restores the seed of
        the training randomness."""
        spec = checkpoint.get(CHECKPOINT_KEY)
        if spec is None:
            raise CheckpointError("not a simplexdiff checkpoint (no model or path config)")
        self.check_matches(spec)
        self.path.load_state(spec.get("path_state"))
        self.train_seed = spec.get("train_seed")

    def check_matches(self, spec: dict[str, Any], source: str = "the checkpoint") -> None:
        """A ``CheckpointError`` naming every path or model option where ``spec`` (a checkpoint's
        ``simplexdiff`` entry) differs from this module."""
        if spec["path"].get("vocab_size") != self.path.vocab_size:
            raise CheckpointError(
                f"vocabulary mismatch: {source} has {spec['path'].get('vocab_size')} symbols "
                f"but this model (the data's tokenizer) has {self.path.vocab_size}"
            )
        theirs_by_part = {"path": spec["path"], "model": model_config(spec)}
        for part, mine in (("path", self.path.config()), ("model", self.model.config())):
            theirs = theirs_by_part[part]
            if theirs != mine:
                diff = sorted(k for k in {**theirs, **mine} if theirs.get(k) != mine.get(k))
                shown = ", ".join(f"{k}={theirs.get(k)!r} (here {mine.get(k)!r})" for k in diff)
                raise CheckpointError(f"{source}'s {part} differs: {shown}")

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls, checkpoint_path: str | FsPath, map_location: str | torch.device | None = None
    ) -> DiffusionLM:
        """Lightning's name for ``load``: the model rebuilt from the checkpoint alone."""
        return cls.load(checkpoint_path, map_location or "cpu")

    @classmethod
    def load(cls, file: str | FsPath, map_location: str | torch.device = "cpu") -> DiffusionLM:
        """Rebuild from a checkpoint written by training (``weights_only=True``: no code runs),
        on ``map_location``.

        The state dict is the one Lightning saved, i.e. the EMA weights when EMA was on."""
        ckpt = read_checkpoint(file, map_location)
        spec = ckpt[CHECKPOINT_KEY]
        model = MODELS.build(**model_config(spec))
        path = PATHS.build(**spec["path"])
        path.load_state(spec.get("path_state"))
        tok = tokenizer_from_config(spec["tokenizer"]) if spec["tokenizer"] else None
        hp = {
            k: v
            for k, v in ckpt.get("hyper_parameters", {}).items()
            if k
            in ("lr", "weight_decay", "betas", "warmup_steps", "min_lr_ratio", "prompt_dropout")
        }
        lm = cls(model=model, path=path, tokenizer=tok, **hp)
        lm.load_state_dict(ckpt["state_dict"])
        lm.data_config = spec.get("data")  # absent from checkpoints written before it was stored
        return lm.to(map_location).eval()  # on the device the weights were mapped to


def read_checkpoint(file: str | FsPath, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The dict of a simplexdiff checkpoint (``weights_only=True``), or a one-line
    ``CheckpointError`` for a missing, unreadable or foreign file."""
    file = FsPath(file)
    if not file.is_file():
        raise CheckpointError(f"checkpoint not found: {file}")
    try:
        ckpt = torch.load(file, map_location=map_location, weights_only=True)
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"could not read checkpoint {file}: {first}") from None
    if not isinstance(ckpt, dict) or CHECKPOINT_KEY not in ckpt:
        raise CheckpointError(f"{file} is not a simplexdiff checkpoint")
    return ckpt
