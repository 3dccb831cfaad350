"""Every config the repository ships validates, and every sweep it describes resolves to
checked configurations (the GPU-sized paper configs included, without their data)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from study.config import load_config
from study.confirm import recorded_config
from study.settings import study_root
from study.sweep import plan_sweep, sweep_spec

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.name))
def test_shipped_config_validates(path: Path) -> None:
    config = load_config(path)
    if config.sweep is not None:
        spec = sweep_spec(config, {})
        cells = plan_sweep(config, spec)
        assert len(cells) == len(spec.values) * max(1, len(spec.values2))
        assert path.read_text().startswith("#"), "a sweep config states its source"


def test_each_paper_sweep_has_a_demo_sized_twin() -> None:
    paper = {p.stem for p in CONFIGS if p.parent.name == "paper"}
    gpu = {name for name in paper if not name.startswith("demo-")}
    assert gpu and {f"demo-{name}" for name in gpu} == paper - gpu


def test_confirmation_finds_the_study_s_places_from_any_directory(tmp_path, monkeypatch) -> None:
    """The saved config holds the paths as written, relative to where the search ran:
    confirmation run from elsewhere pins them to the study's own directory."""
    demo = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    raw = yaml.safe_load(demo.read_text())
    raw["data"]["data_dir"] = "data"
    origin = tmp_path / "project"
    root = origin / raw["storage_path"] / raw["name"]
    state = {"config": raw, "tracking_uri": f"sqlite:///{origin / 'demo-output/mlflow.db'}"}
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    config = recorded_config(root, state, max_concurrent=3)
    assert study_root(config) == root
    assert config.tracking.tracking_uri == state["tracking_uri"]
    assert config.data.data_dir == origin / "data"
    assert config.search.max_concurrent == 3
