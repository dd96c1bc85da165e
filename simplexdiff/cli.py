"""Command line: ``simplexdiff train RECIPE [key=value ...]``, ``simplexdiff eval CKPT`` and
``simplexdiff sample CKPT``.

Recipes become objects only through the registries (no imports or ``eval`` from strings)."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig, OmegaConf

from simplexdiff.errors import CheckpointError, ConfigError, SimplexdiffError
from simplexdiff.models import MODELS
from simplexdiff.paths import PATHS
from simplexdiff.paths.continuous import FLOW_BOUND_DECODERS
from simplexdiff.recipe import load_recipe
from simplexdiff.samplers.sample import check_request

if TYPE_CHECKING:  # Lightning, datasets and the evaluation code load when a command needs them,
    import lightning as L  # so that --help and bad input answer in seconds

    from simplexdiff.data import TextDataModule
    from simplexdiff.lightning import DiffusionLM


def build(cfg: DictConfig) -> tuple[TextDataModule, DiffusionLM]:
    """The data module and the LightningModule a recipe describes."""
    from simplexdiff.data import TextDataModule
    from simplexdiff.lightning import DiffusionLM

    dm = TextDataModule(**OmegaConf.to_container(cfg.data), seed=cfg.seed)
    vocab = dm.tokenizer.vocab_size
    path = PATHS.build(vocab_size=vocab, **OmegaConf.to_container(cfg.path))
    model_opts = {"max_len": cfg.data.seq_len, **cfg.model}  # max_len follows seq_len if unset
    if model_opts["max_len"] < cfg.data.seq_len:
        raise ConfigError(
            f"model.max_len {model_opts['max_len']} is shorter than data.seq_len {cfg.data.seq_len}"
        )
    model = MODELS.build(vocab_size=path.model_vocab_size, **model_opts)  # V, or m b split
    optim = OmegaConf.to_container(cfg.optim)
    optim["betas"] = tuple(optim["betas"])
    lm = DiffusionLM(
        model=model,
        path=path,
        tokenizer=dm.tokenizer,
        prompt_dropout=cfg.prompt_dropout,
        **optim,
    )
    return dm, lm


EXACT_MATCH_EXAMPLES = 256
"""Held-out prompts answered after training on conditional data."""


def check_writable(out_dir: str) -> None:
    """``out_dir`` must be a folder this process can create files in (checked before any work)."""
    folder = Path(out_dir).expanduser().absolute()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"out_dir {folder} is a file, not a folder")
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"out_dir {folder} is not writable ({existing} refuses new files)")


def check_resume(file: str, lm: DiffusionLM) -> None:
    """A checkpoint to resume from must exist and hold the recipe's path and model."""
    from simplexdiff.lightning.module import CHECKPOINT_KEY, read_checkpoint

    lm.check_matches(read_checkpoint(file)[CHECKPOINT_KEY], f"resume checkpoint {file}")


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
    "dequantized_flow_bound": (
        "val/bpc",
        "validation dequantized flow bound (first batch, one draw, 16 ODE steps; an upper bound "
        "on the NLL of flow-then-decode)",
    ),
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


def make_trainer(
    cfg: DictConfig,
    run_dir: Path,
    logger: Any,
    callbacks: list | None = None,
    progress_bar: bool = True,
):
    """The ``lightning.Trainer`` a recipe's ``trainer`` section describes, writing into
    ``run_dir``, plus ``callbacks``: a full (resumable) ``checkpoints/last.ckpt`` every
    ``checkpoint_every`` steps (default: after every validation) and on SIGTERM / SIGINT
    (``RunCheckpoint``); EMA when ``ema_decay`` is set."""
    from lightning.pytorch.callbacks import EMAWeightAveraging, TQDMProgressBar
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    from simplexdiff.lightning.checkpoint import RunCheckpoint

    tc = cfg.trainer
    callbacks = [
        RunCheckpoint(run_dir / "checkpoints", tc.checkpoint_every),
        *([TQDMProgressBar(refresh_rate=10)] if progress_bar else []),
        *(callbacks or []),
    ]
    if tc.ema_decay is not None:
        callbacks.append(EMAWeightAveraging(decay=tc.ema_decay))
    try:
        return lightning_trainer(tc, callbacks, logger, progress_bar)
    except (MisconfigurationException, ValueError, TypeError, RuntimeError) as e:
        # Lightning's own checks: precision, accelerator, devices, strategy
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"bad trainer setting: {first}") from None


