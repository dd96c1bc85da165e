"""Command line: ``simplexdiff train RECIPE [key=value ...]`` and ``simplexdiff sample CKPT``.

Recipes become objects only through the registries (no imports or ``eval`` from strings)."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from simplexdiff.data import TextDataModule
from simplexdiff.errors import CheckpointError, SimplexdiffError
from simplexdiff.lightning import DiffusionLM
from simplexdiff.models import MODELS
from simplexdiff.paths import PATHS
from simplexdiff.recipe import load_recipe


def build(cfg: DictConfig) -> tuple[TextDataModule, DiffusionLM]:
    """The data module and the LightningModule a recipe describes."""
    dm = TextDataModule(**OmegaConf.to_container(cfg.data))
    vocab = dm.tokenizer.vocab_size
    path = PATHS.build(vocab_size=vocab, **cfg.path)
    model_opts = {"max_len": cfg.data.seq_len, **cfg.model}
    model = MODELS.build(vocab_size=vocab, **model_opts)
    optim = OmegaConf.to_container(cfg.optim)
    optim["betas"] = tuple(optim["betas"])
    return dm, DiffusionLM(model=model, path=path, tokenizer=dm.tokenizer, **optim)


def check_resume(file: str, vocab_size: int) -> None:
    """A checkpoint to resume from must exist and match the data's vocabulary."""
    spec = DiffusionLM.load(file).path.config()
    if spec["vocab_size"] != vocab_size:
        raise CheckpointError(
            f"vocabulary mismatch: checkpoint {file} has {spec['vocab_size']} "
            f"symbols but the data's tokenizer has {vocab_size}"
        )


# What training prints and records at the end, by the path's likelihood bound (``Path.bound``):
# the validation metric's key and an honest name for it.
VALIDATION_REPORT = {
    None: (
        "val/x1_ce_bits",
        "validation x1 cross-entropy (a denoising loss averaged over t, not a likelihood)",
    ),
    "nelbo": (
        "val/bpc",
        "validation NELBO bound (continuous-time, stratified t; an upper bound on the NLL)",
    ),
    "exact_nll": ("val/bpc", "validation exact NLL"),
}


def machine() -> str:
    """One line naming the hardware results were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        names = [
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, {device}, "
        f"torch {torch.__version__}"
    )


def train(cfg: DictConfig) -> dict:
    """Fit, validate, save a checkpoint and print samples; returns the results it writes."""
    from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint, TQDMProgressBar
    from lightning.pytorch.loggers import CSVLogger

    L.seed_everything(cfg.seed, verbose=False)
    dm, lm = build(cfg)
    if cfg.resume:
        check_resume(cfg.resume, dm.tokenizer.vocab_size)
    logger = CSVLogger(cfg.out_dir, name="")
    run_dir = Path(logger.log_dir)  # a new version_N folder: earlier runs are never overwritten
    tc = cfg.trainer
    callbacks = [
        ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last=True, save_top_k=0),
        TQDMProgressBar(refresh_rate=10),
    ]
    if tc.ema_decay is not None:
        callbacks.append(EMAWeightAveraging(decay=tc.ema_decay))
    trainer = L.Trainer(
        max_steps=tc.max_steps,
        max_time=tc.max_time,
        val_check_interval=tc.val_check_interval,
        check_val_every_n_epoch=None,
        limit_val_batches=tc.limit_val_batches,
        log_every_n_steps=tc.log_every_n_steps,
        precision=tc.precision,
        accelerator=tc.accelerator,
        devices=tc.devices,
        strategy=tc.strategy,
        gradient_clip_val=tc.gradient_clip_val,
        callbacks=callbacks,
        logger=logger,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.fit(lm, datamodule=dm, ckpt_path=cfg.resume, weights_only=True)
    train_s = time.perf_counter() - start
    val = trainer.validate(lm, datamodule=dm, verbose=False)[0]
    ckpt = run_dir / "final.ckpt"
    trainer.save_checkpoint(ckpt, weights_only=False)  # full: resumable
    lm.eval()
    gen = torch.Generator(lm.device).manual_seed(cfg.seed)
    sc = cfg.sample
    sampler = sc.sampler or lm.path.default_sampler
    ids = lm.generate(sc.num, min(sc.length, cfg.data.seq_len), sc.steps, sampler, generator=gen)
    samples = dm.tokenizer.decode(ids)
    uniform_bits = math.log2(dm.tokenizer.vocab_size)
    bound = lm.path.bound
    key, label = VALIDATION_REPORT.get(bound, ("val/bpc", f"validation {bound} bound"))
    results = {
        "recipe": OmegaConf.to_container(cfg),
        "path": lm.path.config(),
        "steps": trainer.global_step,
        "train_seconds": round(train_s, 1),
        "machine": machine(),
        **{k.replace("/", "_"): v for k, v in val.items()},  # val_loss, val_x1_ce_bits / val_bpc
        "bound": bound,
        "reported": {"metric": key.replace("/", "_"), "name": label, "bits_per_char": val[key]},
        "uniform_bits": uniform_bits,
        "checkpoint": str(ckpt),
        "sampler": sampler,
        "samples": samples,
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nsteps {trainer.global_step} in {train_s:.0f} s; checkpoint {ckpt}")
    print(
        f"{label}: {val[key]:.3f} bits/char; uniform baseline log2({dm.tokenizer.vocab_size})"
        f" = {uniform_bits:.3f}"
    )
    print(f"samples ({sampler}, {sc.steps} steps):")
    for s in samples:
        print(f"  {s!r}")
    return results


def sample_command(args: argparse.Namespace) -> None:
    lm = DiffusionLM.load(args.checkpoint)
    if lm.tokenizer is None:
        raise CheckpointError(f"{args.checkpoint} carries no tokenizer to decode with")
    prompt = lm.tokenizer.encode_tensor(args.prompt) if args.prompt else None
    gen = torch.Generator().manual_seed(args.seed)
    ids = lm.generate(
        args.num,
        args.length,
        args.steps,
        args.sampler,
        prompt=prompt,
        generator=gen,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
    )
    for text in lm.tokenizer.decode(ids):
        print(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="simplexdiff", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train from a recipe")
    t.add_argument("recipe")
    t.add_argument("overrides", nargs="*", help="omegaconf dotlist, e.g. trainer.max_steps=100")
    s = sub.add_parser("sample", help="sample text from a checkpoint")
    s.add_argument("checkpoint")
    s.add_argument("--num", type=int, default=8)
    s.add_argument("--steps", type=int, default=128)
    s.add_argument("--length", type=int, default=128)
    s.add_argument("--sampler", default=None, help="default: the path's (euler / ancestral)")
    s.add_argument("--prompt", default=None)
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--top-k", type=int, default=None)
    s.add_argument("--top-p", type=float, default=None)
    s.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "train":
            train(load_recipe(args.recipe, args.overrides))
        else:
            sample_command(args)
    except SimplexdiffError as e:
        print(f"simplexdiff: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
