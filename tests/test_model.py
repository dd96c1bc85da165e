import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import simplexdiff as sd
from simplexdiff.errors import ConfigError
from simplexdiff.models.blocks import Rotary, rotate


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


def test_dit_is_bidirectional_and_an_untied_head_starts_uniform():
    m = sd.models.DiT(vocab_size=6, d_model=16, n_layers=1, n_heads=2, max_len=8, tie_weights=False)
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


@given(
    length=st.integers(1, 12),
    shift=st.integers(0, 50),
    head_dim=st.sampled_from([2, 8, 32]),
    seed=st.integers(0, 2**16),
    halves=st.booleans(),
)
def test_rotary_scores_depend_on_relative_position_only(length, shift, head_dim, seed, halves):
    """<R_l q, R_m k> = <R_{l+s} q, R_{m+s} k>, and each rotation keeps the norm."""
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, 1, 1, 1, head_dim, generator=g).expand(2, 1, 1, length + shift, -1)
    rope = Rotary(head_dim, halves=halves)(length + shift, torch.device("cpu"))
    rq, rk = rotate(q, rope)[0, 0], rotate(k, rope)[0, 0]
    scores = rq @ rk.T
    assert torch.allclose(scores[:length, :length], scores[shift:, shift:], atol=1e-4)
    assert torch.allclose(rq.norm(dim=-1), q[0, 0].norm(dim=-1), atol=1e-5)
    if length > 1:  # and the score does depend on the offset (the identity rotation would pass)
        assert not torch.allclose(scores[0, 0], scores[0, 1], atol=1e-4)