def lightning_trainer(tc: DictConfig, callbacks: list, logger: Any, progress_bar: bool):
    import lightning as L

    return L.Trainer(
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
        inference_mode=False,  # continuous paths' val/bpc differentiates the field (divergence)
        callbacks=callbacks,
        logger=logger,
        enable_model_summary=False,
        enable_progress_bar=progress_bar,
    )


def train(cfg: DictConfig) -> dict:
    """Fit, validate, save a checkpoint and print samples; returns the results it writes (on
    the global rank 0 of a multi-process run; the other processes return ``{}``)."""
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from simplexdiff.eval import exact_match

    check_writable(cfg.out_dir)
    L.seed_everything(cfg.seed, verbose=False)
    dm, lm = build(cfg)
    sc = cfg.sample
    sample_length = min(sc.length, cfg.data.seq_len)
    check_request(lm.model, lm.path, sc.num, sample_length, sc.steps, sc.sampler)
    if sc.cfg and not dm.conditional:
        raise ConfigError(
            f"sample.cfg guides on prompts, but {cfg.data.corpus!r} has no prompt / response rows"
        )
    if cfg.resume:
        check_resume(cfg.resume, lm)
    logger = CSVLogger(cfg.out_dir, name="")
    run_dir = Path(logger.log_dir)  # a new version_N folder: earlier runs are never overwritten
    trainer = make_trainer(cfg, run_dir, logger)
    if trainer.is_global_zero:
        _ = logger.experiment  # creates run_dir
        OmegaConf.save(cfg, run_dir / "recipe.yaml")  # the resolved recipe, before any step
        # the fitted tokenizer as plain JSON (sd.data.tokenizer_from_config reads it)
        (run_dir / "tokenizer.json").write_text(json.dumps(dm.tokenizer.config()))
    start = time.perf_counter()
    try:
        trainer.fit(lm, datamodule=dm, ckpt_path=cfg.resume, weights_only=True)
    except SIGTERMException:
        raise Interrupted("SIGTERM", 143, trainer, run_dir) from None
    except SystemExit:  # Lightning turns KeyboardInterrupt into exit 1
        if trainer.interrupted:
            raise Interrupted("Ctrl-C", 130, trainer, run_dir) from None
        raise
    train_s = time.perf_counter() - start
    val = trainer.validate(lm, datamodule=dm, verbose=False)[0]
    ckpt = run_dir / "final.ckpt"
    trainer.save_checkpoint(ckpt, weights_only=False)  # full: resumable
    if not trainer.is_global_zero:  # one process samples, prints and writes results
        return {}
    lm.eval()
    gen = torch.Generator(lm.device).manual_seed(cfg.seed)
    sampler = sc.sampler or lm.path.default_sampler
    answers = None
    if dm.conditional:  # held-out prompts: their answers, and exact match over the first 256
        held_out = dm.examples("validation")[:EXACT_MATCH_EXAMPLES]
        answers = exact_match(
            lm, held_out, length=cfg.data.seq_len, steps=sc.steps, sampler=sampler,
            cfg=sc.cfg, temperature=sc.temperature, generator=gen,
        )  # fmt: skip
        answers["examples"] = [
            {"prompt": p, "response": r, "answer": a}
            for (p, r), a in zip(held_out, answers.pop("answers"), strict=True)
        ][: sc.num]
        samples = [f"{e['prompt']!r} -> {e['answer']!r}" for e in answers["examples"]]
    else:
        ids = lm.generate(
            sc.num, sample_length, sc.steps, sampler, temperature=sc.temperature, generator=gen
        )
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
        "reported": {
            "metric": key.replace("/", "_"),
            "name": label,
            "bits_per_char": val[key],
            "bits_per_byte": val.get("val/bpb") if key == "val/bpc" else None,
        },
        "uniform_bits": uniform_bits,
        "checkpoint": str(ckpt),
        "sampler": sampler,
        "samples": samples,
        **({"exact_match": answers} if answers is not None else {}),
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nsteps {trainer.global_step} in {train_s:.0f} s; checkpoint {ckpt}")
    unit = "bits/char" if dm.tokenizer.kind == "char" else "bits/token"
    per_byte = f" = {val['val/bpb']:.3f} bits/byte" if key == "val/bpc" and "val/bpb" in val else ""
    print(
        f"{label}: {val[key]:.3f} {unit}{per_byte}; uniform baseline "
        f"log2({dm.tokenizer.vocab_size}) = {uniform_bits:.3f}"
    )
    if key != "val/x1_ce_bits" and "val/x1_ce_bits" in val:
        x1_key, x1_label = VALIDATION_REPORT[None]
        print(f"{x1_label}: {val[x1_key]:.3f} {unit}")
    shaping = (f", cfg {sc.cfg}" if sc.cfg else "") + (
        f", temperature {sc.temperature:g}" if sc.temperature != 1 else ""
    )
    if answers is not None:
        print(
            f"exact match on {answers['num']} held-out prompts: {answers['accuracy']:.3f} "
            f"({sampler}, {sc.steps} steps{shaping})"
        )
    print(f"samples ({sampler}, {sc.steps} steps{shaping}):")
    for s in samples:
        print(f"  {s!r}")
    return results


