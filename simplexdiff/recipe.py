"""Recipes: omegaconf YAML checked against a schema, so a key that does not exist fails at once.

``path`` and ``model`` are ``{name: ..., option: value}`` maps resolved through the registries (an
unknown name or option is an error before training); every other section is a fixed schema.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from simplexdiff.errors import ConfigError


@dataclass
class DataConfig:
    corpus: str = "text8"
    seq_len: int = 256
    batch_size: int = 32
    tokenizer: Any = (
        None  # text8, char, byte, bpe or {name: bpe, vocab_size: 2048}; None: by corpus
    )
    num_workers: int = 0
    cache_dir: str | None = None


@dataclass
class OptimConfig:
    lr: float = 3e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1


@dataclass
class TrainerConfig:
    max_steps: int = 1000
    max_time: str | None = None  # "DD:HH:MM:SS", stops earlier if reached
    val_check_interval: int = 200
    limit_val_batches: int = 20
    log_every_n_steps: int = 10
    precision: str = "32-true"
    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"
    gradient_clip_val: float | None = 1.0
    ema_decay: float | None = None  # EMA through Lightning's EMAWeightAveraging when set
    checkpoint_every: int | None = None  # steps between checkpoints (None: val_check_interval)


@dataclass
class SampleConfig:
    num: int = 4
    length: int = 128
    steps: int = 128
    sampler: str | None = None  # None: the path's default_sampler
    cfg: float = 0.0  # classifier-free guidance scale for prompted samples (conditional data)
    temperature: float = 1.0  # 0: greedy (the instruction recipes' exact match)


@dataclass
class Recipe:
    seed: int = 0
    out_dir: str = "runs/default"
    resume: str | None = None  # a checkpoint to continue training from
    # conditional data: share of training rows whose prompt is hidden (classifier-free guidance)
    prompt_dropout: float = 0.0
    data: DataConfig = field(default_factory=DataConfig)
    path: dict[str, Any] = field(default_factory=lambda: {"name": "fisher_rao"})
    model: dict[str, Any] = field(default_factory=lambda: {"name": "dit"})
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)


def _one_line(e: OmegaConfBaseException) -> str:
    key = getattr(e, "full_key", None)
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    if "not in" in first and key:
        return f"unknown recipe key {key!r}"
    return f"bad recipe value for {key!r}: {first}" if key else f"bad recipe: {first}"


def load_recipe(file: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Schema defaults, then the YAML file, then ``key.sub=value`` overrides; checked as it merges."""
    layers = [OmegaConf.structured(Recipe)]
    try:
        if file is not None:
            file = Path(file)
            if not file.is_file():
                raise ConfigError(f"recipe not found: {file}")
            layers.append(OmegaConf.load(file))
        layers.append(OmegaConf.from_dotlist(list(overrides)))
        cfg = OmegaConf.merge(*layers)
    except OmegaConfBaseException as e:
        raise ConfigError(_one_line(e)) from None
    except ConfigError:
        raise
    except Exception as e:  # YAML syntax
        raise ConfigError(f"could not parse recipe {file}: {str(e).splitlines()[0]}") from None
    for section in ("path", "model"):
        if "name" not in cfg[section]:
            raise ConfigError(f"recipe section {section!r} needs a 'name'")
        if "vocab_size" in cfg[section]:
            raise ConfigError(
                f"recipe key '{section}.vocab_size' is not set by hand: the data's tokenizer sets it"
            )
    check_values(cfg)
    return cfg


def _positive(v: Any) -> bool:
    return isinstance(v, int) and v >= 1


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _max_time(v: Any) -> bool:
    """Lightning's ``DD:HH:MM:SS``."""
    parts = str(v).split(":")
    return len(parts) == 4 and all(p.isdigit() for p in parts) and any(int(p) for p in parts)


# (key, test, what it must be): a value outside its test is an error before any work.
VALUE_RULES: list[tuple[str, Callable[[Any], bool], str]] = [
    ("seed", lambda v: 0 <= v < 2**32, "an integer in [0, 2**32)"),
    ("data.seq_len", _positive, "a positive integer"),
    ("data.batch_size", _positive, "a positive integer"),
    ("data.num_workers", lambda v: v >= 0, "a non-negative integer"),
    ("optim.lr", lambda v: _finite(v) and v > 0, "a positive finite number"),
    ("optim.weight_decay", lambda v: _finite(v) and v >= 0, "a non-negative finite number"),
    ("optim.betas", lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two numbers in [0, 1)"),
    ("optim.warmup_steps", lambda v: v >= 0, "a non-negative integer"),
    ("optim.min_lr_ratio", lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    ("trainer.max_steps", _positive, "a positive integer"),
    ("trainer.max_time", lambda v: v is None or _max_time(v), "null or DD:HH:MM:SS, not all zero"),
    ("trainer.val_check_interval", _positive, "a positive integer (steps)"),
    ("trainer.limit_val_batches", lambda v: v >= 0, "a non-negative integer"),
    ("trainer.log_every_n_steps", _positive, "a positive integer"),
    ("trainer.gradient_clip_val", lambda v: v is None or (_finite(v) and v > 0), "null or > 0"),
    ("trainer.ema_decay", lambda v: v is None or 0 < v < 1, "null or a number in (0, 1)"),
    ("trainer.checkpoint_every", lambda v: v is None or _positive(v), "null or a positive integer"),
    ("sample.num", _positive, "a positive integer"),
    ("sample.length", _positive, "a positive integer"),
    ("sample.steps", _positive, "a positive integer"),
    ("sample.cfg", lambda v: _finite(v) and v >= 0, "a non-negative finite number"),
    ("sample.temperature", lambda v: _finite(v) and v >= 0, "0 (greedy) or a positive number"),
    ("prompt_dropout", lambda v: 0 <= v < 1, "a number in [0, 1)"),
]


def check_values(cfg: DictConfig) -> None:
    """One ``ConfigError`` naming the first recipe value outside its range (``VALUE_RULES``)."""
    for key, test, expected in VALUE_RULES:
        value = OmegaConf.select(cfg, key)
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value)
        try:
            ok = test(value)
        except TypeError:
            ok = False
        if not ok:
            raise ConfigError(f"bad recipe value for {key!r}: {value!r} (must be {expected})")
