"""``benchmarks/backbone_positions.py`` reuses a finished cell only when it trained the same
recipe: a rerun with other ``--set`` overrides or steps into the same ``--runs`` trains anew."""

import argparse
import sys
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import backbone_positions as bp  # noqa: E402


def args(runs: Path, steps: int = 600, *overrides: str) -> argparse.Namespace:
    recipe = str(ROOT / "recipes/quickstart.yaml")
    return argparse.Namespace(runs=str(runs), steps=steps, set=list(overrides), recipe=recipe)


def finish(cfg, version: int) -> Path:
    """A run folder as ``train`` leaves it: the resolved recipe and a final checkpoint."""
    run = Path(cfg.out_dir) / f"version_{version}"
    run.mkdir(parents=True)
    OmegaConf.save(cfg, run / "recipe.yaml")
    (run / "final.ckpt").write_bytes(b"")
    return run / "final.ckpt"


def test_a_finished_cell_is_reused_only_for_the_same_recipe(tmp_path):
    same = bp.cell_recipe("masked", "rotary", args(tmp_path))
    assert bp.finished_run(same) is None
    other_lr = bp.cell_recipe("masked", "rotary", args(tmp_path, 600, "optim.lr=3e-3"))
    finish(other_lr, 0)
    assert bp.finished_run(same) is None
    assert bp.finished_run(bp.cell_recipe("masked", "rotary", args(tmp_path, 300))) is None
    ckpt = finish(same, 1)
    finish(other_lr, 2)  # a newer run of another recipe does not hide it
    assert bp.finished_run(same) == ckpt
    assert bp.finished_run(other_lr) == tmp_path / "masked-rotary/version_2/final.ckpt"
    # the family and the positions are part of the recipe (and of the folder)
    assert bp.cell_recipe("ar", "rotary", args(tmp_path)).model.name == "causal"
    assert bp.finished_run(bp.cell_recipe("masked", "learned", args(tmp_path))) is None


def test_backbones_are_named_overrides_of_todays_defaults(tmp_path):
    """``learned`` is the backbone issue 11 started from; ``rotary`` trains today's defaults; a
    detail the family's model lacks (the causal model reads no time) is not trained for it."""
    learned = bp.cell_recipe("masked", "learned", args(tmp_path)).model
    assert learned.positions == "learned" and learned.tie_weights is False
    assert "positions" not in bp.cell_recipe("masked", "rotary", args(tmp_path)).model
    assert bp.applies("masked", "time_scale_10") and not bp.applies("ar", "time_scale_10")
    assert all(bp.applies(f, b) for f in bp.FAMILIES for b in ("learned", "rotary", "untied"))


def test_add_grows_a_report_of_the_same_settings_only():
    """``--add`` keeps the saved rows, trains only the cells they lack, and refuses a report of
    other settings or another machine."""
    import pytest

    def report(families, backbones, lr="2e-3", machine="m"):
        settings = {"families": families, "backbones": backbones, "detail_families": families,
                    "steps": 600, "set": [f"optim.lr={lr}"]}  # fmt: skip
        return {"machine": machine, "recipe": "q.yaml", "settings": settings,
                "backbones": {b: {} for b in backbones}, "rows": []}  # fmt: skip

    saved = report(["ar", "masked"], ["learned", "rotary"])
    saved["rows"] = [{"family": "ar", "backbone": "untied"}]
    cells = [("ar", "untied"), ("uniform", "untied")]
    merged, todo = bp.added_to(saved, report(["ar", "uniform"], ["untied"]), cells)
    assert todo == [("uniform", "untied")]
    assert merged["rows"] == saved["rows"]
    assert merged["settings"]["families"] == ["ar", "masked", "uniform"]
    assert list(merged["backbones"]) == ["learned", "rotary", "untied"]
    for other in (report(["ar"], ["untied"], lr="1e-3"), report(["ar"], ["untied"], machine="x")):
        with pytest.raises(SystemExit, match="differs"):
            bp.added_to(saved, other, cells)