class Interrupted(Exception):
    """Training stopped by a signal after Lightning saved ``checkpoints/last.ckpt``: the CLI
    prints one line and exits with the conventional status (143 SIGTERM, 130 Ctrl-C)."""

    def __init__(self, signal: str, status: int, trainer: L.Trainer, run_dir: Path) -> None:
        last = run_dir / "checkpoints" / "last.ckpt"
        saved = f"checkpoint {last}; continue with resume={last}" if last.is_file() else "no step"
        super().__init__(f"stopped by {signal} at step {trainer.global_step}: {saved}")
        self.status, self.speaks = status, trainer.is_global_zero  # one process says it


def sample_command(args: argparse.Namespace) -> None:
    from simplexdiff.lightning import DiffusionLM

    lm = DiffusionLM.load(args.checkpoint)
    if lm.tokenizer is None:
        raise CheckpointError(f"{args.checkpoint} carries no tokenizer to decode with")
    prompt = lm.tokenizer.encode_tensor(args.prompt) if args.prompt else None
    options = {}
    if args.until_eos:
        if lm.tokenizer.eos_id is None:
            raise ConfigError(
                f"--until-eos: {args.checkpoint}'s tokenizer has no end-of-document symbol "
                "(trained on a single document)"
            )
        if (args.sampler or lm.path.default_sampler) == "semi_ar":
            options["eos_id"] = lm.tokenizer.eos_id
    gen = torch.Generator().manual_seed(args.seed)
    ids = lm.generate(
        args.num,
        args.length or lm.trained_length(),
        args.steps,
        args.sampler,
        prompt=prompt,
        generator=gen,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        cfg=args.cfg,
        **options,
    )
    for text in lm.tokenizer.decode(ids, until_eos=args.until_eos):
        print(text)


# --- eval ---------------------------------------------------------------------------------------
BOUND_NAMES = {
    "exact_nll": "exact NLL",
    "nelbo": "continuous-time NELBO (stratified t; an upper bound on the NLL)",
    "dequantized_flow_bound": "dequantized flow bound (ODE log-density + kernel dequantization; "
    "an upper bound on the NLL of flow-then-decode)",
}
SPLIT_NAMES = {"val": "validation"}


