"""Pieces of ``benchmarks/toy_simplex.py`` (the Dirichlet-FM toy benchmark) and the ``mlp`` model."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import simplexdiff as sd
from simplexdiff.errors import ConfigError


def _load(name: str, file: Path):
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def toy():
    return _load(
        "toy_simplex", Path(__file__).resolve().parents[1] / "benchmarks" / "toy_simplex.py"
    )


def test_kl_by_hand(toy):
    pi = torch.tensor([[0.5, 0.5], [0.25, 0.75]], dtype=torch.float64)
    tokens = torch.tensor(
        [[0, 1], [0, 1], [0, 1], [1, 1]]
    )  # position 0: 3/4, 1/4; position 1: 0, 1
    first = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    second = math.log(1 / 0.75)  # 0 log 0 = 0
    assert toy.kl_to_target(tokens, pi) == pytest.approx((first + second) / 2, rel=1e-12)
    assert (
        toy.kl_to_target(
            torch.tensor([[0, 0], [1, 1]]), torch.full((2, 2), 0.5, dtype=torch.float64)
        )
        == 0.0
    )


def test_floor_is_the_chi_square_limit(toy):
    pi = toy.toy_target(10)
    assert pi.shape == (4, 10) and torch.allclose(pi.sum(-1), torch.ones(4, dtype=pi.dtype))
    n = 4000
    assert toy.perfect_floor(pi, n) == pytest.approx(9 / (2 * n), rel=0.3)
    # uniform draws are far worse: KL(U || softmax(U(0, 1))) is about Var(u) / 2 = 1/24
    assert toy.uniform_sampler_kl(pi, n) > 10 * 9 / (2 * n)


def test_path_specs_and_steps(toy):
    assert toy.parse_spec("masked") == ("masked", {})
    spec = "fisher_rao:schedule=cosine,t_eps=0.01"
    assert toy.parse_spec(spec) == ("fisher_rao", {"schedule": "cosine", "t_eps": 0.01})
    steps = toy.parse_steps(["fisher_rao=64"])
    assert steps["fisher_rao"] == 64 and steps["masked"] == toy.SAMPLE_STEPS["masked"]
    assert set(toy.parse_steps(["5"]).values()) == {5}


def test_samplers_test_target_matches_the_tests(toy):
    samplers = _load("test_samplers_copy", Path(__file__).with_name("test_samplers.py"))
    assert torch.equal(toy.samplers_test_target(), samplers.target_probs())


def test_mlp_shapes_ids_and_points():
    v, length = 6, 4
    model = sd.models.build("mlp", vocab_size=v, max_len=length, d_model=32, point_knots=16)
    assert model.time_conditioned and model.config()["name"] == "mlp"
    t = torch.rand(3)
    ids = torch.randint(0, v + 1, (3, length))  # id v is MASK
    assert model(ids, t).shape == (3, length, v)
    points = torch.distributions.Dirichlet(torch.ones(v)).sample((3, length))
    assert model(points, t).shape == (3, length, v)
    assert model(points[:, :2], t).shape == (3, 2, v)  # shorter: zero-padded
    with pytest.raises(ConfigError):
        model(torch.zeros(3, length + 1, dtype=torch.long), t)
    # the per-coordinate term and the time both reach the logits once trained away from zero init
    torch.nn.init.normal_(model.knots.weight)
    torch.nn.init.normal_(model.head.weight)
    assert not torch.allclose(model(points, t), model(points, 1 - t))
    out = model(points, t)
    swapped = points.flip(-1)
    assert not torch.allclose(out, model(swapped, t))


def test_mlp_one_hot_ids_match_float_end_knots():
    """Ids read as one-hot vectors: the per-coordinate term takes the end knots (u = -16, 16)."""
    v = 5
    model = sd.models.build("mlp", vocab_size=v, max_len=3, d_model=16, point_knots=8)
    torch.nn.init.normal_(model.knots.weight)
    ids = torch.randint(0, v, (4, 3))
    x = model.features(ids)
    cond = model.time(torch.rand(4))
    table = model.knots(torch.nn.functional.silu(cond))
    expected = torch.where(x[..., :v] > 0, table[:, None, None, -1], table[:, None, None, 0])
    assert torch.allclose(model.point(x[..., :v], cond, ids), expected)
    # float points: g is the knot value at a knot and the average of two halfway between them
    j = torch.tensor([1.0, 2.5, 4.0])
    u = -16 + 32 * j / 7
    points = torch.sigmoid(u).expand(4, 3, 3)
    g = model.point(points, cond, points)
    lerp = torch.stack([table[:, 1], (table[:, 2] + table[:, 3]) / 2, table[:, 4]], -1)
    assert torch.allclose(g, lerp[:, None].expand(4, 3, 3), atol=1e-4)


@pytest.mark.slow
def test_masked_end_to_end_near_floor(toy):
    """600 steps of the masked path on K = 8 land near the perfect-sampler floor (seeds 0-3 of
    this setting gave 0.8-1.5x the floor)."""
    pi = toy.toy_target(8)
    cfg = toy.Settings(
        train_steps=600, batch=512, lr=5e-4, d_model=32, point_knots=8, samples=5000, seed=0
    )
    floor = toy.perfect_floor(pi, cfg.samples)
    assert floor == pytest.approx(7 / (2 * cfg.samples), rel=0.3)
    row = toy.run_cell("masked", pi, cfg, floor, toy.uniform_sampler_kl(pi, cfg.samples))
    assert row.nfe == toy.SAMPLE_STEPS["masked"] and row.samples == cfg.samples
    assert row.kl < 3 * floor, (row.kl, floor)


@pytest.mark.slow
def test_rows_do_not_depend_on_the_worker_count(toy, tmp_path):
    """The script end to end (two spawned worker processes, JSON, PNG): every cell seeds itself,
    so its rows equal the same cells run one after another in this process."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "toy_simplex.py"
    out = tmp_path / "jobs2.json"
    args = ["--K", "5", "7", "--paths", "masked", "dirichlet", "--train-steps", "20"]
    args += ["--samples", "400", "--floor-replicates", "2", "--jobs", "2"]
    subprocess.run([sys.executable, str(script), *args, "--out", str(out)], check=True)
    result = json.loads(out.read_text())
    cfg = toy.Settings(train_steps=20, samples=400)
    here = []
    for k in (5, 7):
        pi = toy.toy_target(k)
        refs = toy.perfect_floor(pi, 400, 2), toy.uniform_sampler_kl(pi, 400)
        here += [
            (spec, k, toy.run_cell(spec, pi, cfg, *refs).kl) for spec in ("masked", "dirichlet")
        ]
    assert [(r["path"], r["K"], r["kl"]) for r in result["rows"]] == here
    assert result["settings"]["jobs"] == 2
    assert all(kl > 0 for *_, kl in here)
    assert out.with_suffix(".png").exists()
