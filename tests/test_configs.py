"""Every config the repository ships validates, and every sweep it describes resolves to
checked configurations (the GPU-sized paper configs included, without their data); the
configs that confirmation and a resumed sweep rebuild from a saved study."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from study.config import ConfigError, config_as_dict, load_config
from study.confirm import recorded_config
from study.launch import resume_state
from study.settings import STUDY_STATE, study_root
from study.sweep import plan_sweep, sweep_spec, sweep_study_config

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
    assert config.data.data_dir == origin / "data"  # from the storage path (older studies)
    assert config.search.max_concurrent == 3
    # A study records where it was started: through a symbolic link, say.
    started = {**state, "working_directory": str(tmp_path / "link")}
    assert recorded_config(root, started, None).data.data_dir == tmp_path / "link" / "data"


def test_a_sweep_resumes_only_with_the_grid_it_started(tmp_path) -> None:
    """The saved config carries the sweep as the flags resolved it: other values are
    refused on --resume, the same ones resume."""
    demo = load_config(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")
    flags = {"method": "simclr", "param": "temperature"}
    started = sweep_study_config(demo, sweep_spec(demo, {**flags, "values": ["0.1", "0.2"]}))
    root = tmp_path / "sweep"
    root.mkdir()
    (root / STUDY_STATE).write_text(json.dumps({"config": config_as_dict(started)}))
    again = sweep_study_config(demo, sweep_spec(demo, {**flags, "values": ["0.1", "0.2"]}))
    assert resume_state(again, root, resume=True) is not None
    other = sweep_study_config(demo, sweep_spec(demo, {**flags, "values": ["0.1", "0.3"]}))
    with pytest.raises(ConfigError, match=r"--resume: sweep\.values"):
        resume_state(other, root, resume=True)


def test_the_study_directory_is_resolved_where_the_command_runs(tmp_path, monkeypatch) -> None:
    """A Ray Client study's fit runs on the cluster, whose working directory differs: the
    searches and sweeps take the study directory as the command resolved it."""
    from study.config import parse_config
    from study.settings import study_root, with_absolute_storage

    monkeypatch.chdir(tmp_path)
    config = parse_config({"name": "here", "storage_path": "results",
                           "methods": {"simclr": {}}})
    pinned = with_absolute_storage(config)
    assert pinned.storage_path == tmp_path.resolve() / "results"
    assert study_root(pinned) == study_root(config) == tmp_path.resolve() / "results" / "here"