@pytest.mark.parametrize("halves", [False, True])
def test_rotary_is_multiplication_by_unit_complex_numbers(halves):
    """RoFormer's definition, written independently: channel pair ``(2i, 2i + 1)`` (with
    ``halves``: ``(i, i + D/2)``) is the complex number ``a + j b``, multiplied at position ``l``
    by ``exp(j l base^(-2i/D))``."""
    head_dim, length = 8, 5
    x = torch.randn(2, 3, length, head_dim, dtype=torch.float64)
    got = rotate(x, Rotary(head_dim, halves=halves)(length, torch.device("cpu")))
    freq = 10_000.0 ** (-torch.arange(head_dim // 2, dtype=torch.float64) * 2 / head_dim)
    angle = torch.arange(length, dtype=torch.float64)[:, None] * freq
    a, b = (
        (x[..., : head_dim // 2], x[..., head_dim // 2 :])
        if halves
        else (x[..., 0::2], x[..., 1::2])
    )
    z = torch.complex(a, b) * torch.polar(torch.ones_like(angle), angle)
    want = torch.cat([z.real, z.imag], -1) if halves else torch.stack([z.real, z.imag], -1)
    assert torch.allclose(got, want.reshape(got.shape), atol=1e-6)
    assert got.dtype == x.dtype
    # in bf16 the rotation is made in float32 and rounded once
    low = rotate(x.bfloat16(), Rotary(head_dim, halves=halves)(length, torch.device("cpu")))
    assert low.dtype == torch.bfloat16
    wide = rotate(
        x.bfloat16().float(), Rotary(head_dim, halves=halves)(length, torch.device("cpu"))
    )
    assert torch.equal(low, wide.bfloat16())


def test_the_two_rotary_layouts_are_one_channel_permutation_apart():
    """Rotating adjacent pairs equals rotating half-split pairs after moving channel ``2i`` to
    ``i`` and ``2i + 1`` to ``i + D/2`` (and back): one family of models, two weight layouts."""
    head_dim, length = 16, 7
    x = torch.randn(3, 2, length, head_dim)
    to_halves = torch.cat([torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)])
    adjacent = rotate(x, Rotary(head_dim)(length, torch.device("cpu")))
    halves = rotate(x[..., to_halves], Rotary(head_dim, halves=True)(length, torch.device("cpu")))
    assert torch.allclose(adjacent[..., to_halves], halves, atol=1e-6)
    assert not torch.allclose(adjacent, rotate(x, Rotary(head_dim, halves=True)(length, "cpu")))


@pytest.mark.parametrize("name", ["dit", "causal"])
def test_positions_option(name):
    """Rotary (default, or with half-split pairs) has no position parameters; learned ones are
    ``input.pos``. All run under bf16 autocast; an unknown kind is one ConfigError."""
    rotary = sd.models.build(name, vocab_size=5, d_model=16, n_layers=1, n_heads=2, max_len=8)
    learned = sd.models.build(
        name, vocab_size=5, d_model=16, n_layers=1, n_heads=2, max_len=8, positions="learned"
    )
    halves = sd.models.build(
        name, vocab_size=5, d_model=16, n_layers=1, n_heads=2, max_len=8, positions="rotary_halves"
    )
    assert "input.pos" not in rotary.state_dict() and "input.pos" in learned.state_dict()
    assert rotary.state_dict().keys() == halves.state_dict().keys()
    assert rotary.config()["positions"] == "rotary"
    for m in (rotary, halves, learned):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = m(torch.randint(0, 5, (2, 6)), torch.rand(2))
        assert out.dtype == torch.bfloat16 and out.isfinite().all()
    with pytest.raises(ConfigError, match="unknown positions 'alibi'"):
        sd.models.build(name, vocab_size=5, d_model=16, n_heads=2, positions="alibi")
    with pytest.raises(ConfigError, match="not divisible by n_heads=3"):
        sd.models.build(name, vocab_size=5, d_model=16, n_heads=3)


@pytest.mark.parametrize("positions", ["rotary", "rotary_halves", None])
def test_rotary_dit_tells_neighbours_from_far_positions(positions):
    """With identical tokens everywhere but one, a rotary DiT's output at a position depends on
    how far the odd token is (at random weights, 4 draws); with no position information at all
    (``None``: learned positions held at zero) it cannot: attention is permutation invariant."""
    base = torch.zeros(1, 16, dtype=torch.long)
    near, far = base.clone(), base.clone()
    near[0, 8], far[0, 14] = 1, 1
    t = torch.tensor([0.5])
    gaps = []
    for seed in range(4):
        torch.manual_seed(seed)
        kind = positions or "learned"
        m = sd.models.DiT(
            vocab_size=4, d_model=16, n_layers=1, n_heads=2, max_len=16, positions=kind
        )
        for p in m.parameters():
            torch.nn.init.normal_(p, std=0.3)
        if positions is None:
            torch.nn.init.zeros_(m.input.pos)
        with torch.no_grad():
            gaps.append(float((m(near, t)[0, 7] - m(far, t)[0, 7]).abs().max()))
    if positions is None:
        assert max(gaps) < 1e-5, gaps  # float rounding only
    else:
        assert max(gaps) > 1e-2, gaps


@pytest.mark.parametrize("name", ["dit", "causal"])
def test_half_split_weights_permuted_give_the_same_model_with_adjacent_pairs(name):
    """A ``rotary_halves`` backbone and a ``rotary`` one whose query and key rows are the same
    weights moved from channel ``i`` / ``i + D/2`` to ``2i`` / ``2i + 1`` compute the same logits."""
    heads, d_model = 2, 16
    head_dim = d_model // heads
    opts = dict(vocab_size=5, d_model=d_model, n_layers=2, n_heads=heads, max_len=12)
    torch.manual_seed(0)
    halves = sd.models.build(name, positions="rotary_halves", **opts)
    for p in halves.parameters():
        torch.nn.init.normal_(p, std=0.3)
    to_halves = torch.cat([torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)])
    where = torch.argsort(to_halves)  # adjacent channel c is half-split channel where[c]
    rows = torch.cat(
        [part * d_model + h * head_dim + (where if part < 2 else torch.arange(head_dim))
         for part in range(3) for h in range(heads)]
    )  # fmt: skip
    state = {k: v[rows] if ".qkv." in k else v for k, v in halves.state_dict().items()}
    adjacent = sd.models.build(name, positions="rotary", **opts)
    adjacent.load_state_dict(state)
    x, t = torch.randint(0, 5, (3, 12)), torch.rand(3)
    with torch.no_grad():
        assert torch.allclose(adjacent(x, t), halves(x, t), atol=1e-4)
        unpermuted = sd.models.build(name, positions="rotary", **opts)
        unpermuted.load_state_dict(halves.state_dict())
        assert not torch.allclose(unpermuted(x, t), halves(x, t), atol=1e-2)


@pytest.mark.parametrize("name", ["dit", "causal"])
def test_tied_head_reads_the_token_embedding(name):
    """``tie_weights=True`` (default): the logits are ``h E[:V]^T + b`` with ``E`` the input embedding (one
    matrix, trained from both ends); the head stores only its bias, and the model rebuilds from
    its config and state dict."""
    torch.manual_seed(0)
    model = sd.models.build(name, vocab_size=11, d_model=16, n_layers=1, n_heads=2, max_len=8)
    assert [k for k in model.state_dict() if k.startswith("head.")] == ["head.bias"]
    h = torch.randn(3, 16)
    assert torch.allclose(model.head(h), h @ model.input.embed.weight[:11].T)
    x = torch.randint(0, 11, (2, 8))
    model(x, torch.rand(2)).square().sum().backward()
    assert model.input.embed.weight.grad[:11].abs().sum() > 0
    copy = sd.models.build(**model.config())
    copy.load_state_dict(model.state_dict())
    assert torch.equal(copy(x, torch.full((2,), 0.3)), model(x, torch.full((2,), 0.3)))
    untied = sd.models.build(name, vocab_size=11, d_model=16, n_layers=1, n_heads=2, max_len=8,
                             tie_weights=False)  # fmt: skip
    assert {"head.weight", "head.bias"} <= untied.state_dict().keys()


def test_time_scale_stretches_the_time_axis():
    """The time features at scale ``s`` and time ``t`` are those at scale 1000 and ``s t / 1000``."""
    from simplexdiff.models.blocks import TimeEmbedding

    torch.manual_seed(0)
    wide, narrow = TimeEmbedding(8), TimeEmbedding(8, scale=10.0)
    narrow.load_state_dict(wide.state_dict())
    t = torch.rand(5)
    assert torch.allclose(narrow(t), wide(t * 10.0 / 1000.0), atol=1e-6)
    assert not torch.allclose(narrow(t), wide(t), atol=1e-3)


@pytest.mark.parametrize("cond_dim", [None, 8])
def test_dropout_drops_whole_branches_never_the_residual(cond_dim):
    """``dropout`` acts on each branch's output: at ``p = 1`` a training block is the identity,
    in eval mode it is the deterministic block, and at ``p = 0.5`` two training calls differ."""
    from simplexdiff.models.blocks import Block

    torch.manual_seed(0)
    x, cond = torch.randn(2, 5, 8), torch.randn(2, 8)
    kw = {} if cond_dim is None else {"cond": cond}
    block = Block(8, 2, dropout=1.0, cond_dim=cond_dim)
    if cond_dim is not None:
        torch.nn.init.normal_(block.modulation.weight)  # open the adaLN-Zero gates
    assert torch.equal(block.train()(x, **kw), x)
    assert not torch.allclose(block.eval()(x, **kw), x)
    half = Block(8, 2, dropout=0.5, cond_dim=cond_dim).train()
    half.load_state_dict(block.state_dict())
    assert not torch.equal(half(x, **kw), half(x, **kw))
