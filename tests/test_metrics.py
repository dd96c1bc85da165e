"""``BitsPerToken`` / ``Perplexity``: hand-computed values, float64 sum states, and merged or
synchronised states equal one instance fed everything."""

import math

import pytest
import torch
from torchmetrics.utilities.data import dim_zero_sum

import simplexdiff as sd

BATCHES = [
    (torch.tensor([2.0, 4.0]), 3),  # per-sequence totals, summed
    (torch.tensor(1.5), torch.tensor([2, 1])),  # a total; per-sequence counts, summed
    (0.25, 1),
]


def test_hand_computed_values():
    bpt, ppl = sd.eval.BitsPerToken(), sd.eval.Perplexity()
    for m in (bpt, ppl):
        m.update(torch.tensor([2.0, 4.0]), 3)
    assert bpt.compute().item() == pytest.approx(2 / math.log(2), rel=1e-15)
    assert ppl.compute().item() == pytest.approx(math.exp(2), rel=1e-15)
    for m in (bpt, ppl):
        m.update(2.0, 1)  # 8 nats over 4 tokens
    assert bpt.compute().item() == pytest.approx(2 / math.log(2), rel=1e-15)
    bpt.reset()
    bpt.update(torch.tensor([math.log(2)] * 5, dtype=torch.float64), torch.tensor([1] * 5))
    assert bpt.compute().item() == pytest.approx(1.0, rel=1e-15)


def test_states_are_float64_sums():
    m = sd.eval.BitsPerToken()
    m.update(torch.tensor([1.0], dtype=torch.float32), 1)
    assert m.nats.dtype == m.tokens.dtype == torch.float64
    assert m._reductions == {"nats": dim_zero_sum, "tokens": dim_zero_sum}
    m.update(torch.tensor(1e-9, dtype=torch.float64), 2**40)  # float32 would lose both
    assert m.nats.item() == 1 + 1e-9 and m.tokens.item() == 1 + 2**40


@pytest.mark.parametrize("cls", [sd.eval.BitsPerToken, sd.eval.Perplexity])
def test_merged_and_synced_equal_one_instance(cls):
    whole = cls()
    for nats, n in BATCHES:
        whole.update(nats, n)
    a, b = cls(), cls()
    a.update(*BATCHES[0])
    for nats, n in BATCHES[1:]:
        b.update(nats, n)
    merged = a.clone()
    merged.merge_state(b)
    assert merged.compute().item() == pytest.approx(whole.compute().item(), rel=1e-15)
    # the DDP path: compute() gathers each state from the two "processes" and sums, then restores
    other = {id(a.nats): b.nats, id(a.tokens): b.tokens}
    a.dist_sync_fn = lambda t, group=None: [t, other[id(t)]]
    a.distributed_available_fn = lambda: True
    assert a.compute().item() == pytest.approx(whole.compute().item(), rel=1e-15)
    assert a.tokens.item() == 3  # local state back after the sync


def test_validation_logs_bpc_and_ppl_from_the_metric():
    """``DiffusionLM`` accumulates ``val/bpc`` in a ``BitsPerToken`` and logs ``val/ppl`` beside
    it: an untrained AR model predicts uniformly over 5 symbols, exactly 5 per token."""
    import lightning as L
    from torch.utils.data import DataLoader

    x = torch.randint(0, 5, (12, 8), generator=torch.Generator().manual_seed(0))
    model = sd.models.build(
        "causal", vocab_size=5, d_model=16, n_layers=1, n_heads=2, max_len=8, tie_weights=False
    )  # fmt: skip  (a zero head: uniform predictions)
    lm = sd.DiffusionLM(model=model, path=sd.paths.build("ar", vocab_size=5))
    assert isinstance(lm.val_bpc, sd.eval.BitsPerToken)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    val = trainer.validate(lm, DataLoader(x, batch_size=5), verbose=False)[0]  # batches 5, 5, 2
    assert val["val/bpc"] == pytest.approx(math.log2(5), abs=1e-6)
    assert val["val/ppl"] == pytest.approx(5, abs=1e-5)
