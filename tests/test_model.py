import pytest
import torch

import simplexdiff as sd
from simplexdiff.errors import ConfigError


def test_dit_reads_ids_and_simplex_points_through_one_embedding():
    torch.manual_seed(0)
    m = sd.models.DiT(vocab_size=5, d_model=32, n_layers=2, n_heads=4, max_len=8)
    for p in m.parameters():  # leave the zero-initialised head and gates: make them non-trivial
        torch.nn.init.normal_(p, std=0.1)
    ids = torch.tensor([[0, 4, 2], [1, 1, 3]])
    t = torch.tensor([0.2, 0.9])
    out_ids = m(ids, t)
    out_vertices = m(torch.nn.functional.one_hot(ids, 5).float(), t)
    assert out_ids.shape == (2, 3, 5)
    assert torch.allclose(out_ids, out_vertices, atol=1e-5)
    assert m(torch.full((1, 3), 5), t[:1]).shape == (1, 3, 5)  # the MASK id V has an embedding row
    assert not torch.allclose(m(ids, torch.tensor([0.0, 0.0])), m(ids, torch.tensor([1.0, 1.0])))


def test_dit_is_bidirectional_and_starts_uniform():
    m = sd.models.DiT(vocab_size=6, d_model=16, n_layers=1, n_heads=2, max_len=8)
    out = m(torch.randint(0, 6, (2, 5)), torch.rand(2))
    assert torch.allclose(out, torch.zeros_like(out))  # zero-initialised head: uniform start
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.2)
    ids = torch.randint(0, 6, (1, 5))
    changed = ids.clone()
    changed[0, 4] = (ids[0, 4] + 1) % 6
    t = torch.tensor([0.5])
    assert not torch.allclose(m(ids, t)[0, 0], m(changed, t)[0, 0])  # position 0 sees position 4


def test_dit_rejects_too_long_input():
    m = sd.models.DiT(vocab_size=3, d_model=16, n_layers=1, n_heads=2, max_len=4)
    with pytest.raises(ConfigError, match="max_len"):
        m(torch.zeros(1, 5, dtype=torch.long), torch.zeros(1))


def test_models_registry_rebuilds_from_config():
    m = sd.models.DiT(vocab_size=3, d_model=16, n_layers=1, n_heads=2, max_len=4)
    again = sd.models.MODELS.build(**m.config())
    assert sum(p.numel() for p in again.parameters()) == sum(p.numel() for p in m.parameters())
    with pytest.raises(ConfigError, match="unknown option 'width'"):
        sd.models.build("dit", vocab_size=3, width=5)
