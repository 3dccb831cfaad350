"""The Ray side of a study: the session, what a trial asks of the cluster and whether
the cluster can give it, and the shared-storage probe on multi-node clusters."""

from __future__ import annotations

import logging
import math
import os
import socket
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from study.config import ConfigError, ResourcesConfig

logger = logging.getLogger("sslstudy")

#: What the Tune function of a multi-worker trial holds: it only coordinates (its
#: TorchTrainer schedules the workers, and Train's controller asks for no CPU), so it
#: asks for a little memory and no CPU, which leaves every CPU to the workers. Ray
#: refuses an empty request.
COORDINATOR_MEMORY_BYTES = 64 * 1024**2


@dataclass(frozen=True)
class NodeResources:
    cpus: float
    gpus: float


def trial_resources(resources: ResourcesConfig) -> dict[str, float]:
    """The resource request of one trial's Tune function (``tune.with_resources``)."""
    if resources.workers_per_trial > 1:
        return {"cpu": 0, "memory": COORDINATOR_MEMORY_BYTES}
    return {"cpu": resources.cpus_per_worker, "gpu": resources.gpus_per_worker}


def default_max_concurrent(resources: ResourcesConfig, cluster: Mapping[str, float]) -> int:
    """As many trials as the cluster can hold at once: when a trial needs GPUs, GPUs are the
    limit, so that trials never sit holding CPUs while they wait for a GPU."""
    fits = math.floor(cluster.get("CPU", 1) / resources.cpus_per_trial)
    if resources.gpus_per_trial > 0:
        fits = min(fits, math.floor(cluster.get("GPU", 0) / resources.gpus_per_trial))
    return max(1, fits)


def local_machine() -> list[NodeResources]:
    """The CPUs and GPUs a local Ray started here would have."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    import torch

    return [NodeResources(float(cpus or 1), float(torch.cuda.device_count()))]


def cluster_nodes() -> list[NodeResources]:
    """The alive nodes of the connected Ray cluster."""
    import ray

    return [
        NodeResources(node["Resources"].get("CPU", 0.0), node["Resources"].get("GPU", 0.0))
        for node in ray.nodes() if node.get("Alive")
    ]


def unmet_need(resources: ResourcesConfig, nodes: list[NodeResources]) -> str | None:
    """Why one trial cannot be placed on these nodes, or None when it can: every worker
    needs its CPUs and GPUs on one node, and the trial needs all its workers at once."""
    per_worker_fits = [
        math.floor(min(
            node.cpus / resources.cpus_per_worker,
            node.gpus / resources.gpus_per_worker if resources.gpus_per_worker else math.inf,
        ) + 1e-9)
        for node in nodes
    ]
    if not any(per_worker_fits):
        gpus = f" and {resources.gpus_per_worker:g} GPU" if resources.gpus_per_worker else ""
        largest = max(nodes, key=lambda n: (n.cpus, n.gpus), default=NodeResources(0, 0))
        return (f"a worker needs {resources.cpus_per_worker:g} CPU{gpus} on one node; the "
                f"largest node has {largest.cpus:g} CPU and {largest.gpus:g} GPU")
    if sum(per_worker_fits) < resources.workers_per_trial:
        return (f"a trial needs {resources.workers_per_trial} workers of "
                f"{resources.cpus_per_worker:g} CPU and {resources.gpus_per_worker:g} GPU at "
                f"once; the cluster holds {sum(per_worker_fits)}")
    return None


def check_fits(resources: ResourcesConfig, nodes: list[NodeResources], *, fixed: bool) -> None:
    """A trial larger than the cluster would wait forever: an error on a cluster that
    cannot grow (a local one), a warning on one that an autoscaler may grow."""
    problem = unmet_need(resources, nodes)
    if problem is None:
        return
    if fixed:
        raise ConfigError(f"resources: {problem}; lower resources.workers_per_trial, "
                          "cpus_per_worker or gpus_per_worker")
    logger.warning("resources: %s; trials will wait until the cluster's autoscaler adds a "
                   "node that fits (without an autoscaler they wait forever: stop with "
                   "Ctrl-C and lower the resources)", problem)


@contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Connect to ``address`` or start a local Ray; reuse one already started (tests).

    Without an address the study starts its own Ray, as ``--address``'s help says: Ray's
    own default would join whatever cluster ``ray start`` last left on this machine."""
    import ray

    if ray.is_initialized():
        yield
        return
    if address is None:
        _start_local_ray()
    else:
        try:
            ray.init(address=address, logging_level=logging.WARNING,
                     runtime_env=_worker_setup(address))
        except ConnectionError as exc:
            message = f"--address: cannot connect to Ray at {address} ({exc})"
            raise ConfigError(message) from None
    try:
        yield
    finally:
        ray.shutdown()


