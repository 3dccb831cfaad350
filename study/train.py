"""``sslstudy train``: one configuration of one method, in this process, as one MLflow
run with its resolved config, its dataset and its final encoder as a model. No Ray, no
Optuna: the values are resolved once here and handed down, and only what one run uses is
checked (a config's search section does not apply)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from study import checks, paths
from study.config import ConfigError, StudyConfig, config_as_dict, load_config
from study.settings import trial_settings
from tracking import schema
from tracking.runs import TrackingTarget, get_or_create_experiment
from tracking.server import open_instructions

logger = logging.getLogger("sslstudy")


def _pick_method(config: StudyConfig, method: str | None) -> str:
    if method is None:
        if len(config.methods) > 1:
            raise ConfigError(
                f"--method: the config has several methods; choose one of "
                f"{', '.join(config.methods)}"
            )
        return next(iter(config.methods))
    if method not in config.methods:
        raise ConfigError(f"--method: {method!r} is not in the config; allowed: "
                          f"{', '.join(config.methods)}")
    return method


def run_train(
    config_path: Path, overrides: Mapping[str, Any], method: str | None, params: Mapping[str, Any]
) -> int:
    from tqdm import tqdm

    from trainables.hyperparameters import declared_hyperparameters, resolve_trial
    from trainables.local_run import local_run

    config = load_config(config_path, overrides, single_run=True)
    method = _pick_method(config, method)
    checks.check_local_device(config, address=None)
    space = config.spaces()[method]
    given = {**space.defaults(declared_hyperparameters(method)), **params}
    try:
        hyperparameters = resolve_trial(method, given)
    except ValueError as exc:
        raise ConfigError(f"--param {exc}") from None
    tracking_uri = checks.check_tracking_uri(config.tracking.tracking_uri)
    checks.check_experiment(tracking_uri, config.experiment)
    dataset = checks.load_study_dataset(config)
    checks.check_batch_size("batch_size", hyperparameters.training.batch_size, dataset)
    checks.check_image_size("--param", method, hyperparameters.method, dataset)

    paths.prepare_sqlite_dir(tracking_uri)
    experiment_id = get_or_create_experiment(tracking_uri, config.experiment)
    settings = trial_settings(config, method, space, TrackingTarget(tracking_uri, experiment_id),
                              run_kind=schema.KIND_TRAIN)
    logger.info("training %s on %s: %s", method, dataset.name,
                ", ".join(f"{k}={v}" for k, v in hyperparameters.as_dict().items()))
    with tqdm(total=config.train.epochs, unit="epoch", desc=method) as bar:

        def on_epoch(result: Any) -> None:
            bar.set_postfix({k: f"{v:.4g}" for k, v in result.metrics.items() if k != "epoch"})
            bar.update(1)

        run_id, metrics, references = local_run(settings, dataset, hyperparameters,
                                                config_as_dict(config), on_epoch)
    logger.info("finished run %s: %s", run_id,
                ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    for metric in (schema.validation(schema.KNN_ACC), schema.KNN_ACC):
        if metric in metrics:
            logger.info("%s %.4f; the same encoder at its random initialisation: %.4f",
                        metric, metrics[metric], references[schema.RANDOM_INIT_PREFIX + metric])
    logger.info("chance (always the test split's most frequent class): %.4f",
                references[schema.CHANCE_ACC])
    logger.info("the encoder is the run's model %r (mlflow.pytorch.load_model)",
                schema.MODEL_NAME)
    for line in open_instructions(tracking_uri, experiment_id, run_id):
        logger.info(line)
    return 0
