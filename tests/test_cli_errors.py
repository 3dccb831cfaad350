"""Bad input: one line on stderr naming the field, exit status 2, nothing written."""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from study.cli import build_parser, main
from study.config import config_as_dict, load_config
from study.settings import STUDY_STATE, study_root
from trainables.methods import METHODS

BASE: dict[str, Any] = {
    "name": "bad",
    "data": {"dataset": "shapes", "num_train": 128, "num_test": 32},
    "train": {"epochs": 2},
    "methods": {"simclr": {}},
}


def _with(path: str, value: Any) -> dict[str, Any]:
    config = copy.deepcopy(BASE)
    node = config
    *parents, leaf = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return config


CONFIG_CASES = [
    (_with("methods", {"byol": {}}), "methods.byol: unknown method"),
    (_with("methods", {}), "methods"),
    (_with("data.dataset", "mnist"), "data.dataset: unknown 'mnist'"),
    (_with("methods.simclr.space", {"temperature": {"low": 0.5, "high": 0.1}}),
     "methods.simclr.space.temperature: low (0.5) must be below high (0.1)"),
    (_with("methods.simclr.space", {"lr": {"low": 0.0, "high": 0.1}}),
     "methods.simclr.space.lr: a log scale needs low > 0"),
    (_with("methods.simclr.space", {"batch_size": {"choices": []}}),
     "methods.simclr.space.batch_size.choices"),
    (_with("methods.simclr.space", {"momentum": {"low": 0.9, "high": 0.99}}),
     "methods.simclr.space.momentum: unknown parameter for simclr"),
    (_with("methods.simclr.space", {"batch_size": {"choices": [64, 256]}}),
     "methods.simclr.space.batch_size: 256 exceeds the 128 pretraining images"),
    (_with("data", {"dataset": "cifar10", "data_dir": "/nonexistent/cifar"}),
     "data.data_dir '/nonexistent/cifar' does not exist"),
    (_with("data", {"dataset": "cifar10"}), "needs data.data_dir"),
    (_with("trian", {"epochs": 3}), "trian: unknown key; allowed: name, seed"),
    (_with("train.epoch", 3), "train.epoch: unknown key; allowed: backbone, epochs"),
    (_with("methods.simclr.spce", {}), "methods.simclr.spce: unknown key; allowed: space"),
    (_with("train.epochs", "ten"), "train.epochs: Input should be a valid integer"),
    (_with("train.epochs", 0), "train.epochs: Input should be greater than or equal to 1"),
    (_with("train.backbone", "resnet50"), "train.backbone"),
    (_with("search.metric", "linear_acc"), "train.linear_probe: must be 'every'"),
    (_with("search.grace_period", 5), "search.grace_period: must be at most train.epochs"),
    (_with("search.reduction_factor", 1), "search.reduction_factor"),
    (_with("resources.gpus_per_worker", 1.5), "resources.gpus_per_worker: above 1"),
    (_with("resources", {"cpus_per_worker": 0}), "resources.cpus_per_worker"),
    (_with("resources", {"workers_per_trial": 2, "gpus_per_worker": 0.5}),
     "resources.gpus_per_worker: fractional GPUs (0.5) cannot be combined"),
    (_with("resources", {"workers_per_trial": 0}), "resources.workers_per_trial"),
    (_with("resources", {"cpus_per_trial": 2}), "resources.cpus_per_trial: unknown key"),
    (_with("search.max_failures", -1), "search.max_failures"),
    (_with("train.sync_bn", True), "train.sync_bn: needs workers_per_trial > 1 on GPUs"),
    (_with("train.device", "cpu") | {"resources": {"gpus_per_worker": 1}},
     "train.device: 'cpu' contradicts"),
    (_with("train.precision", "fp16"), "train.precision: fp16 needs a GPU"),
    (_with("train.precision", "half"), "train.precision: Input should be 'auto', 'fp32'"),
    (_with("train.channels_last", "yes please"), "train.channels_last: Input should be 'auto'"),
    (_with("tracking.tracking_uri", "http://127.0.0.1:9"),
     "tracking.tracking_uri: no MLflow tracking server answers at http://127.0.0.1:9"),
    (_with("storage_path", "/proc/version"), "storage_path"),
    (_with("tracking.tracking_uri", "file:///tmp/mlruns"), "tracking.tracking_uri: unsupported"),
    (_with("name", "bad name/with slash"), "name: String should match pattern"),
    (_with("methods.simclr", {"space": {"temperature": 0.1, "batch_size": 64,
                                        "aug_strength": 0.5, "lr": 0.001,
                                        "weight_decay": 0.0}, }),
     "methods.simclr.space: every parameter is fixed"),
    (_with("methods.simclr.replace_space", "maybe"), "methods.simclr.replace_space"),
    (_with("methods", {"dim": {"space": {"alpha": {"low": -0.5, "high": 1.0}}}}),
     "methods.dim.space.alpha: low: got -0.5, allowed: a float in [0, inf)"),
    (_with("methods", {"patch_triplet": {"space": {"distance": {"choices": ["cosine", "l1"]}}}}),
     "methods.patch_triplet.space.distance: value: got 'l1', allowed: one of 'cosine'"),
    (_with("methods", {"cpc": {"space": {"pred_steps": {"low": 0, "high": 2}}}}),
     "methods.cpc.space.pred_steps: low: got 0, allowed: an int in [1, inf)"),
    (_with("methods", {"spatial_contrasting": {"space": {"layers": "all"}}}),
     "methods.spatial_contrasting.space.layers"),
    (_with("train.eval_layer", 9), "train.eval_layer: got 9, allowed: 1 to 4 (the stages of "
                                   "small_cnn)"),
    (_with("train.eval_layer", 0), "train.eval_layer: Input should be greater than or equal"),
    (_with("search.metric", "mlp_acc"), "train.mlp_probe: must be 'every'"),
    (_with("train.mlp_probe", "sometimes"), "train.mlp_probe: Input should be 'final'"),
    (_with("search.cross_method", "perhaps"), "search.cross_method"),
    (_with("search.sampler", "sobol"),
     "search.sampler: Input should be 'tpe', 'qmc' or 'random'"),
    (_with("search", {"sampler": "qmc", "cross_method": True}),
     "search.sampler: qmc needs one search per method; with cross_method: true use tpe"),
    (_with("data.val_fraction", 0.0), "data.val_fraction: must be above 0 for a search"),
    (_with("data.val_fraction", 1.0), "data.val_fraction: Input should be less than 1"),
    (_with("seed_policy", "random"), "seed_policy: Input should be 'shared' or 'per_trial'"),
    (_with("train.lr_scaling", "cubic"), "train.lr_scaling: Input should be 'none'"),
    (_with("train.budget_unit", "hours"), "train.budget_unit: Input should be 'epochs'"),
    (_with("train.test_metrics", "never"), "train.test_metrics: Input should be 'final'"),
    (_with("search.confirm", {"top": 0, "random": 0}),
     "search.confirm.top: top and random cannot both be 0"),
    (_with("search.confirm", {"seeds": 0}), "search.confirm.seeds: Input should be greater"),
    # Every key: type, range, contradiction.
    (_with("name", ".."), "name: String should match pattern"),
    (_with("name", "../escape"), "name: String should match pattern"),
    (_with("name", "x" * 101), "name: String should have at most 100 characters"),
    (_with("seed", -1), "seed: Input should be greater than or equal to 0"),
    (_with("seed", "zero"), "seed: Input should be a valid integer"),
    (_with("storage_path", "/proc/sslstudy"), "storage_path: cannot create directories in '/proc'"),
    (_with("storage_path", ["a", "b"]), "storage_path: Input is not a valid path"),
    (_with("data", "shapes"), "data: Input should be a valid dictionary"),
    (_with("data.download", "yes please"), "data.download: Input should be a valid boolean"),
    (_with("data.image_size", 4), "data.image_size: Input should be greater than or equal to 8"),
    (_with("data.num_train", 10), "data.num_train: Input should be greater than or equal to 64"),
    (_with("data.num_test", 1), "data.num_test: Input should be greater than or equal to 16"),
    (_with("data", {"dataset": "image_folder", "data_dir": "/proc/version"}),
     "data.data_dir '/proc/version' does not exist or is not a directory"),
    (_with("train.eval_every", 0), "train.eval_every: Input should be greater than or equal to 1"),
    (_with("train.optimizer", "adam"), "train.optimizer: Input should be 'adamw', 'sgd' or 'lars'"),
    (_with("train.warmup_epochs", -1), "train.warmup_epochs: Input should be greater than"),
    (_with("train.warmup_epochs", 2), "train.warmup_epochs: must be below epochs (2)"),
    (_with("train.device", "tpu"), "train.device: Input should be 'auto', 'cpu' or 'cuda'"),
    (_with("train.knn_k", 0), "train.knn_k: Input should be greater than or equal to 1"),
    (_with("train.knn_temperature", 0), "train.knn_temperature: Input should be greater than 0"),
    (_with("train.linear_probe", "sometimes"), "train.linear_probe: Input should be 'final'"),
    (_with("train.epochs", 100_001), "train.epochs: Input should be less than or equal to"),
    (_with("search.num_samples", 0), "search.num_samples: Input should be greater than or equal"),
    (_with("search.max_concurrent", 0), "search.max_concurrent: Input should be greater than"),
    (_with("search.metric", "top1"),
     "search.metric: unknown 'top1'; allowed: knn_acc, linear_acc, mlp_acc, or a metric of"),
    (_with("search.mode", "best"), "search.mode: Input should be 'max' or 'min'"),
    (_with("search.grace_period", 0), "search.grace_period: Input should be greater than"),
    (_with("search.n_startup_trials", -1), "search.n_startup_trials: Input should be greater"),
    (_with("search.bogus", 1), "search.bogus: unknown key; allowed: num_samples"),
    (_with("resources.workers_per_trial", 2000), "resources.workers_per_trial: Input should be"),
    (_with("resources.gpus_per_worker", -1), "resources.gpus_per_worker: Input should be greater"),
    (_with("resources", {"workers_per_trial": 3}) | {"methods": {"simclr": {"space": {
        "batch_size": {"type": "categorical", "choices": [32, 64]}}}}},
     "methods.simclr.space.batch_size: 32 does not split evenly over "
     "resources.workers_per_trial (3)"),
    (_with("resources", {"workers_per_trial": 2}) | {"methods": {"simclr": {"space": {
        "batch_size": {"type": "int", "low": 16, "high": 64, "step": 3}}}}},
     "methods.simclr.space.batch_size: 3 does not split evenly"),
    (_with("resources", {"cpus_per_worker": 100_000}) | {"methods": {"simclr": {"space": {
        "batch_size": {"type": "categorical", "choices": [32, 64]}}}}},
     "resources: a worker needs 100000 CPU on one node"),
    (_with("resources", {"workers_per_trial": 2, "cpus_per_worker": 50_000}) | {
        "methods": {"simclr": {"space": {"batch_size": {"type": "categorical",
                                                         "choices": [32, 64]}}}}},
     "resources: a worker needs 50000 CPU on one node"),
    (_with("tracking.tracking_uri", "sqlite:////proc/sslstudy/mlflow.db"),
     "tracking.tracking_uri: cannot create directories in '/proc'"),
    (_with("tracking.experiment", ""), "tracking.experiment: String should have at least 1"),
    (_with("train.epochs", True), "train.epochs: Input should be a number, not true or false"),
    (_with("resources.cpus_per_worker", True),
     "resources.cpus_per_worker: Input should be a number, not true or false"),
    (_with("evaluation.finetune", {"fractions": [0.1, True]}),
     "evaluation.finetune.fractions: Input should be a number, not true or false"),
    (_with("evaluation.retrieval", {"k": [True, 10]}),
     "evaluation.retrieval.k: Input should be a number, not true or false"),
    (_with("tracking", {"uri": "sqlite:///x.db"}), "tracking.uri: unknown key"),
    (_with("methods", {"simclr": 3}), "methods.simclr: Input should be a valid dictionary"),
    (_with("methods", ["simclr"]), "methods: Input should be a valid dictionary"),
    (_with("methods.simclr.space", {"batch_size": {"type": "int", "low": 64,
                                                   "high": float("inf")}}),
     "methods.simclr.space.batch_size.high: must be a finite number, got inf"),
    (_with("methods.simclr.space", {"temperature": {"low": 0.1, "high": float("inf")}}),
     "methods.simclr.space.temperature.high: must be a finite number, got inf"),
    (_with("methods.simclr.space", {"batch_size": {"type": "int", "low": 64, "high": 256,
                                                   "step": 0.5}}),
     "methods.simclr.space.batch_size.step: an int range needs an integer step >= 1"),
    (_with("methods.simclr.space", {"temperature": [0.1, 0.2]}),
     "methods.simclr.space.temperature: a list is ambiguous"),
    (_with("methods.simclr.space", {"temperature": {"type": "float", "low": 0.1, "high": 1,
                                                    "scale": "cubic"}}),
     "methods.simclr.space.temperature.scale: got 'cubic'"),
    (_with("methods.simclr.space", {"batch_size": {"type": "float", "low": 2, "high": 8}}),
     "methods.simclr.space.batch_size.type: float does not fit a int hyperparameter"),
    (_with("methods.simclr.space", {"temperature": "warm"}),
     "methods.simclr.space.temperature: value: got 'warm'"),
    (_with("methods", {"relative_patch": {"space": {"gap": {"low": 0, "high": 3}}}}),
     "methods.relative_patch.space: gap and jitter: gap must be at least 2 x jitter"),
    (_with("methods", {"relative_patch": {"space": {"gap": 1}}}),
     "methods.relative_patch.space: gap and jitter: "),
    (_with("methods", {"cpc": {"space": {"patch_size": {"choices": [12, 16]}}}}),
     "methods.cpc.space: pred_steps and patch_size: predicting 2 row(s) with 16-pixel "
     "patches needs a grid of at least 4 rows"),
    (_with("methods", {"jigsaw": {"space": {
        "batch_size": 32, "tile_size": {"type": "int", "low": 6, "high": 10}}}}),
     "methods.jigsaw.space: tile_size and tile_slack: the 3x3 grid of 11-pixel cells"),
    # The evaluation protocols.
    (_with("evaluation.finetune", {"fractions": [0.1, 1.5]}),
     "evaluation.finetune.fractions: got 1.5, allowed: label fractions in (0, 1]"),
    (_with("evaluation.finetune", {"fractions": [0.0]}),
     "evaluation.finetune.fractions: got 0.0, allowed: label fractions in (0, 1]"),
    (_with("evaluation.finetune", {"fractions": [0.1], "labels_per_class": 4}),
     "evaluation.finetune.fractions: give fractions or labels_per_class, not both"),
    (_with("evaluation.finetune", {"labels_per_class": 100}),
     "evaluation.finetune.labels_per_class: 100 exceeds the smallest class of the labelled "
     "train split of 'shapes'"),
    (_with("evaluation.finetune", {"modes": ["frozen", "thawed"]}),
     "evaluation.finetune.modes.1: Input should be 'frozen' or 'unfrozen'"),
    (_with("evaluation.finetune", {"fraction": [0.1]}),
     "evaluation.finetune.fraction: unknown key; allowed: fractions, labels_per_class"),
    (_with("evaluation.pruning", {"sparsities": [0.9, 1.0]}),
     "evaluation.pruning.sparsities: got 1.0, allowed: sparsities in [0, 1)"),
    (_with("evaluation.pruning", {"bits": 1}),
     "evaluation.pruning.bits: Input should be greater than or equal to 2"),
    (_with("evaluation.pruning", {"bits": 17}),
     "evaluation.pruning.bits: Input should be less than or equal to 16"),
    (_with("evaluation.pruning", {"fractions": [2]}),
     "evaluation.pruning.fractions: got 2.0, allowed: label fractions in (0, 1]"),
    (_with("evaluation.retrieval", {"k": [1, 1000]}),
     "evaluation.retrieval.k: 1000 exceeds the database, the labelled train split of 'shapes' "
     "(128 images); allowed: 1 to 128"),
    (_with("evaluation.retrieval", {"k": [0]}),
     "evaluation.retrieval.k: got [0], allowed: distinct whole numbers >= 1"),
    (_with("evaluation.embedding", {"method": "mds"}),
     "evaluation.embedding.method: Input should be 'tsne', 'umap' or 'pca'"),
    (_with("evaluation.on", "sometimes"), "evaluation.on: Input should be 'final' or 'confirm'"),
    (_with("evaluation", {"on": "confirm", "finetune": {}})
     | {"search": {"metric": "finetune_frozen_10_acc"}},
     "evaluation.on: must be 'final' when search.metric is finetune_frozen_10_acc"),
    (_with("search.metric", "retrieval_p5") | {"evaluation": {"retrieval": {}}},
     "search.metric: unknown 'retrieval_p5'; allowed: knn_acc, linear_acc, mlp_acc, or what "
     "the evaluation section logs: retrieval_p1, retrieval_p10, retrieval_map10"),
]