def eval_data(
    lm: DiffusionLM, checkpoint: str, data: str | None, seq_len: int | None = None
) -> TextDataModule:
    """The data to score ``lm`` on: the checkpoint's training data (its stored ``TextDataModule``
    config, else the ``results.json`` training wrote beside it), or the text file ``data``, cut
    into chunks of ``seq_len`` (default: the training ``seq_len``, else the model's ``max_len``),
    always read with the checkpoint's tokenizer."""
    from simplexdiff.data import TextDataModule

    cfg = dict(lm.data_config or {})
    if not cfg:  # checkpoints written before the data config was stored
        for results in (Path(checkpoint).parent, Path(checkpoint).parent.parent):
            try:
                recipe = json.loads((results / "results.json").read_text())["recipe"]
                cfg = {k: recipe["data"].get(k) for k in ("corpus", "seq_len", "cache_dir")}
                break
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue
    if data is not None:
        cfg["corpus"] = data
    if "corpus" not in cfg:
        raise CheckpointError(
            f"{checkpoint} records no training data; name the text to score with --data FILE"
        )
    seq_len = seq_len or cfg.get("seq_len") or lm.model.config().get("max_len")
    if not seq_len:
        raise CheckpointError(f"{checkpoint} records no sequence length for its data")
    tokenizer = lm.tokenizer or cfg.get("tokenizer")
    dm = TextDataModule(
        corpus=cfg["corpus"], seq_len=seq_len, tokenizer=tokenizer, cache_dir=cfg.get("cache_dir")
    )
    if dm.tokenizer.vocab_size != lm.path.vocab_size:
        raise CheckpointError(
            f"vocabulary mismatch: checkpoint {checkpoint} has {lm.path.vocab_size} symbols but "
            f"the data's tokenizer has {dm.tokenizer.vocab_size}"
        )
    max_len = lm.model.config().get("max_len")
    if max_len is not None and seq_len > max_len:
        raise ConfigError(f"--seq-len {seq_len} exceeds the model's max_len {max_len}")
    return dm


def _row(label: str, value: str) -> str:
    return f"  {label:<20} {value}"


