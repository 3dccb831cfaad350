"""study-overhead: the wall time of a real study against the training time of its trials.

Runs ``sslstudy search`` (``study.search.run_search``, the platform's own code, unmodified)
on a generated config: SimCLR, ``--trials`` trials, ASHA and OptunaSearch as configured,
MLflow in SQLite, as many trials at once as the CPUs hold. Each trial's own time is its
MLflow run, from creation to end (or to its last logged epoch, for a trial that ASHA
stopped); the ideal wall time is their sum over the concurrent slots. The ratio
wall / ideal is the cost of everything around the trials, and of the search's shape: when
fewer trials are left than slots (ASHA's last full-budget trial running alone), slots
stand idle. The same trials back to back (each starting the moment a slot frees, in the
order Tune started them, nothing around them) keep that shape, so wall time over their
wall time is what the platform adds around its trials: Ray, the checks, the dataset, the
parent run and reference scores, trial processes, the gaps between trials. (Its work
inside a trial's run, the MLflow logging, is in the trials' durations; it is replayed and
reported apart.)

Where that cost goes is measured from the driver, without touching the product: wrappers
around ``ray.init``/``ray.shutdown``, ``Tuner.fit``, every ``MlflowClient`` and
``OptunaSearch`` method and Tune's experiment snapshots time the driver's share, and Tune
callbacks timestamp each trial's start and end, which against its MLflow run's start and
end give the trial's start-up and teardown outside its run. The MLflow logging inside a
trial's run (run creation, one batch per epoch, closing) happens in Ray workers, so it is
replayed here with the same calls and payloads against the same store.

    python -m benchmarks.study_overhead [--trials 8] [--epochs 3] [--images 1024]
"""

from __future__ import annotations

import functools
import heapq
import logging
import math
import statistics
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
import yaml
from mlflow.tracking import MlflowClient
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from benchmarks.common import available_cpus, conclude, parser, start
from tracking import schema
from tracking.runs import TrackingTarget, TrialRun


class Stopwatch:
    """Seconds spent in wrapped callables, by category; a call made from inside another
    wrapped call of the same category counts once (a subclass calling ``super()``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        #: When each wrapped callable (by qualified name) was first entered.
        self.first_call: dict[str, float] = {}
        self._depth = threading.local()

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()
        self.first_call.clear()

    def wrap(self, category: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            depth = getattr(self._depth, category, 0)
            setattr(self._depth, category, depth + 1)
            self.first_call.setdefault(fn.__qualname__, time.time())
            began = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                setattr(self._depth, category, depth)
                if depth == 0:
                    self.seconds[category] += time.perf_counter() - began
                    self.calls[category] += 1

        return timed

    def wrap_methods(self, category: str, cls: type) -> None:
        """Every public method that ``cls`` itself defines."""
        for name, member in list(vars(cls).items()):
            if callable(member) and (not name.startswith("_") or name == "__init__"):
                setattr(cls, name, self.wrap(category, member))


class TrialClock:
    """Driver timestamps of each Tune trial's start and end, from Tune's callbacks, and of
    the Tuner's start."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.ended: dict[str, float] = {}
        self.fit_started = math.nan

    def reset(self) -> None:
        self.started.clear()
        self.ended.clear()
        self.fit_started = math.nan

    def install(self) -> None:
        clock = self

        def on_trial_start(self, iteration, trials, trial, **info) -> None:
            clock.started.setdefault(trial.trial_id, time.time())

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            clock.ended.setdefault(trial.trial_id, time.time())

        def setup(self, *args: Any, **info: Any) -> None:
            clock.fit_started = time.time()

        # The base class's no-ops: every callback of the study that does not override them
        # reports here (duplicates keep the first timestamp).
        tune.Callback.on_trial_start = on_trial_start
        tune.Callback.on_trial_complete = on_trial_complete
        tune.Callback.setup = setup

    def timeline(self, runs: list[dict[str, Any]]) -> None:
        """Per trial, seconds from the Tuner's start: Tune start, run start, run end, Tune
        end."""
        print("  timeline from the Tuner's start (s): Tune start | run start | run end | "
              "Tune end")
        for run in sorted(runs, key=lambda r: r["start"]):
            marks = [self.started.get(run["trial"], math.nan), run["start"], run["end"],
                     self.ended.get(run["trial"], math.nan)]
            print(f"    {run['trial']}  " + " | ".join(
                f"{mark - self.fit_started:7.1f}" for mark in marks) + f"   {run['status']}")


