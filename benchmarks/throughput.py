"""Training-step throughput of every path against the bare backbone, and achieved FLOP/s.

For each path: tokens/s of ``path.training_loss(...).backward()`` (noising, denoiser, loss) as a ratio
to the bare backbone's forward + backward on the same batch (a plain cross-entropy on its logits; the
backbone is the DiT, or the causal transformer for a path that needs one: the AR baseline), and
the backbone's achieved FLOP/s (counted by ``torch.utils.flop_counter``) as a share of the measured
fp32 (or bf16 on CUDA) matmul peak of the same machine, all in one run. Also each bare backbone
with every kind of positions (``backbones``: rotary, the default, against learned absolute ones),
so the cost of the rotary embedding is measured in the same run. Writes JSON.

Every comparison is timed in turns (``turns``): each round runs every contender once, in an order
that alternates between rounds, and a ratio is the median of the per-round ratios, so drifting
load (clock speed, a neighbour process) hits both sides of a ratio alike. On a CPU, run it pinned
to one core with one thread and nothing else on that core, as the committed result was:

    taskset -c 1 python benchmarks/throughput.py --threads 1 [--out ...] [--rounds 9]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from workers import source_commit

import simplexdiff as sd
from simplexdiff.cli import machine
from simplexdiff.lightning import stratified_times
from simplexdiff.models.blocks import POSITIONS

S_CONFIG = dict(d_model=256, n_layers=4, n_heads=4, max_len=256)  # DESIGN "S"


def timed(fn, repeats: int, sync) -> float:
    """Median seconds of ``fn`` after two warm-up calls."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def turns(fns: dict[str, Callable[[], None]], rounds: int, sync) -> dict[str, list[float]]:
    """Seconds of each call of ``fns``, taken in turns: a warm-up call of each, then ``rounds``
    rounds that call every function once, in forward order on even rounds and reversed on odd
    ones (so none always runs first)."""
    names = list(fns)
    for name in names:
        fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            sync()
            start = time.perf_counter()
            fns[name]()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def median_ratio(num: list[float], den: list[float]) -> float:
    """The median over rounds of ``num / den`` (both timed in the same rounds)."""
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


def matmul_peak(device: torch.device, dtype: torch.dtype, sync, n: int = 2048) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / timed(lambda: a @ b, 5, sync)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/throughput.json")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--vocab", type=int, default=27)
    p.add_argument("--rounds", type=int, default=9, help="timing rounds per comparison")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--paths", nargs="*", default=None, help="default: every registered path")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    dtype = torch.bfloat16 if cuda else torch.float32
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda)
    peak = matmul_peak(device, dtype, sync)

    x1 = torch.randint(0, args.vocab, (args.batch, args.seq), device=device)
    t = stratified_times(args.batch, device=device)

    def backbone_step(backbone: str, inputs: torch.Tensor, positions: str = "rotary"):
        """The model and its bare forward + backward (a plain cross-entropy on its logits)."""
        model = sd.models.build(
            backbone, vocab_size=args.vocab, positions=positions, **S_CONFIG
        ).to(device)
        for prm in model.parameters():  # leave the identity initialisation: realistic numerics
            torch.nn.init.normal_(prm, std=0.02)

        def bare():
            with autocast:
                logits = model(inputs, t)
            torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), x1.flatten()).backward()

        return model, bare

    def flops_of(fn) -> int:
        with FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops()

    backbones = []
    for backbone in ("dit", "causal"):
        bares = {pos: backbone_step(backbone, x1, pos)[1] for pos in POSITIONS}
        times = turns(bares, args.rounds, sync)
        for positions, bare in bares.items():
            flops, bare_t = flops_of(bare), statistics.median(times[positions])
            backbones.append(
                {
                    "backbone": backbone,
                    "positions": positions,
                    "bare_step_s": bare_t,
                    "over_rotary": median_ratio(times[positions], times["rotary"]),
                    "flops_per_step": flops,
                    "achieved_flops_per_s": flops / bare_t,
                    "share_of_matmul_peak": flops / bare_t / peak,
                }
            )
            print(
                f"{backbone:6s} {positions:8s} bare step {bare_t:.3f} s"
                f"  ({100 * flops / bare_t / peak:.1f}% of peak)"
            )

    results = []
    for name in args.paths or sd.paths.available():
        path = sd.paths.build(name, vocab_size=args.vocab)
        with torch.no_grad():
            inputs = path.model_input(path.prior(args.batch, args.seq, device=device))
        # the backbone whose causality the path needs: the DiT, or the causal transformer (AR)
        backbone = "causal" if path.causal else "dit"
        model, bare = backbone_step(backbone, inputs)

        def step(model=model, path=path):
            with autocast:
                loss = path.training_loss(model, x1, path.training_times(t)).loss
            loss.backward()

        flops = flops_of(bare)
        times = turns({"bare": bare, "step": step}, args.rounds, sync)
        bare_t, step_t = statistics.median(times["bare"]), statistics.median(times["step"])
        tokens = args.batch * args.seq
        row = {
            "path": name,
            "backbone": backbone,
            "bare_step_s": bare_t,
            "train_step_s": step_t,
            "step_over_bare": median_ratio(times["step"], times["bare"]),
            "tokens_per_s": tokens / step_t,
            "bare_tokens_per_s": tokens / bare_t,
            "flops_per_step": flops,
            "achieved_flops_per_s": flops / bare_t,
            "share_of_matmul_peak": flops / bare_t / peak,
        }
        results.append(row)
        print(
            f"{name:12s} step/bare {row['step_over_bare']:.3f}  {row['tokens_per_s']:9.0f} tok/s"
            f"  {row['achieved_flops_per_s'] / 1e9:7.1f} GFLOP/s"
            f"  ({100 * row['share_of_matmul_peak']:.0f}% of peak)"
        )
    out = {
        "machine": {
            "name": machine(),
            "node": platform.node(),
            "processor": platform.processor(),
            "threads": torch.get_num_threads(),
            "cores": sorted(os.sched_getaffinity(0)),
            "device": str(device),
            "gpu": torch.cuda.get_device_name() if cuda else None,
            "torch": torch.__version__,
        },
        "config": {
            **S_CONFIG,
            "batch": args.batch,
            "seq": args.seq,
            "vocab": args.vocab,
            "dtype": str(dtype),
            "rounds": args.rounds,
            "timing": "in turns, alternating order; medians; ratios are medians of per-round ratios",
            "seed": args.seed,
        },
        "commit": source_commit(),
        "matmul_peak_flops_per_s": peak,
        "backbones": backbones,
        "paths": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"matmul peak {peak / 1e9:.1f} GFLOP/s ({dtype}); wrote {args.out}")


if __name__ == "__main__":
    main()