def eval_command(args: argparse.Namespace) -> dict:
    """Score a checkpoint on the first ``--sequences`` chunks of a split with its strongest
    likelihood bound, optionally draw samples and measure them; print a table, write JSON."""
    from simplexdiff.data import resolve_corpus
    from simplexdiff.eval import likelihood, sample_metrics, train_reference
    from simplexdiff.eval.samples import draw_samples
    from simplexdiff.lightning import DiffusionLM

    for name in ("sequences", "samples"):
        if getattr(args, name) < 0:
            raise ConfigError(f"--{name} must not be negative")
    for name in ("num_t", "batch_size", "steps", "length", "seq_len", "ode_steps", "probes"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive")
    if args.reference and not args.samples:
        raise ConfigError("--reference scores samples: give --samples N too")
    if args.out:  # the JSON replaces nothing but an earlier eval JSON
        out = Path(args.out)
        inputs = [Path(f) for f in (args.checkpoint, args.reference) if f]
        if out.suffix == ".ckpt" or any(out.resolve() == f.resolve() for f in inputs):
            raise ConfigError(f"--out {out} would overwrite a checkpoint; give a .json file")
        if out.exists() and not is_eval_json(out):
            raise ConfigError(f"--out {out} exists and is not an eval result: it is not replaced")
    device = args.device
    lm = DiffusionLM.load(args.checkpoint, map_location=device).to(device)
    reference = None
    if args.reference:
        reference = DiffusionLM.load(args.reference, map_location=device).to(device)
    if reference is not None and reference.path.family != "autoregressive":
        raise ConfigError(
            f"--reference must be an autoregressive ('ar') checkpoint, got path "
            f"{reference.path.registry_name!r}"
        )
    if args.choices:
        return choices_command(args, lm)
    dm = eval_data(lm, args.checkpoint, args.data, args.seq_len)
    split = SPLIT_NAMES.get(args.split, args.split)
    tokens = dm.split(split)
    if args.sequences:
        tokens = tokens[: args.sequences]
    if len(tokens) == 0:
        raise ConfigError(f"the {split} split of {dm.corpus!r} has no chunk of {dm.seq_len} chars")
    _, location = resolve_corpus(dm.corpus)
    data = {
        "corpus": dm.corpus,
        "file": str(Path(location).resolve()) if Path(location).exists() else location,
        "split": split,
        "sequences": len(tokens),
        "seq_len": dm.seq_len,
        "num_tokens": tokens.numel(),
        "sha256": hashlib.sha256(tokens.contiguous().numpy().tobytes()).hexdigest(),
    }
    settings: dict = {"num_t": args.num_t, "batch_size": args.batch_size, "device": device}
    results: dict = {
        "checkpoint": str(Path(args.checkpoint).resolve()),
        "path": lm.path.config(),
        "seed": args.seed,
        "machine": machine(),
        "data": data,
        "settings": settings,
    }
    gen = torch.Generator(device).manual_seed(args.seed)
    try:
        stats = likelihood(
            lm,
            tokens,
            num_t=args.num_t,
            batch_size=args.batch_size,
            generator=gen,
            decode_time=args.decode_time,
            ode_steps=args.ode_steps,
            probes=args.probes,
            decoder=args.decoder,
        )
    except ConfigError as e:  # a path without a bound (yet)
        results |= {"bound": None, "bound_unavailable": str(e), "metrics": {}}
    else:
        stats = dict(stats)
        settings |= stats.pop("settings", None) or {}
        stats.pop("nats")  # per-sequence totals: the JSON keeps the aggregate
        results["bound"] = bound = stats.pop("bound")
        results["bound_name"] = BOUND_NAMES.get(bound, f"{bound} bound")
        results["metrics"] = {**stats, "ppl": math.exp(stats["nats_per_token"])}

    if args.samples:
        length = args.length or dm.seq_len
        steps = args.steps or (length if lm.path.family == "autoregressive" else 128)
        texts, nfe, _ = draw_samples(
            lm, args.samples, length, steps, args.sampler, args.seed, args.batch_size
        )
        train_ref = train_reference(dm.corpus, str(dm.cache_dir / "datasets"))
        results["samples"] = {
            "num": args.samples,
            "length": length,
            "steps": steps,
            "nfe": nfe,
            "sampler": args.sampler or lm.path.default_sampler,
            "reference": str(Path(args.reference).resolve()) if args.reference else None,
            "metrics": sample_metrics(texts, train_ref, reference, batch_size=args.batch_size),
            "texts": texts,
        }

    out = Path(args.out) if args.out else eval_output_file(args.checkpoint, split)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(finite_or_null(results), indent=2))
    print_eval(results, args.checkpoint)
    print(f"wrote {out}")
    return results


