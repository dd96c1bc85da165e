"""Run by tests/test_ddp.py as ``python tests/ddp_check.py CORPUS DEVICES OUT``: validation of
the same weights and data on 1 or 2 CPU processes (gloo), and the training times each rank
draws. Lightning's DDP launcher runs this script once per process."""

import json
import sys
from pathlib import Path

import lightning as L
import torch

import simplexdiff as sd

corpus, devices, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
torch.set_num_threads(1)
dm = sd.data.TextDataModule(corpus, seq_len=16, batch_size=8, cache_dir=str(out / "cache"))
results = {}
for path in ("masked", "uniform", "ar", "fisher_rao"):
    L.seed_everything(0, verbose=False)
    model = sd.models.build(
        "causal" if path == "ar" else "dit",
        vocab_size=dm.tokenizer.vocab_size,
        d_model=16,
        n_layers=1,
        n_heads=2,
        max_len=16,
    )
    lm = sd.DiffusionLM(model, sd.paths.build(path, vocab_size=dm.tokenizer.vocab_size))
    # the same 150 plain steps in every process (no Trainer): weights worth scoring, where an
    # untrained flow's backward ODE leaves the prior's support and its bound is inf
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    chunks = dm.split("train")
    gen = torch.Generator().manual_seed(0)
    for _ in range(150):
        x = chunks[torch.randint(0, len(chunks), (16,), generator=gen)]
        loss = lm._loss(x, gen).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        limit_val_batches=5,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    results[path] = trainer.validate(lm, dm, verbose=False)[0]


def fit(path: sd.paths.Path, steps: int) -> L.Trainer:
    """Train a tiny backbone on ``path`` for ``steps`` steps under this script's strategy."""
    L.seed_everything(0, verbose=False)
    model = sd.models.build(
        "dit", vocab_size=dm.tokenizer.vocab_size, d_model=16, n_layers=1, n_heads=2, max_len=16
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_steps=steps,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(sd.DiffusionLM(model, path), dm)
    return trainer


# training: each rank records the times it drew in its first two steps
drawn = []
path = sd.paths.build("masked", vocab_size=dm.tokenizer.vocab_size)
orig = path.training_times
path.training_times = lambda u: drawn.append(u.clone()) or orig(u)
trainer = fit(path, 2)
torch.save(drawn, out / f"times-{devices}-{trainer.global_rank}.pt")
# the learned time warp: every rank fits it to the losses of the global batch
path = sd.paths.build("fisher_rao", vocab_size=dm.tokenizer.vocab_size, warp={"bins": 4})
trainer = fit(path, 3)
torch.save(path.warp.state(), out / f"warp-{devices}-{trainer.global_rank}.pt")
if trainer.is_global_zero:
    (out / f"val-{devices}.json").write_text(json.dumps(results))