def study_config(directory: Path, args) -> Path:
    config = {
        "name": "overhead",
        "seed": args.seed,
        "storage_path": str(directory / "ray"),
        "data": {"dataset": "shapes", "num_train": args.images, "num_test": 256},
        "train": {"backbone": args.backbone, "epochs": args.epochs, "device": args.device,
                  "linear_probe": "final"},
        "search": {"num_samples": args.trials, "grace_period": args.grace_period,
                   "n_startup_trials": 4, "max_concurrent": args.concurrent},
        "resources": {"cpus_per_worker": args.cpus_per_trial,
                      "gpus_per_worker": args.gpus_per_trial},
        "tracking": {"tracking_uri": f"sqlite:///{directory / 'mlflow.db'}",
                     "experiment": "overhead"},
        "methods": {"simclr": {"space": {"batch_size": {"choices": [64, 128]}}}},
    }
    path = directory / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def trial_runs(tracking_uri: str) -> list[dict[str, Any]]:
    """Each trial's MLflow run: trial id, start, end (its last logged epoch when the run
    was never closed) and status, in seconds since the epoch."""
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("overhead")
    runs = []
    for run in client.search_runs([experiment.experiment_id]):
        if schema.TAG_PARENT_RUN not in run.data.tags:
            continue
        end = run.info.end_time
        if end is None:
            history = client.get_metric_history(run.info.run_id, schema.EPOCH)
            end = max(m.timestamp for m in history) if history else run.info.start_time
        runs.append({"trial": run.data.tags[schema.TAG_TRIAL_ID],
                     "start": run.info.start_time / 1000, "end": end / 1000,
                     "epochs": int(run.data.tags.get(schema.TAG_BUDGET, 0)),
                     "status": run.data.tags.get(schema.TAG_STATUS, "?")})
    return runs


def back_to_back(durations: list[float], slots: int) -> float:
    """Wall time of trials of these durations on ``slots`` slots, each starting, in the
    given order, the moment a slot frees, with nothing before, between or after them."""
    free = [0.0] * slots
    for duration in durations:
        heapq.heappush(free, heapq.heappop(free) + duration)
    return max(free)


def replay_trial_logging(tracking_uri: str, runs: list[dict[str, Any]], repeats: int = 3
                         ) -> float:
    """Median seconds of one trial's MLflow calls (create with params, one result per
    epoch, finish) against the study's store, in a separate experiment."""
    client = MlflowClient(tracking_uri)
    experiment = client.create_experiment("overhead-replay")
    target = TrackingTarget(tracking_uri, experiment)
    epochs = round(statistics.mean(r["epochs"] for r in runs)) or 1
    metrics = {schema.EPOCH: 1.0, schema.LOSS: 4.0, schema.IMAGES_PER_SEC: 1000.0,
               schema.LR: 1e-3, schema.KNN_ACC: 0.3}
    params = {"temperature": 0.2, "batch_size": 64, "aug_strength": 0.5, "lr": 1e-3,
              "weight_decay": 1e-5, "proj_hidden_dim": 512, "proj_dim": 128}
    tags = {schema.TAG_METHOD: "simclr", schema.TAG_TRIAL_ID: "replay"}
    seconds = []
    for _ in range(repeats):
        began = time.perf_counter()
        run = TrialRun.create(target, name="replay", tags=tags, params=params)
        for epoch in range(1, epochs + 1):
            run.log_result(metrics, epoch, {})
        run.finish(schema.COMPLETED)
        seconds.append(time.perf_counter() - began)
    return statistics.median(seconds)


def instrument() -> tuple[Stopwatch, TrialClock]:
    """Install the driver-side wrappers and callbacks (once per process)."""
    watch, clock = Stopwatch(), TrialClock()
    ray.init = watch.wrap("ray.init", ray.init)
    ray.shutdown = watch.wrap("ray.shutdown", ray.shutdown)
    tune.Tuner.fit = watch.wrap("Tuner.fit", tune.Tuner.fit)
    watch.wrap_methods("MLflow", MlflowClient)
    from ray.tune.execution.tune_controller import TuneController

    TuneController.checkpoint = watch.wrap("Tune snapshots", TuneController.checkpoint)
    watch.wrap_methods("OptunaSearch", OptunaSearch)
    import study.tuner  # defines the study's OptunaSearch subclass

    for cls in OptunaSearch.__subclasses__():
        watch.wrap_methods("OptunaSearch", cls)
    del study.tuner
    clock.install()
    return watch, clock


