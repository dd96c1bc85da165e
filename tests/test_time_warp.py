"""CDCD's learned time warp (``simplexdiff/paths/time_warp.py``): the draw's density against the
closed form for a known loss curve, its edges, and its place in every continuous path."""

import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import simplexdiff as sd
from simplexdiff.errors import ConfigError
from simplexdiff.lightning import stratified_times
from simplexdiff.paths.time_warp import TimeWarp


def drop_then_flat(tau: torch.Tensor) -> torch.Tensor:
    """A loss that falls linearly from 4 to 0 on ``[0, 1/2]`` and is 0 after."""
    return 4 * (1 - 2 * tau).clamp_min(0)


def trained_warp(
    loss=drop_then_flat, steps: int = 300, batch: int = 64, noise: float = 0.3, **options
) -> TimeWarp:
    """The warp fitted online as in training: draw from it, observe noisy losses, repeat."""
    warp = TimeWarp.build(options)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        tau = warp(stratified_times(batch, g))
        warp.observe(tau, loss(tau) + noise * torch.randn(batch, generator=g))
    return warp


def test_times_are_spread_evenly_in_loss():
    """Closed form: the loss falls uniformly on [0, 1/2], so the warped density there is
    (1 - floor) * 2 + floor and floor after: mass 0.95 below 1/2 with floor 0.1. No warp gives
    0.5; a warp turned the wrong way gives 0.05."""
    warp = trained_warp(floor=0.1)
    tau = warp(stratified_times(10_000, torch.Generator().manual_seed(1)))
    assert (tau < 0.5).double().mean().item() == pytest.approx(0.95, abs=0.02)
    quarters = torch.tensor(
        [(tau < q).double().mean().item() for q in (0.25, 0.5, 0.75, 1.0)], dtype=torch.float64
    )
    mass = torch.diff(quarters, prepend=torch.zeros(1))
    expected = torch.tensor([0.475, 0.475, 0.025, 0.025], dtype=torch.float64)
    assert torch.allclose(mass, expected, atol=0.02), mass
    fit = warp.fitted_loss()
    assert fit is not None and bool((fit[1:] <= fit[:-1]).all())  # non-increasing


def test_uniform_until_every_bin_is_seen_and_for_a_flat_loss():
    u = torch.linspace(0, 0.999, 50)
    warp = TimeWarp(bins=8)
    warp.observe(torch.tensor([0.05, 0.3]), torch.tensor([3.0, 1.0]))  # 2 of 8 bins seen
    assert torch.allclose(warp(u), u, atol=1e-6)
    flat = trained_warp(loss=lambda tau: torch.ones_like(tau), steps=20, noise=0.0, bins=8)
    assert torch.allclose(flat(u), u, atol=1e-6)  # nothing to learn: no drop anywhere


@settings(max_examples=40, deadline=None)
@given(
    bins=st.integers(2, 16),
    floor=st.floats(0.01, 1.0),
    losses=st.lists(st.floats(0, 10), min_size=16, max_size=16),
)
def test_the_draw_is_monotone_inside_the_unit_interval(bins, floor, losses):
    """Any observed losses (non-monotone ones too): the warp maps [0, 1) into [0, 1),
    monotonically (stratified uniforms stay stratified), and its density integrates to 1."""
    warp = TimeWarp(bins=bins, floor=floor)
    warp.observe((torch.arange(16) + 0.5) / 16, torch.tensor(losses))
    u = torch.cat([torch.zeros(1), torch.rand(200), torch.tensor([1 - 2**-24])])
    tau = warp(u.sort().values)
    assert bool((tau >= 0).all() and (tau < 1).all())
    assert bool((tau[1:] >= tau[:-1]).all())
    centers = (torch.arange(bins, dtype=torch.float64) + 0.5) / bins  # constant on each bin
    assert warp.density(centers).mean().item() == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("name", ["fisher_rao", "linear", "dirichlet", "rdlm"])
def test_every_continuous_path_takes_a_warp_and_checkpoints_it(name, cache_dir):
    path = sd.paths.build(name, vocab_size=5, warp={"bins": 4})
    again = sd.paths.build(**path.config())  # the config rebuilds it, warp included
    assert again.warp is not None and again.warp.config() == path.warp.config()
    x1 = torch.randint(0, 5, (8, 6), generator=torch.Generator().manual_seed(0))
    model = sd.models.build("dit", vocab_size=5, d_model=16, n_layers=1, n_heads=2, max_len=6)
    u = stratified_times(8, torch.Generator().manual_seed(1))
    tau = path.warp_times(u)
    out = path.training_loss(model, x1, path.training_times(tau))
    assert out.sequence_ce is not None and out.sequence_ce.shape == (8,)
    path.observe(tau, out.sequence_ce + torch.arange(8.0).flip(0))  # a loss falling in time
    again.load_state(path.state())
    assert torch.equal(again.warp_times(u), path.warp_times(u))
    assert not torch.equal(path.warp_times(u), u)


def test_bad_warp_options_are_refused():
    with pytest.raises(ConfigError, match="unknown time warp option"):
        sd.paths.build("fisher_rao", vocab_size=5, warp={"bin": 4})
    with pytest.raises(ConfigError, match="floor"):
        sd.paths.build("fisher_rao", vocab_size=5, warp={"floor": 0})
    with pytest.raises(ConfigError, match="window and warp"):
        sd.paths.build("rdlm", vocab_size=5, window=[0.3, 0.75], warp=True)


def test_the_time_profile_reads_the_training_density():
    """``benchmarks/time_profile.py``'s training-time density against the closed forms: uniform
    on ``[0, 1 - t_eps)``, RDLM's window (density 1 inside, 0.2 outside, normalised), a warp."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from time_profile import training_density

    at = [0.1, 0.5, 0.9]
    plain = training_density(sd.paths.build("fisher_rao", vocab_size=5), at)
    assert plain == pytest.approx([1 / 0.999] * 3, rel=1e-3)
    window = sd.paths.build("rdlm", vocab_size=5, window=[0.3, 0.75, 0.2])
    mass = 0.3 * 0.2 + 0.45 + (1 - 1e-4 - 0.75) * 0.2
    assert training_density(window, at) == pytest.approx([0.2 / mass, 1 / mass, 0.2 / mass], 1e-2)
    warped = sd.paths.build("linear", vocab_size=5, warp=True)
    warped.warp = trained_warp()
    # the warp's own density (t = 0.999 tau), on average over each half (histogram bins straddle
    # the warp's)
    for half in (0, 0.5):
        t = torch.tensor([0.025 + 0.05 * i + half for i in range(10)])
        exact = warped.warp.density(t / 0.999).mean().item() / 0.999
        assert sum(training_density(warped, t.tolist())) / 10 == pytest.approx(exact, rel=0.03)