def read_choices(file: Path) -> list[dict]:
    """The questions of a ``--choices`` JSONL file, each ``{"prompt": str, "choices": [str, ...],
    "answer": int}``, or a ``ConfigError`` naming the first bad line (before any scoring)."""
    if not file.is_file():
        raise ConfigError(f"--choices file not found: {file}")
    questions = []
    for n, line in enumerate(file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            q = json.loads(line)
        except ValueError:
            raise ConfigError(f"{file}:{n}: not a JSON object") from None
        ok = (
            isinstance(q, dict)
            and isinstance(q.get("prompt"), str)
            and isinstance(q.get("choices"), list)
            and len(q["choices"]) >= 2
            and all(isinstance(c, str) for c in q["choices"])
            and isinstance(q.get("answer"), int)
            and 0 <= q["answer"] < len(q["choices"])
        )
        if not ok:
            raise ConfigError(
                f'{file}:{n}: expected {{"prompt": str, "choices": [two or more str], '
                f'"answer": index of the right choice}}'
            )
        questions.append(q)
    if not questions:
        raise ConfigError(f"--choices file {file} has no question")
    return questions


def choices_command(args: argparse.Namespace, lm: DiffusionLM) -> dict:
    """Multiple choice (``--choices``): each question's choices scored by the conditional bound
    (``score_choices``), the most likely picked; prints accuracy, writes JSON."""
    from simplexdiff.eval import score_choices

    file = Path(args.choices)
    questions = read_choices(file)
    length = args.seq_len or lm.trained_length()
    gen = torch.Generator(args.device).manual_seed(args.seed)
    picks = []
    for q in questions:
        scored = score_choices(
            lm, q["prompt"], q["choices"], length, args.num_t, gen,
            decode_time=args.decode_time, ode_steps=args.ode_steps, probes=args.probes,
            decoder=args.decoder,
        )  # fmt: skip
        picks.append({**q, "picked": scored["choice"], "nats": scored["nats"]})
        bound = scored["bound"]
    hits = [q["picked"] == q["answer"] for q in picks]
    accuracy = sum(hits) / len(hits)
    results = {
        "checkpoint": str(Path(args.checkpoint).resolve()),
        "path": lm.path.config(),
        "seed": args.seed,
        "machine": machine(),
        "data": {"choices": str(file.resolve()), "questions": len(picks), "seq_len": length},
        "settings": {
            "num_t": args.num_t,
            "ode_steps": args.ode_steps,
            "decoder": args.decoder,
            "device": args.device,
        },
        "bound": bound,
        "bound_name": BOUND_NAMES.get(bound, f"{bound} bound"),
        "metrics": {
            "accuracy": accuracy,
            "accuracy_stderr": math.sqrt(accuracy * (1 - accuracy) / len(hits)),
        },
        "questions": picks,
    }
    out = Path(args.out) if args.out else eval_output_file(args.checkpoint, "choices")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(finite_or_null(results), indent=2))
    m = results["metrics"]
    print(f"checkpoint {args.checkpoint} (path {lm.path.registry_name})")
    print(f"choices    {file}: {len(picks)} questions, rows of {length} tokens")
    print(f"bound      {bound}: {results['bound_name']}")
    print(_row("accuracy", f"{m['accuracy']:.4f} ± {m['accuracy_stderr']:.4f} (1 s.e.)"))
    print(f"wrote {out}")
    return results