def one_study(args, watch: Stopwatch, clock: TrialClock) -> float:
    """Run one study, print where its time went; returns wall time over the ideal."""
    from study.search import run_search

    watch.reset()
    clock.reset()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        config = study_config(directory, args)
        began = time.time()
        status = run_search(config, {}, address=None)
        wall = time.time() - began
        if status != 0:
            raise SystemExit("study-overhead: the study failed; see the log above")
        tracking_uri = f"sqlite:///{directory / 'mlflow.db'}"
        runs = trial_runs(tracking_uri)
        replayed = replay_trial_logging(tracking_uri, runs)

    slots = args.concurrent or max(1, int(available_cpus() // args.cpus_per_trial))
    if args.gpus_per_trial:
        slots = min(slots, int(1 // args.gpus_per_trial) if args.gpus_per_trial < 1 else 1)
    # More slots than trials (8 trials on 16 CPUs): the spare slots never held a trial.
    slots = min(slots, len(runs))
    in_runs = sum(r["end"] - r["start"] for r in runs)
    ideal = in_runs / slots
    fit_seconds = watch.seconds["Tuner.fit"]
    startup = [r["start"] - clock.started[r["trial"]] for r in runs if r["trial"] in clock.started]
    teardown = [clock.ended[r["trial"]] - r["end"] for r in runs if r["trial"] in clock.ended]
    stopped = sum(r["status"] == schema.STOPPED_EARLY for r in runs)
    print(f"{len(runs)} SimCLR trials ({stopped} stopped early by ASHA), {args.backbone}, "
          f"{args.images} images, up to {args.epochs} epochs, {slots} at a time")
    print(f"  study wall time                                    {wall:8.1f} s")
    print(f"  trials' MLflow runs: sum {in_runs:.1f} s over {slots} slots = ideal "
          f"{ideal:8.1f} s")
    print("where the difference goes:")
    print(f"  outside Tuner.fit (checks, dataset, Ray start/stop, study run) "
          f"{wall - fit_seconds:6.1f} s, of which")
    print(f"    Ray start-up (ray.init)                          "
          f"{watch.seconds['ray.init']:8.1f} s")
    print(f"    Ray shutdown                                     "
          f"{watch.seconds['ray.shutdown']:8.1f} s")
    print(f"  inside Tuner.fit                                   {fit_seconds:8.1f} s "
          f"({fit_seconds / ideal:.2f}x the ideal)")
    first_suggestion = min((t for name, t in watch.first_call.items()
                            if name.endswith(".suggest")), default=math.nan)
    print(f"    Tuner start to the first suggestion (OptunaSearch set-up)  "
          f"{first_suggestion - clock.fit_started:6.1f} s")
    print(f"    first suggestion to the first trial start (worker process, imports) "
          f"{min(clock.started.values(), default=math.nan) - first_suggestion:6.1f} s")
    if startup:
        print(f"    trial start-up before its run (imports, data, MLflow run), per trial "
              f"{statistics.median(startup):6.2f} s median, {sum(startup):.1f} s in all")
    if teardown:
        print(f"    trial end after its run (report, stop), per trial "
              f"{statistics.median(teardown):6.2f} s median, {sum(teardown):.1f} s in all")
    print("  driver time (runs beside the trials; it delays them only when it blocks Tune):")
    for category in ("OptunaSearch", "MLflow", "Tune snapshots"):
        print(f"    {category:<16} {watch.seconds[category]:8.2f} s in "
              f"{watch.calls[category]} calls")
    print(f"  MLflow logging inside one trial's run (replayed)   {replayed:8.2f} s "
          f"({len(runs) * replayed / slots:.1f} s of the ideal wall time)")
    # Once fewer trials are left than slots, slots stand idle until the last trial ends:
    # the search's tail, set by how many trials it has and which ones ASHA lets run on,
    # not by anything around the trials. With k slots, the last k trials to end held them.
    ends = sorted(clock.ended.values())
    tail = sum(ends[-1] - end for end in ends[-slots:-1])
    print(f"  slots idle while the last trials finish (the search's tail)  {tail:6.1f} s "
          f"({tail / slots:.1f} s of the wall time per slot)")
    in_order = [r["end"] - r["start"] for r in sorted(runs, key=lambda r: r["start"])]
    shape = back_to_back(in_order, slots)
    print(f"  the same trials back to back on {slots} slots, in their start order (the "
          f"search's shape, tail included, nothing around them)  {shape:6.1f} s")
    clock.timeline(runs)
    print(f"  ratio {wall / ideal:.2f}x ({(wall - tail / slots) / ideal:.2f}x without the "
          f"search's tail; {wall / shape:.2f}x against the same trials back to back, "
          f"{fit_seconds / shape:.2f}x inside Tuner.fit)", flush=True)
    return wall / ideal


def main() -> None:
    cli = parser(__doc__.splitlines()[0], repeats=2)
    cli.add_argument("--trials", type=int, default=8, help="default: 8")
    cli.add_argument("--epochs", type=int, default=3, help="default: 3")
    cli.add_argument("--images", type=int, default=1024, help="default: 1024")
    cli.add_argument("--backbone", default="small_cnn", help="default: small_cnn")
    cli.add_argument("--grace-period", type=int, default=1, help="ASHA's (default 1)")
    cli.add_argument("--cpus-per-trial", type=float, default=1.0, help="default: 1")
    cli.add_argument("--gpus-per-trial", type=float, default=0.0, help="default: 0")
    cli.add_argument("--concurrent", type=int, default=None,
                     help="trials at once (default: as many as the CPUs and GPUs hold)")
    args = cli.parse_args()
    start(args, "study-overhead")
    if args.device == "cuda" and args.gpus_per_trial == 0:
        args.gpus_per_trial = 1.0
    logging.basicConfig(level=logging.WARNING)
    watch, clock = instrument()
    ratios = []
    for r in range(args.repeats):
        print(f"-- study {r + 1} of {args.repeats}")
        ratios.append(one_study(args, watch, clock))
    conclude("study-overhead", statistics.median(ratios), "study wall time over its trials' "
             f"run time per slot ({args.trials} trials, median of {len(ratios)} studies)")


if __name__ == "__main__":
    main()