def _worker_setup(address: str | None) -> dict[str, Any] | None:
    """The study's Ray job: every process it starts quiets Ray's per-checkpoint lines.
    A new dict each time (Ray fills in the one it is given, and a second session given
    the filled one refuses it). Not through Ray Client, which sends the job's settings
    as JSON (a function is not) and never runs the hook: there the trial quiets what it
    can itself."""
    from trainables.logs import quiet_ray_logs

    if address is not None and address.startswith("ray://"):
        return None
    return {"worker_process_setup_hook": quiet_ray_logs}


def _start_local_ray() -> None:
    """Start a Ray of this study's own whose processes know its API server, without idle
    workers.

    Ray Train's placement-group cleaner (the detached actor that frees the CPUs and GPUs
    of a data-parallel trial's workers when the trial's coordinator dies: a retried or
    ASHA-stopped trial) looks its cluster up through Ray's state API, and without an
    address it finds every Ray instance on the host. With two (two studies on one
    workstation) it fails, and the resources are never freed: later data-parallel trials
    wait for them forever; or, if the other was started by ``ray start``, it asks that
    cluster, misses the controller there and frees a live trial's resources. Naming the
    dashboard's port and exporting it as ``RAY_API_SERVER_ADDRESS`` while Ray starts
    gives every Ray process this instance's address.

    When its first driver connects, Ray starts one idle worker process per CPU for tasks
    and ``ray.init`` waits for them (Ray's ``prestart_worker_first_driver``). A study on
    its own Ray runs no tasks (the shared-storage probe needs several nodes): its trials
    are actors, which get processes of their own (measured: none of them took a
    prestarted worker). Those workers only cost the start (about 1.3 s of a
    6 s ``ray.init`` on 2 cores, CPU that the parent run's opening uses meanwhile) and
    their memory, one idle process per CPU for as long as they live.

    Both settings go to Ray through its processes' environment; the driver's own
    environment is restored afterwards."""
    import ray

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}",
                "RAY_prestart_worker_first_driver": "0"}
    with _environment(settings):
        context = ray.init(address="local", dashboard_host="127.0.0.1", dashboard_port=port,
                           logging_level=logging.WARNING, runtime_env=_worker_setup(None))
    # Ray does not fail when its dashboard cannot start (the port taken meanwhile, a
    # minimal install); the state API, and with it the cleaner, then have nothing to ask.
    if (context.dashboard_url or "").endswith(f":{port}"):
        logger.info("Ray dashboard: http://%s", context.dashboard_url)
    else:
        logger.warning("the Ray dashboard did not start on port %d: if a data-parallel "
                       "trial's coordinator dies while another Ray runs on this machine, "
                       "its workers' CPUs and GPUs may stay taken", port)


@contextmanager
def _environment(variables: Mapping[str, str]) -> Iterator[None]:
    """``variables`` in this process's environment, and so in the processes it starts,
    until the block ends; then the environment as it was."""
    before = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def check_shared_storage(root: Path) -> None:
    """On a cluster of several nodes, every node must see the study directory: trials
    write checkpoints there and a resumed study reads them back. A marker file written by
    the driver is looked for from a task on each node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return
    probe = ray.remote(num_cpus=0)(_path_exists)
    marker = root / f".visible-{uuid.uuid4().hex}"
    marker.write_text("sslstudy")
    try:
        blind = []
        for node in nodes:
            strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            seen = ray.get(probe.options(scheduling_strategy=strategy).remote(str(marker)))
            if not seen:
                blind.append(node.get("NodeManagerAddress", node["NodeID"]))
    finally:
        marker.unlink()
    if blind:
        raise ConfigError(
            f"storage_path: {str(root.parent)!r} is not visible from node(s) "
            f"{', '.join(blind)}; on a multi-node cluster use a shared file system or a "
            "storage URI every node can reach"
        )


def _path_exists(path: str) -> bool:
    return Path(path).exists()
