"""One configuration in this process, recorded as one MLflow run: ``sslstudy train``,
the way to debug a config before launching a study. No Ray, no Optuna."""

from __future__ import annotations

from collections.abc import Callable

import torch

from tracking import schema
from trainables.data import ImageDataset
from trainables.hyperparameters import Hyperparameters
from trainables.loop import EpochResult
from trainables.recording import TrialSettings, create_run, pretrain_recorded

#: The trial id of a run that no search made.
LOCAL_TRIAL_ID = "local"


def local_run(
    settings: TrialSettings,
    dataset: ImageDataset,
    hyperparameters: Hyperparameters,
    on_epoch: Callable[[EpochResult], None],
) -> tuple[str, dict[str, float]]:
    """Train ``hyperparameters`` (already resolved) to the full budget; returns the run id
    and the last metrics. Ctrl-C closes the run as failed, with that reason."""
    torch.set_num_threads(settings.threads)
    run = create_run(settings, dataset, hyperparameters, LOCAL_TRIAL_ID,
                     name=f"{settings.method}-train")

    def report(result: EpochResult) -> None:
        run.log_result(result.metrics, result.epoch, result.artifacts)
        on_epoch(result)

    try:
        return run.run_id, pretrain_recorded(run, settings, dataset, hyperparameters, report,
                                             None)
    except KeyboardInterrupt:
        run.finish(schema.FAILED, reason="interrupted by the user")
        raise
