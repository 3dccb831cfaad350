"""The search machinery: one Ray Tune Tuner running every method's search (or one search
across methods), driven by an Optuna sampler (``search.sampler``) through
``OptunaSearch`` and early-stopped by ASHA, every trial recorded in MLflow.

Optuna pruners do not act through ``OptunaSearch``; early stopping is therefore the
scheduler's job, and the searcher tells Optuna which trials ASHA stopped (PRUNED, with
their learning curves as intermediate values) and which reached the full budget. All
trials of a study share one seed (common random numbers): they start from the same
initialisation and see the same data order, so differences between trials come from the
hyperparameters, which is what a sensitivity analysis needs.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import ray
from mlflow.exceptions import MlflowException
from ray import tune
from ray.tune import ExperimentAnalysis
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from search_spaces import METHOD_PARAM, CrossMethodSpace, SearchSpace
from search_spaces.distributions import DefineByRun, to_optuna
from study.cluster import trial_resources
from study.config import SearchConfig, StudyConfig, config_as_dict
from study.errors import StudyInterrupted
from study.logs import configure_logging, quiet_optuna
from study.per_method import PerMethodScheduler, PerMethodSearch
from study.settings import (
    optuna_storage_url,
    study_root,
    trial_settings,
    with_absolute_storage,
)
from tracking import schema
from tracking.runs import (
    TrackingTarget,
    close_orphaned_runs,
    close_trial_run,
    find_trial_run,
    trial_failure_reason,
)
from trainables.trainable import DatasetHandle, cross_method_trial, method_trial

logger = logging.getLogger(__name__)
#: The Tuner (and Optuna study suffix) of a cross-method search.
CROSS_METHOD = "cross_method"
#: The Tuner of every method's own search, side by side.
METHODS_TUNER = "methods"


def _format_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class FailureLines(tune.Callback):
    """One line for a failed trial, in place of Tune's traceback (off in every fit, see
    ``TUNE_SETTINGS``): its error's message, whether it is retried, and the file that
    keeps its traceback. A subclass names the trial as its progress lines do."""

    def label(self, trial: Any) -> str:
        raise NotImplementedError

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info) -> None:
        self._log(trial, "")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info) -> None:
        self._log(trial, "; retrying from its last checkpoint "
                         f"(failure {trial.run_metadata.num_failures})")

    def _log(self, trial: Any, retry: str) -> None:
        logger.warning("%s failed: %s%s (traceback: %s)", self.label(trial),
                       _error_text(trial), retry, _error_file(trial))


class TrialProgress(FailureLines):
    """One log line per reported result: method, trial, budget, key hyperparameters and
    the latest metric, so a user sees a study converge (or not) while it runs."""

    def __init__(self, cross: CrossMethodSpace, metric: str, max_epochs: int) -> None:
        # Attribute names as saved in the Tuners of earlier studies, which --resume loads.
        self.spaces, self.metric, self.max_epochs, self.cross = (
            cross.spaces, metric, max_epochs, cross)

    def _describe(self, config: Mapping[str, Any]) -> tuple[str, SearchSpace, dict[str, Any]]:
        method, own = self.cross.split(config)
        space = self.spaces[method]
        return method, space, space.decode(own)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info):
        method, space, params = self._describe(trial.config)
        shown = " ".join(f"{k}={_format_value(params[k])}" for k in space.params)
        logger.info(
            "%s %s epoch %d/%d  %s  loss=%.4f %s=%.4f",
            method,
            trial.trial_id,
            int(result.get("epoch", 0)),
            self.max_epochs,
            shown,
            result.get("loss", math.nan),
            self.metric,
            result.get(self.metric, math.nan),
        )

    def label(self, trial: Any) -> str:
        return f"{self._describe(trial.config)[0]} {trial.trial_id}"


def _error_text(trial: Any) -> str:
    """The last line of the trial's latest error: Ray wraps the trial's exception, and
    its last line carries the original message. Read from the trial's own folder, where
    Tune writes it before telling the callbacks (``get_error`` reads the copy in the
    study's storage, which Tune has not synced yet then)."""
    local = trial.error_file
    text = Path(local).read_text() if local and Path(local).is_file() else None
    if text is None:
        error = trial.get_error()
        text = str(error) if error is not None else "unknown error"
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text


def _error_file(trial: Any) -> str:
    """Where the study keeps the trial's traceback."""
    return f"{trial.path}/{trial.run_metadata.error_filename or 'error.txt'}"


class LinkedOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna each trial's budget, and links each Optuna trial to
    its Tune trial and MLflow run.

    Ray's OptunaSearch reports intermediate values at Tune's iteration count, and tells
    Optuna that every trial that ended without an error is COMPLETE with its last value:
    a trial ASHA stopped after 2 epochs then counts as a finished 2-epoch result, which
    TPE and Optuna's importance compare with 8-epoch ones. Here instead:

    - every evaluation reaches the Optuna trial as an intermediate value at its epoch
      (``trial.report(value, epoch)``), the last one too, which Tune hands only to
      :meth:`on_trial_complete` when the scheduler stops the trial there;
    - a trial that reached the full budget (``max_budget`` epochs) ends COMPLETE with its
      full-budget value;
    - a trial that ended before (ASHA stopped it) ends PRUNED, which Optuna records with
      its last intermediate value; TPE ranks pruned trials after complete ones, by how
      far they got and their value there, as it does for trials stopped by Optuna's own
      pruners;
    - a failed trial (or one whose metric is not finite) ends FAIL, with the reason its
      process recorded in MLflow (user attribute ``failure_reason``).

    Every Optuna trial carries user attributes that link it to the rest of the study:
    ``tune_trial_id`` (the ``trial_id`` tag of its MLflow run), ``mlflow_run_id`` once the
    run exists, and ``budget``, the last epoch it reported. The study carries ``config``
    (the resolved config), ``mlflow_experiment_id`` and ``mlflow_parent_run_id``, which
    optuna-dashboard shows beside the trials.
    """

    def __init__(
        self, *args: Any, target: TrackingTarget, max_budget: int,
        study_attrs: Mapping[str, Any], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._target = target
        self._max_budget = max_budget
        for key, value in {**study_attrs, "mlflow_experiment_id": target.experiment_id,
                           "mlflow_parent_run_id": target.parent_run_id}.items():
            self._ot_study.set_user_attr(key, value)
        #: Tune trial ids whose Optuna trial has its MLflow run id.
        self._linked: set[str] = set()
        #: Tune trial id -> the last epoch reported to Optuna (a resumed trial trains
        #: again an epoch it may already have reported).
        self._reported: dict[str, int] = {}

    def suggest(self, trial_id: str) -> dict | None:
        suggestion = super().suggest(trial_id)
        if trial_id in self._ot_trials:
            self._ot_trials[trial_id].set_user_attr("tune_trial_id", trial_id)
        return suggestion

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self._completed_trials:
            self._report(trial_id, result)

    def _report(self, trial_id: str, result: dict) -> None:
        value, epoch = result.get(self.metric), result.get(schema.EPOCH)
        if value is None or epoch is None or trial_id not in self._ot_trials:
            return
        if int(epoch) > self._reported.get(trial_id, 0):
            trial = self._ot_trials[trial_id]
            try:
                trial.report(float(value), int(epoch))
                trial.set_user_attr("budget", int(epoch))
                self._link(trial_id)
            except (RuntimeError, ValueError) as exc:  # a trial a resumed study ended
                logger.warning("Optuna trial of %s: %s", trial_id, exc)
            self._reported[trial_id] = int(epoch)

    def _link(self, trial_id: str) -> None:
        """Record the trial's MLflow run id on its Optuna trial, once the run exists (its
        first report comes after the run was created)."""
        if trial_id in self._linked:
            return
        try:
            run_id = find_trial_run(self._target, trial_id)
        except MlflowException as exc:
            # Only a link for the dashboard: the search goes on, the next report retries.
            logger.warning("MLflow run of trial %s not found yet: %s", trial_id, exc)
            return
        if run_id is not None:
            self._ot_trials[trial_id].set_user_attr("mlflow_run_id", run_id)
            self._linked.add(trial_id)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        trial = self._ot_trials[trial_id]
        value = (result or {}).get(self.metric)
        epoch = (result or {}).get(schema.EPOCH)
        if result:
            self._report(trial_id, result)
        state, told = optuna.trial.TrialState.PRUNED, None
        if error or (value is not None and not math.isfinite(value)):
            state = optuna.trial.TrialState.FAIL
            reason = self._reason(trial_id) if error else f"{self.metric} is {value}"
            trial.set_user_attr("failure_reason", reason)
            self._link(trial_id)
        elif value is not None and epoch is not None and int(epoch) >= self._max_budget:
            state, told = optuna.trial.TrialState.COMPLETE, float(value)
        try:
            self._ot_study.tell(trial, told, state=state)
        except (RuntimeError, ValueError) as exc:  # a trial a resumed study already ended
            logger.warning("Optuna trial of %s: %s", trial_id, exc)
        self._completed_trials.add(trial_id)

    def _reason(self, trial_id: str) -> str:
        return (trial_failure_reason(self._target, trial_id)
                or "the trial's process died; see the Ray logs")


class KeepSchedulerState(tune.Callback):
    """Saves the scheduler's state (ASHA's rungs: which results each milestone recorded)
    with the experiment, so that a resumed study stops trials against the results its
    trials had reached before, not against an empty rung.

    Ray saves an experiment's trials, searcher and callbacks, not its scheduler: on
    ``--resume`` the scheduler comes back as the Tuner was built. It comes back together
    with this callback, from one pickle of the Tuner, so the two are still one object
    when Ray hands the callback its saved state (through Ray Client too: see
    :func:`fit_tuner`).
    """

    def __init__(self, scheduler: TrialScheduler) -> None:
        self.scheduler = scheduler

    def get_state(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler.__dict__}  # Ray pickles it at once

    def set_state(self, state: dict[str, Any]) -> None:
        self.scheduler.__dict__.update(state["scheduler"])


class CloseTrialRuns(tune.Callback):
    """Give every trial's MLflow run its final status, including trials that ASHA stopped
    (their function never returns) and trials whose worker died."""

    def __init__(self, target: TrackingTarget, max_epochs: int) -> None:
        self.target, self.max_epochs = target, max_epochs

    def _budget(self, trial: Any) -> int | None:
        epoch = (trial.last_result or {}).get("epoch")
        return None if epoch is None else int(epoch)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info) -> None:
        close_trial_run(self.target, trial.trial_id, self._budget(trial), self.max_epochs, None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info) -> None:
        close_trial_run(
            self.target, trial.trial_id, self._budget(trial), self.max_epochs, _error_text(trial)
        )


@dataclass(frozen=True)
class MethodOutcome:
    method: str
    trials: int
    completed: int
    stopped_early: int
    failed: int
    best_value: float | None
    best_params: Mapping[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "trials": self.trials,
            "completed": self.completed,
            "stopped_early": self.stopped_early,
            "failed": self.failed,
            "best_value": self.best_value,
            "best_params": dict(self.best_params),
        }


def make_sampler(search: SearchConfig, seed: int) -> optuna.samplers.BaseSampler:
    """``search.sampler``, seeded. TPE samples where scores were high, which finds good
    settings but leaves the rest of the space thin: the sensitivity analysis then finds a
    real effect less often (measured by ``benchmarks/sampler_power.py``). QMC's scrambled
    Sobol points fill the space evenly; its first trial is random (Optuna learns the
    space from it), the sequence starts with the second."""
    with warnings.catch_warnings():
        # Multivariate TPE and QMC are flagged experimental. Multivariate TPE is the right
        # model for coupled hyperparameters such as temperature and batch size.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if search.sampler == "qmc":
            return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed)
        if search.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(
            multivariate=True, seed=seed, n_startup_trials=search.n_startup_trials
        )


def _summarise(
    results: list[tune.Result],
    method: str,
    decode: Callable[[Mapping[str, Any]], dict[str, Any]],
    config: StudyConfig,
) -> MethodOutcome:
    """Counts and the best configuration of one method's trials, among those that
    completed the full budget (a trial ASHA stopped reports a value after fewer epochs,
    not comparable with theirs); ``decode`` maps a trial's config to the method's
    hyperparameters."""
    completed = stopped = failed = 0
    best_value, best_params = None, {}
    sign = 1.0 if config.search.mode == "max" else -1.0
    for result in results:
        metrics = result.metrics or {}
        if result.error is not None:
            failed += 1
            continue
        if int(metrics.get(schema.EPOCH, 0)) < config.train.epochs:
            stopped += 1
            continue
        completed += 1
        value = metrics.get(config.objective)
        if value is not None and (best_value is None or sign * value > sign * best_value):
            best_value, best_params = float(value), decode(result.config)
    return MethodOutcome(method, len(results), completed, stopped, failed, best_value, best_params)


def _orphaned_optuna_trials(config: StudyConfig, study_name: str) -> int:
    """Mark Optuna trials still RUNNING after the Tuner finished as failed.

    They can only come from a driver that died between asking Optuna for a suggestion and
    saving the searcher's state; no Tune trial will ever report them.
    """
    study = optuna.load_study(
        study_name=f"{config.name}-{study_name}", storage=optuna_storage_url(config)
    )
    orphans = [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    for trial in orphans:
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    return len(orphans)


def run_methods(
    config: StudyConfig,
    spaces: Mapping[str, SearchSpace],
    data: DatasetHandle,
    target: TrackingTarget,
    max_concurrent: int,
    resume: bool = False,
) -> list[MethodOutcome]:
    """The study's search, in one Tuner: every method's own search side by side
    (``METHODS_TUNER``; each method its Optuna study ``<study>-<method>`` and its ASHA
    rungs, ``search.num_samples`` trials each), or with ``search.cross_method`` one search
    over every method (``CROSS_METHOD``, one Optuna study ``<study>-cross_method``): the
    method is a categorical choice with conditional parameters (Optuna's define-by-run
    space), so TPE spends trials on the methods that score well, and
    ``search.num_samples`` counts the trials of the whole search. Either way each trial
    is an ordinary trial of its method (same MLflow run, tags and checkpoints), so the
    analysis needs no special case."""
    config = with_absolute_storage(config)
    cross = CrossMethodSpace(spaces)
    settings = {m: trial_settings(config, m, space, target) for m, space in spaces.items()}
    function = cross_method_trial if config.search.cross_method else method_trial
    trainable = tune.with_resources(
        tune.with_parameters(function, settings_by_method=settings, space=cross, data=data),
        trial_resources(config.resources),
    )
    progress = TrialProgress(cross, config.objective, config.train.epochs)
    if config.search.cross_method:
        name, orphan_scopes = CROSS_METHOD, {CROSS_METHOD: list(spaces)}
        trials = config.search.num_samples
        searching = f"{METHOD_PARAM} ({', '.join(spaces)}) and each method's own parameters"

        def search_parts() -> tuple[Searcher, TrialScheduler]:
            return _optuna_search(config, CROSS_METHOD, DefineByRun(cross), target), _asha(config)
    else:
        name, orphan_scopes = METHODS_TUNER, {m: [m] for m in spaces}
        trials = config.search.num_samples * len(spaces)
        searching = "; ".join(f"{m}: {', '.join(s.params)}" for m, s in spaces.items())

        def search_parts() -> tuple[Searcher, TrialScheduler]:
            searchers = {m: _optuna_search(config, m, to_optuna(space), target)
                         for m, space in spaces.items()}
            return (PerMethodSearch(searchers, config.search.num_samples, config.objective,
                                    config.search.mode),
                    PerMethodScheduler(lambda: _asha(config), list(spaces)))

    def new_tuner() -> tune.Tuner:
        searcher, scheduler = search_parts()
        tuner = _new_tuner(config, name, searcher, scheduler, trials, trainable, progress,
                           target, max_concurrent)
        logger.info("%s: %d trials, at most %d at a time, chosen by %s, searching %s", name,
                    trials, max_concurrent, config.search.sampler, searching)
        return tuner

    results = fit_tuner(config, name, trainable, new_tuner, resume, trials)
    outcomes = []
    for method, space in spaces.items():
        mine = [r for r in results if r.config.get(METHOD_PARAM) == method]
        outcome = _summarise(mine, method, lambda c, s=space: s.decode(cross.split(c)[1]),
                             config)
        _log_outcome(config, outcome)
        outcomes.append(outcome)
    for study_name, methods in orphan_scopes.items():
        _close_orphans(config, study_name, methods, target)
    return outcomes


def legacy_tuners(config: StudyConfig, spaces: Mapping[str, SearchSpace]) -> list[str]:
    """The methods of a study started before every method's search shared one Tuner: it
    holds one Tuner per method, which a resumed study cannot continue (a cross-method
    search always had one Tuner, which resumes)."""
    root = study_root(config)
    if config.search.cross_method or tune.Tuner.can_restore(str(root / METHODS_TUNER)):
        return []
    return [m for m in spaces if tune.Tuner.can_restore(str(root / m))]


#: Tune's settings for a study (the user's environment wins): keeping only the last
#: checkpoints forces an experiment snapshot whenever one is deleted, which Tune warns
#: about on every small trial, as expected here; and the experiment state (trials and
#: searcher) is saved often, so that a study whose driver dies resumes close to where
#: it was; and Tune's older output engine, which at ``verbose=0`` prints nothing (its
#: newer one prints a table of the searcher's and scheduler's class names, and a
#: TensorBoard command for a temporary folder of the Ray session, even then): the
#: study's own log lines say what runs and where its results are; and no traceback of
#: every failed trial: :class:`FailureLines` gives its message and where the traceback
#: is kept.
TUNE_SETTINGS = (("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0"),
                 ("TUNE_GLOBAL_CHECKPOINT_S", "1"),
                 ("RAY_AIR_NEW_OUTPUT", "0"),
                 ("TUNE_PRINT_ALL_TRIAL_ERRORS", "0"))


def fit_tuner(
    config: StudyConfig,
    name: str,
    trainable: Any,
    new_tuner: Callable[[], tune.Tuner],
    resume: bool,
    trials: int,
) -> list[tune.Result]:
    """Run the Tuner ``name`` (of ``trials`` trials) from ``new_tuner``, or resume it from
    what it saved.

    Ctrl-C stops it the way Tune does (the first stops the trials and saves them and the
    searcher; a second one skips the saving): when trials were left unfinished this
    raises :class:`StudyInterrupted`, so that nothing after the fit treats them as done
    (the summary would count them as stopped by ASHA; closing orphans would fail their
    Optuna trials, which a resumed search could then never tell).

    Through Ray Client (``--address ray://``) the whole fit runs as one task on the node
    of the client server. Left to itself, Tune would build the Tuner there from its
    parts, each shipped on its own: :class:`KeepSchedulerState` then held a copy of the
    scheduler the trials ran against, so a resumed study lost ASHA's rungs (measured:
    a trial that the rungs stop at its first report trained to the full budget), and
    this process's logging (every trial's progress) and Tune settings stayed here. Ctrl-C
    here cancels the task: Ray raises the cancellation inside Tune's loop, which stops
    the trials as on an error; the experiment state it resumes from is then the one Tune
    saved last (``TUNE_GLOBAL_CHECKPOINT_S``: usually about a second old).

    The task is never retried: a retry would start the fit anew beside the trials of
    the first attempt; the study fails, and ``--resume`` continues it."""
    experiment_path = study_root(config) / name
    if not ray.util.client.ray.is_connected():
        for variable, value in TUNE_SETTINGS:
            os.environ.setdefault(variable, value)
        results, finished = _fit_here(experiment_path, trainable, new_tuner, resume)
    else:
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(),
                                              soft=False)
        settings = {variable: os.environ.get(variable, value)
                    for variable, value in TUNE_SETTINGS}
        task = ray.remote(num_cpus=0, max_retries=0)(_fit_in_task).options(
            scheduling_strategy=here, runtime_env={"env_vars": settings})
        level = logging.getLogger().getEffectiveLevel()
        fit = task.remote(level, experiment_path, trainable, new_tuner, resume)
        try:
            results, finished = ray.get(fit)
        except KeyboardInterrupt:
            logger.warning("%s: stopping the trials (Ctrl-C again to leave at once)", name)
            ray.cancel(fit)
            try:
                results, finished = ray.get(fit)
            except ray.exceptions.RayError as cancelled:
                # The cancellation, as Ray raised it inside Tune's loop: bare, or wrapped
                # by Tune in the error of the trial call it interrupted.
                logger.debug("%s: the fit ended with %r", name, cancelled)
                raise StudyInterrupted(str(experiment_path), None, trials) from cancelled
    if finished < trials:
        raise StudyInterrupted(str(experiment_path), trials - finished, trials)
    return results


def _fit_in_task(level: int, *fit: Any) -> tuple[list[tune.Result], int]:
    """:func:`_fit_here` in a Ray task, logging as the command does."""
    configure_logging(level)
    return _fit_here(*fit)


def _fit_here(
    experiment_path: Path, trainable: Any, new_tuner: Callable[[], tune.Tuner], resume: bool,
) -> tuple[list[tune.Result], int]:
    """The fit's results and how many of its trials finished (completed, stopped by ASHA,
    or failed for good), as Tune saved them last: on Ctrl-C it saves the trials it is
    about to stop as running, which is what a resumed fit continues. Not the trials in
    memory: Tune then marks the stopped trials TERMINATED (measured: 3 of 3, two of them
    mid-training); nor their last results' ``done``: a restored trial whose function
    returned can come back with its saved result not done.

    Tune leaves its Ctrl-C (and SIGUSR1) handler installed after a fit that was not
    interrupted; the ones before it are put back, so that Ctrl-C after the fit stops the
    command instead of being swallowed."""
    if resume and tune.Tuner.can_restore(str(experiment_path)):
        logger.info("%s: resuming from %s", experiment_path.name, experiment_path)
        tuner = tune.Tuner.restore(
            str(experiment_path), trainable=trainable, resume_unfinished=True,
            resume_errored=False, restart_errored=False,
        )
    else:
        tuner = new_tuner()
    main_thread = threading.current_thread() is threading.main_thread()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGUSR1)
                } if main_thread else {}
    try:
        grid = tuner.fit()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    saved = ExperimentAnalysis(grid.experiment_path).trials
    return list(grid), sum(t.status in (Trial.TERMINATED, Trial.ERROR) for t in saved)


def _close_orphans(
    config: StudyConfig, name: str, methods: list[str], target: TrackingTarget
) -> None:
    orphans = _orphaned_optuna_trials(config, name)
    orphan_runs = sum(close_orphaned_runs(target, method, schema.KIND_SEARCH)
                      for method in methods)
    if orphans or orphan_runs:
        logger.info(
            "%s: closed %d Optuna trial(s) and %d MLflow run(s) that a dead driver started "
            "without recording them", name, orphans, orphan_runs,
        )


def _log_outcome(config: StudyConfig, outcome: MethodOutcome) -> None:
    logger.info(
        "%s: %d completed, %d stopped early by ASHA, %d failed; best %s at full budget = %s",
        outcome.method,
        outcome.completed,
        outcome.stopped_early,
        outcome.failed,
        config.objective,
        "n/a" if outcome.best_value is None else f"{outcome.best_value:.4f}",
    )


def failure_config(config: StudyConfig) -> tune.FailureConfig:
    """Tune retries every failed trial, single- or multi-worker, from its last checkpoint,
    up to ``search.max_failures`` times; a failure never stops the study. For a
    data-parallel trial the retry covers every process: a Train worker, Train's
    controller, or the trial process that coordinates them (the new attempt reopens the
    trial's MLflow run and Train resumes its run, of the same name, from its checkpoint).
    Train retries none of these itself, so one budget counts every failure of a trial;
    it only waits out workers that cannot start yet and preempted nodes."""
    return tune.FailureConfig(max_failures=config.search.max_failures, fail_fast=False)


def _optuna_search(
    config: StudyConfig, name: str, optuna_space: Any, target: TrackingTarget
) -> LinkedOptunaSearch:
    """The study's sampler over ``optuna_space``, in the Optuna study ``<study>-<name>``."""
    quiet_optuna()
    return LinkedOptunaSearch(
        space=optuna_space,
        metric=config.objective,
        mode=config.search.mode,
        sampler=make_sampler(config.search, config.seed),
        study_name=f"{config.name}-{name}",
        storage=optuna.storages.RDBStorage(optuna_storage_url(config)),
        target=target,
        max_budget=config.train.epochs,
        study_attrs={"config": config_as_dict(config), "metric": config.objective},
    )


def _asha(config: StudyConfig) -> ASHAScheduler:
    return ASHAScheduler(
        time_attr="epoch",
        max_t=config.train.epochs,
        grace_period=config.search.grace_period,
        reduction_factor=config.search.reduction_factor,
    )


def _new_tuner(
    config: StudyConfig,
    name: str,
    searcher: Searcher,
    scheduler: TrialScheduler,
    trials: int,
    trainable: Any,
    progress: TrialProgress,
    target: TrackingTarget,
    max_concurrent: int,
) -> tune.Tuner:
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            metric=config.objective,
            mode=config.search.mode,
            num_samples=trials,
            max_concurrent_trials=max_concurrent,
            # A finished trial's process runs the next trial, of any method: no process
            # start, no re-import of torch per trial (every trial seeds and sets up all
            # it uses).
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(study_root(config)),
            failure_config=failure_config(config),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            callbacks=[progress, CloseTrialRuns(target, config.train.epochs),
                       KeepSchedulerState(scheduler)],
            verbose=0,
        ),
    )