def is_eval_json(file: Path) -> bool:
    """Whether ``file`` is a JSON result ``simplexdiff eval`` wrote (which a rerun may replace)."""
    try:
        written = json.loads(file.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(written, dict) and {"checkpoint", "data", "settings"} <= written.keys()


def finite_or_null(value):
    """``value`` with NaN / infinite floats as ``None``: strict JSON (NaN is no JSON number)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_or_null(v) for v in value]
    return value


def eval_output_file(checkpoint: str, split: str) -> Path:
    ckpt = Path(checkpoint)
    return ckpt.with_name(f"{ckpt.stem}.eval-{split}.json")


def print_eval(results: dict, checkpoint: str) -> None:
    d, p = results["data"], results["path"]
    print(f"checkpoint {checkpoint} (path {p['name']}, {p['vocab_size']} symbols)")
    print(
        f"data       {d['corpus']} {d['split']} split: first {d['sequences']} chunks of "
        f"{d['seq_len']} ({d['num_tokens']} tokens), sha256 {d['sha256'][:16]}"
    )
    bound, m = results["bound"], results["metrics"]
    if bound is None:
        print(f"bound      unavailable: {results['bound_unavailable']}")
    else:
        print(f"bound      {bound}: {results['bound_name']}")
        print(_row("bits/token", f"{m['bpc']:.4f} ± {m['bpc_stderr']:.4f} (1 s.e.)"))
        if m.get("bpb") is not None:
            print(_row("bits/byte", f"{m['bpb']:.4f} ± {m['bpb_stderr']:.4f} (1 s.e.)"))
        print(_row("perplexity", f"{m['ppl']:.4f}"))
        print(_row("nats/token", f"{m['nats_per_token']:.4f}"))
        print(_row("times per sequence", str(m.get("num_t"))))
        left = results["settings"].get("prior_support_violations") or 0.0
        if left > 0:
            print(
                _row(
                    "unavailable",
                    f"the backward ODE left the prior's support for {left:.1%} of sequences: "
                    "their bound is infinite",
                )
            )
    if "samples" in results:
        s = results["samples"]
        sm = s["metrics"]
        print(f"samples    {s['num']} x {s['length']} chars, {s['sampler']}, {s['steps']} steps")
        print(
            _row(
                "unigram entropy",
                f"{sm['unigram_entropy']:.3f} bits/char (train split "
                f"{sm['train_unigram_entropy']:.3f})",
            )
        )
        print(
            _row(
                "word validity",
                f"{sm['word_validity']:.3f} ({sm['valid_words']} of {sm['num_words']} words)",
            )
        )
        kls = " / ".join(f"{v:.3f}" for k, v in sm.items() if k.startswith("ngram_kl_"))
        print(_row("n-gram KL 1/2/3", f"{kls} bits"))
        if "reference_bpc" in sm:
            print(
                _row(
                    "reference AR bpc",
                    f"{sm['reference_bpc']:.4f} ± {sm['reference_bpc_stderr']:.4f}",
                )
            )
        for text in s["texts"][:3]:
            print(f"  {text!r}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="simplexdiff", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train from a recipe")
    t.add_argument("recipe")
    t.add_argument("overrides", nargs="*", help="omegaconf dotlist, e.g. trainer.max_steps=100")
    e = sub.add_parser(
        "eval",
        help="likelihood bound of a checkpoint on a data split; optional sample metrics",
        description="Score the first N chunks of a split with the path's strongest likelihood "
        "bound (bits per token, perplexity); with --samples, also draw samples and report their "
        "entropy, word validity, n-gram KL and (with --reference) bits per char under an AR model. "
        "Prints a table and writes JSON.",
    )
    e.add_argument("checkpoint")
    e.add_argument("--split", default="test", choices=["test", "val", "validation", "train"])
    e.add_argument("--data", default=None, help="a text file to score instead of the training data")
    e.add_argument("--sequences", type=int, default=256, help="first N chunks (0: all)")
    e.add_argument("--seq-len", type=int, default=None, help="chunk length (default: training's)")
    e.add_argument("--num-t", type=int, default=32, help="times per sequence for NELBO bounds")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--ode-steps", type=int, default=32, help="continuous paths: ODE steps")
    e.add_argument("--decode-time", type=float, default=0.5, help="continuous paths: t*")
    e.add_argument(
        "--decoder",
        default="kernel",
        choices=FLOW_BOUND_DECODERS,
        help="continuous paths: decode z_t* by the kernel's posterior or the model's prediction",
    )
    e.add_argument("--probes", type=int, default=1, help="continuous paths: Hutchinson probes")
    e.add_argument("--samples", type=int, default=0, help="number of samples to draw and measure")
    e.add_argument("--reference", default=None, help="an AR checkpoint to score samples with")
    e.add_argument("--steps", type=int, default=None, help="default 128 (AR: the sample length)")
    e.add_argument("--length", type=int, default=None, help="sample length (default: seq_len)")
    e.add_argument("--sampler", default=None, help="default: the path's (euler / ancestral)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default="cpu")
    e.add_argument("--out", default=None, help="JSON file (default: CKPT_STEM.eval-SPLIT.json)")
    e.add_argument(
        "--choices",
        default=None,
        help="multiple choice instead of a split: a JSONL file of {prompt, choices, answer} "
        "(answer: the index of the right choice); reports accuracy",
    )
    s = sub.add_parser("sample", help="sample text from a checkpoint")
    s.add_argument("checkpoint")
    s.add_argument("--num", type=int, default=8)
    s.add_argument("--steps", type=int, default=128)
    s.add_argument("--length", type=int, default=None, help="default: the trained seq_len")
    s.add_argument("--sampler", default=None, help="default: the path's (euler / ancestral)")
    s.add_argument("--prompt", default=None)
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--top-k", type=int, default=None)
    s.add_argument("--top-p", type=float, default=None)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument(
        "--cfg", type=float, default=0.0, help="classifier-free guidance scale on the prompt"
    )
    s.add_argument(
        "--until-eos",
        action="store_true",
        help="print each text up to its first end-of-document symbol; semi_ar stops there",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "train":
            train(load_recipe(args.recipe, args.overrides))
        elif args.command == "eval":
            eval_command(args)
        else:
            sample_command(args)
    except SimplexdiffError as e:
        print(f"simplexdiff: error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        if e.speaks:
            print(f"simplexdiff: {e}", file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        print("simplexdiff: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