def _snapshot(directory: Path) -> set[Path]:
    return {p.relative_to(directory) for p in directory.rglob("*")}


def _run(args: list[str], capsys) -> tuple[int, str]:
    code = main(args)
    err = capsys.readouterr().err
    return code, err


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("config,message", CONFIG_CASES)
def test_bad_config_is_one_line_exit_2_and_writes_nothing(
    config: dict, message: str, workdir: Path, capsys
) -> None:
    path = workdir / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    before = _snapshot(workdir)
    code, err = _run(["search", str(path)], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("sslstudy: error: "), err
    assert message in err
    assert _snapshot(workdir) == before


def _write_base(workdir: Path) -> Path:
    path = workdir / "study.yaml"
    path.write_text(yaml.safe_dump(BASE))
    for method in ("relative_patch", "cpc"):
        (workdir / f"{method}.yaml").write_text(yaml.safe_dump(_with("methods", {method: {}})))
    return path


@pytest.mark.parametrize(
    "args,message",
    [
        (["search", "missing.yaml"], "config file 'missing.yaml': cannot read"),
        (["search", "."], "cannot read"),
        (["search", "{config}", "--num-samples", "0"], "--num-samples"),
        (["search", "{config}", "--max-concurrent", "x"], "--max-concurrent"),
        (["search", "{config}", "--bogus"], "unrecognized arguments: --bogus"),
        (["fly", "{config}"], "invalid choice: 'fly'"),
        (["search"], "the following arguments are required: CONFIG"),
        (["search", "{config}", "--name", "no spaces allowed"], "name: String should match"),
        (["search", "{config}", "--address", "127.0.0.1:1"],
         "--address: no Ray cluster answers at 127.0.0.1:1"),
        (["search", "{config}", "--address", "nonsense"], "--address: expected auto or HOST:PORT"),
        (["search", "{config}", "--resume"], "--resume: no study at"),
        (["tracking-server", "--port", "0"], "--port"),
        (["tracking-server", "--port", "99999"], "--port: expected a port from 1 to 65535"),
        (["confirm", "nowhere"], "STUDY: 'nowhere' is neither a study directory nor a config"),
        (["confirm", "{config}"], "STUDY: no study at"),
        (["confirm", "{config}", "--top", "-1"], "--top: expected a whole number >= 0"),
        (["confirm", "{config}", "--top", "0"], "STUDY: no study at"),
        (["confirm", "{config}", "--top", "0", "--random", "0"],
         "--top: --top and --random cannot both be 0 (nothing to confirm)"),
        (["confirm", "{config}", "--seeds", "0"], "--seeds: expected a positive integer"),
        (["confirm", "{config}", "--random", "-1"], "--random: expected a whole number >= 0"),
        (["sweep", "{config}", "--method", "simclr", "--param", "temperature",
          "--values", "0.1,-2"], "--values temperature: got -2"),
        (["sweep", "{config}", "--method", "simclr", "--param", "momentum", "--values", "0.9"],
         "--param: 'momentum' is not a hyperparameter of simclr"),
        (["sweep", "{config}", "--method", "simclr", "--param", "temperature", "--values",
          "0.1", "--param2", "batch_size"], "--values2: --param2 and --values2 go together"),
        (["sweep", "{config}", "--method", "simclr", "--param", "temperature", "--values",
          "0.1", "--values2", "32"], "--param2: --param2 and --values2 go together"),
        (["sweep", "{config}", "--method", "moco", "--param", "temperature", "--values",
          "0.1"], "--method: 'moco' is not in the config"),
        (["sweep", "{config}", "--method", "byol", "--param", "temperature", "--values",
          "0.1"], "--method: unknown 'byol'"),
        (["sweep", "{config}", "--method", "simclr", "--param", "temperature", "--values",
          "0.1,0.1"], "--values: temperature lists a value twice"),
        (["sweep", "{config}", "--method", "simclr", "--param", "temperature", "--values",
          "0.1", "--seeds", "0"], "--seeds: expected a positive integer"),
        (["sweep", "{config}", "--method", "simclr", "--param", "temperature", "--values",
          "0.1", "--around", "best"], "--around best: no study at"),
        (["sweep", "{config}", "--method", "simclr", "--param", "temperature", "--values",
          "0.1", "--around", "nofile.yaml"], "--around: cannot read 'nofile.yaml'"),
        (["sweep", "{config}", "--method", "simclr", "--param", "batch_size", "--values",
          "64,4096"], "--values: 4096 exceeds the 128 pretraining images"),
        (["search", "{config}", "--storage-path", "/proc/sslstudy"],
         "storage_path: cannot create directories in '/proc'"),
        (["search", "{config}", "--tracking-uri", "mlruns"], "tracking.tracking_uri: unsupported"),
        (["search", "{config}", "--experiment", ""], "tracking.experiment: String should have"),
        (["search", "{config}", "--name", "../up"], "name: String should match pattern"),
        (["search", "{config}", "--num-samples", "-3"], "--num-samples"),
        (["train", "{config}", "--param", "=3"], "expected NAME=VALUE"),
        (["train", "{config}", "--param", "lr=[1"], "cannot parse the value"),
        (["train", "{config}", "--param", "aug_strength=2"], "--param aug_strength: got 2"),
        (["train", "{config}", "--param", "crop_scale=-0.1"], "--param crop_scale: got -0.1"),
        (["train", "{config}", "--method", "moco"], "--method: 'moco' is not in the config"),
        (["train", "{config}", "--param", "temperature=-1"], "--param temperature"),
        (["train", "{config}", "--param", "queue_size=8"], "queue_size: unknown hyperparameter"),
        (["train", "{config}", "--param", "novalue"], "expected NAME=VALUE"),
        (["train", "{config}", "--param", "batch_size=.inf"],
         "--param batch_size: got inf, allowed: a finite int in [2, inf)"),
        (["train", "{config}", "--param", "temperature=.inf"],
         "--param temperature: got inf, allowed: a finite float in (0, inf)"),
        (["sweep", "{config}", "--method", "simclr", "--param", "batch_size", "--values",
          "64,inf"], "--values batch_size: got inf, allowed: a finite int in [2, inf)"),
        (["train", "{config}", "--param", "batch_size=4096"], "batch_size: 4096 exceeds"),
        (["train", "{relative_patch}", "--param", "gap=0", "--param", "jitter=1"],
         "--param gap and jitter: gap must be at least 2 x jitter"),
        (["train", "{cpc}", "--param", "patch_size=16", "--param", "pred_steps=2",
          "--param", "batch_size=64"],
         "--param: pred_steps and patch_size: predicting 2 row(s) with 16-pixel patches"),
        (["analyze", "--experiment", "x", "--out", "r"], "no MLflow database"),
        (["analyze", "--experiment", "x", "--out", "r", "--budget", "soon"], "--budget"),
        (["analyze", "--experiment", "x"], "--out"),
        (["analyze", "--experiment", "x", "--out", "r", "--mode", "best"], "--mode"),
        # Before: a traceback from the report's first write.
        (["analyze", "--experiment", "x", "--out", "/proc/sslstudy"],
         "--out: cannot create directories in '/proc'"),
        # Before: MLflow's retries for about four minutes, then a traceback.
        (["analyze", "--experiment", "x", "--out", "r", "--tracking-uri",
          "http://127.0.0.1:9"],
         "--tracking-uri: no MLflow tracking server answers at http://127.0.0.1:9"),
        (["export", "--experiment", "x", "--method", "simclr", "--register", "m",
          "--tracking-uri", "http://127.0.0.1:9"],
         "--tracking-uri: no MLflow tracking server answers at http://127.0.0.1:9"),
    ],
)
def test_bad_invocation_is_one_line_exit_2_and_writes_nothing(
    args: list[str], message: str, workdir: Path, capsys
) -> None:
    config = _write_base(workdir)
    (workdir / "bad.yaml").write_text("methods: [simclr\n")
    before = _snapshot(workdir)
    names = {"{config}": config, "{relative_patch}": workdir / "relative_patch.yaml",
             "{cpc}": workdir / "cpc.yaml"}
    code, err = _run([str(names.get(a, a)) for a in args], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("sslstudy: error: "), err
    assert message in err
    assert _snapshot(workdir) == before


@pytest.mark.parametrize("text,message", [
    ("methods: [simclr\n", "invalid YAML at line"),
    ("- simclr\n", "config: the top level must be a mapping, got list"),
    ("", "config: the file is empty; it needs at least methods"),
    ("just words\n", "config: the top level must be a mapping, got str"),
    ("!!python/object/apply:os.system ['touch pwned']\n",
     "a YAML tag that is not plain data at line 1"),
    ("methods: !!python/name:os.system\n", "a YAML tag that is not plain data at line 1"),
])
def test_yaml_that_is_not_a_plain_mapping(text: str, message: str, workdir: Path,
                                          capsys) -> None:
    (workdir / "study.yaml").write_text(text)
    before = _snapshot(workdir)
    code, err = _run(["search", str(workdir / "study.yaml")], capsys)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert _snapshot(workdir) == before


def test_console_script_prints_no_traceback(workdir: Path) -> None:
    (workdir / "study.yaml").write_text(yaml.safe_dump(_with("methods", {"byol": {}})))
    done = subprocess.run(
        [sys.executable, "-m", "study.cli", "search", "study.yaml"],
        capture_output=True, text=True, cwd=workdir, check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"sslstudy: error: methods.byol: unknown method; allowed: {', '.join(sorted(METHODS))}"
    ]


@pytest.mark.parametrize("section,library,message", [
    ({"embedding": {"method": "umap"}}, "umap",
     "evaluation.embedding.method: 'umap' needs umap-learn, which is not installed"),
    ({"retrieval": {"backend": "faiss"}}, "faiss",
     "evaluation.retrieval.backend: 'faiss' needs faiss-cpu, which is not installed"),
])
def test_an_optional_library_that_is_not_installed_is_refused(
    section: dict, library: str, message: str, workdir: Path, capsys, monkeypatch
) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == library else find_spec(name, *a))
    (workdir / "study.yaml").write_text(yaml.safe_dump(_with("evaluation", section)))
    before = _snapshot(workdir)
    code, err = _run(["search", str(workdir / "study.yaml")], capsys)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert _snapshot(workdir) == before


def test_a_deleted_experiment_is_refused_before_anything_runs(workdir: Path, capsys) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    client.delete_experiment(client.create_experiment("bad"))
    (workdir / "study.yaml").write_text(yaml.safe_dump(BASE))
    before = _snapshot(workdir)
    code, err = _run(["search", str(workdir / "study.yaml")], capsys)
    assert code == 2
    assert "tracking.experiment: 'bad' was deleted in MLflow" in err
    assert _snapshot(workdir) == before


def test_a_study_with_one_tuner_per_method_is_not_resumed(workdir: Path, capsys) -> None:
    """A study started by the version that searched its methods one after another holds
    a Tuner per method; this version cannot continue those, and says so before anything
    starts."""
    path = workdir / "study.yaml"
    path.write_text(yaml.safe_dump(BASE))
    config = load_config(path, {})
    root = study_root(config)
    (root / "simclr").mkdir(parents=True)
    (root / "simclr" / "tuner.pkl").write_bytes(b"")  # what marks a Tuner Ray can restore
    (root / STUDY_STATE).write_text(json.dumps({"config": config_as_dict(config)}))
    before = _snapshot(workdir)
    code, err = _run(["search", str(path), "--resume"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "--resume: " in err and "one Tuner per method (simclr)" in err, err
    assert _snapshot(workdir) == before


@pytest.mark.parametrize("args,field", [
    (["search", "{config}", "--tracking-uri", "sqlite:///notdb.db"], "tracking.tracking_uri"),
    (["export", "--experiment", "bad", "--tracking-uri", "sqlite:///notdb.db", "--method",
      "simclr"], "--tracking-uri"),
    (["analyze", "--experiment", "bad", "--tracking-uri", "sqlite:///notdb.db", "--out", "r"],
     "--tracking-uri"),
])
def test_a_tracking_store_that_is_not_a_database_is_refused(
    args: list[str], field: str, workdir: Path, capsys
) -> None:
    config = _write_base(workdir)
    (workdir / "notdb.db").write_text("not a database\n")
    before = _snapshot(workdir)
    code, err = _run([str(config) if a == "{config}" else a for a in args], capsys)
    assert code == 2
    assert err.strip().splitlines() == [
        f"sslstudy: error: {field}: {str(workdir / 'notdb.db')!r} is not an MLflow SQLite "
        "database"]
    assert _snapshot(workdir) == before
    assert (workdir / "notdb.db").read_text() == "not a database\n"


@pytest.mark.parametrize("args", [
    ["confirm", "{root}"],
    ["sweep", "{config}", "--method", "simclr", "--param", "temperature", "--values", "0.1",
     "--around", "best"],
], ids=["confirm", "sweep-around-best"])
def test_a_study_whose_tracking_store_is_gone_is_refused(
    args: list[str], workdir: Path, capsys
) -> None:
    """The study recorded a SQLite store that has since been removed: reading its trials
    must not create an empty database in its place."""
    path = _write_base(workdir)
    config = load_config(path, {})
    root = study_root(config)
    root.mkdir(parents=True)
    gone = workdir / "moved" / "mlflow.db"
    (root / STUDY_STATE).write_text(json.dumps({
        "config": config_as_dict(config), "tracking_uri": f"sqlite:///{gone}",
        "experiment_id": "1", "parent_run_id": "0" * 32}))
    before = _snapshot(workdir)
    names = {"{root}": str(root), "{config}": str(path)}
    code, err = _run([names.get(a, a) for a in args], capsys)
    assert code == 2
    assert err.strip().splitlines() == [
        f"sslstudy: error: tracking.tracking_uri: no MLflow database at {str(gone)!r}"]
    assert _snapshot(workdir) == before


def test_flags_with_a_default_say_it_and_the_search_example_needs_no_cleanup() -> None:
    """Help names each flag's default; the search example names its own study, so that it
    runs as printed after ``make demo`` (whose study, ``demo``, then exists)."""
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for command, flag in [("tracking-server", "--port"), ("confirm", "--max-concurrent"),
                          ("confirm", "--top"), ("sweep", "--max-concurrent"),
                          ("sweep", "--storage-path")]:
        (action,) = [a for a in commands.choices[command]._actions if flag in a.option_strings]
        assert "default" in action.help, f"{command} {flag}: {action.help}"
    (port,) = [a for a in commands.choices["tracking-server"]._actions
               if "--port" in a.option_strings]
    assert "default 5000" in port.help and port.default == 5000
    example = shlex.split(commands.choices["search"].epilog.removeprefix("example:").strip())
    args = parser.parse_args(example[1:])
    demo = load_config(Path(__file__).resolve().parents[1] / args.config)
    assert args.name is not None and args.name != demo.name


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
@pytest.mark.parametrize("command", ["search", "train"])
def test_cuda_without_a_cuda_device_is_refused_where_the_run_is_local(
    command: str, workdir: Path, capsys
) -> None:
    path = workdir / "study.yaml"
    path.write_text(yaml.safe_dump(_with("train.device", "cuda") | {
        "methods": {"simclr": {"space": {"batch_size": 32}}}}))
    before = _snapshot(workdir)
    code, err = _run([command, str(path)], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "train.device: 'cuda' but this machine has no CUDA device" in err
    assert _snapshot(workdir) == before


def test_an_empty_tracking_file_stays_empty_when_the_input_is_refused(workdir: Path,
                                                                       capsys) -> None:
    """``touch mlflow.db``: MLflow would write its tables into the empty file as soon as
    the store is opened; a study refused for another reason leaves it empty."""
    config = _write_base(workdir)
    (workdir / "mlflow.db").touch()
    for args, message in ((["--address", "127.0.0.1:1"], "--address: no Ray cluster"),
                          (["--storage-path", "/proc/sslstudy"], "storage_path: cannot")):
        code, err = _run(["search", str(config), *args], capsys)
        assert code == 2 and message in err, err
        assert (workdir / "mlflow.db").stat().st_size == 0


def test_a_setting_added_since_a_study_started_is_not_a_change_on_resume(
    workdir: Path,
) -> None:
    """A study saved by a version without ``search.sampler`` ran TPE, the setting's
    default: resuming it with the same config goes on; a changed setting is refused."""
    from study.config import ConfigError
    from study.launch import resume_state

    path = workdir / "study.yaml"
    path.write_text(yaml.safe_dump(BASE))
    config = load_config(path, {})
    root = study_root(config)
    root.mkdir(parents=True)
    older = config_as_dict(config)
    del older["search"]["sampler"]
    (root / STUDY_STATE).write_text(json.dumps({"config": older}))
    assert resume_state(config, root, resume=True)["config"] == older
    qmc = load_config(path, {"search.sampler": "qmc"})
    with pytest.raises(ConfigError, match=r"--resume: search\.sampler differs"):
        resume_state(qmc, root, resume=True)
