"""One configuration in this process, recorded as one MLflow run: ``sslstudy train``,
the way to debug a config before launching a study. No Ray, no Optuna."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import torch

from tracking import schema
from trainables.data import ImageDataset
from trainables.hyperparameters import Hyperparameters
from trainables.loop import EpochResult
from trainables.pretrain import reference_scores
from trainables.recording import TrialSettings, create_run, pretrain_recorded, record_epoch

#: The trial id of a run that no search made.
LOCAL_TRIAL_ID = "local"


def local_run(
    settings: TrialSettings,
    dataset: ImageDataset,
    hyperparameters: Hyperparameters,
    resolved_config: Mapping[str, Any],
    on_epoch: Callable[[EpochResult], None],
) -> tuple[str, dict[str, float], dict[str, float]]:
    """Train ``hyperparameters`` (already resolved) to the full budget; returns the run id,
    the last metrics and the reference scores (random initialisation, chance), all logged
    with the config and the final encoder. Ctrl-C closes the run as failed, with that
    reason."""
    torch.set_num_threads(settings.threads)
    settings = replace(settings, run_kind=schema.KIND_TRAIN)
    references = reference_scores(settings.method, settings.backbone, dataset,
                                  hyperparameters, settings.loop)
    name = f"{settings.method}-train-{time.strftime('%Y%m%d-%H%M%S')}"
    run = create_run(settings, dataset, hyperparameters, LOCAL_TRIAL_ID, name=name)
    run.log_dict(resolved_config, schema.RESOLVED_CONFIG)
    run.log_metrics(references)

    def report(result: EpochResult) -> None:
        record_epoch(run, result, dataset, settings)
        on_epoch(result)

    try:
        metrics = pretrain_recorded(run, settings, dataset, hyperparameters, report, None)
    except KeyboardInterrupt:
        run.finish(schema.FAILED, reason="interrupted by the user")
        raise
    return run.run_id, metrics, references
