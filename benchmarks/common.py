"""What every benchmark shares: the common flags, the hardware line, contenders timed side
by side (alternating, several repeats, median), and the closing ratio line.

Contenders alternate within one process, each repeat starting with a different one, so
that a machine that slows down or speeds up during the run (another process, thermal
throttling, a cache warming) affects all of them alike. The median of the repeats is
what counts; the spread is printed beside it so that a noisy run shows itself.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch


def available_cpus() -> int:
    """The CPUs this process may run on (a container's or taskset's share, not the host's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


def parser(description: str, repeats: int) -> argparse.ArgumentParser:
    """An argument parser with the flags every benchmark takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--repeats", type=int, default=repeats,
                        help=f"timed repeats per contender (default: {repeats})")
    parser.add_argument("--threads", type=int, default=available_cpus(),
                        help="torch threads of the main process (default: the CPUs available)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def start(args: argparse.Namespace, name: str) -> torch.device:
    """Check the device, set the threads and print the benchmark's header."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"{name}: --device {args.device} but torch sees no CUDA device")
    torch.set_num_threads(args.threads)
    print(f"== {name} ==")
    print(hardware(device, args.threads))
    return device


def hardware(device: torch.device, threads: int) -> str:
    """One line naming what the figures were measured on, and when."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    line = (f"hardware: {cpu}, {available_cpus()} CPUs available, {threads} torch threads; "
            f"torch {torch.__version__}; {datetime.date.today().isoformat()}")
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        line += f"; GPU {props.name} ({props.total_memory / 2**30:.0f} GiB)"
    return line


def synchronize(device: torch.device) -> None:
    """Wait for the device, so that a timer measures work done, not work queued."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Timings:
    """Seconds per repeat of each contender."""

    seconds: Mapping[str, list[float]]

    def median(self, name: str) -> float:
        return statistics.median(self.seconds[name])

    def spread(self, name: str) -> float:
        """(max - min) / median of the repeats: how noisy the measurement was."""
        values = self.seconds[name]
        return (max(values) - min(values)) / self.median(name)


def alternate(
    contenders: Mapping[str, Callable[[], Any]],
    repeats: int,
    device: torch.device,
    warmup: int = 1,
) -> Timings:
    """Run every contender ``warmup`` times untimed, then ``repeats`` timed rounds; round r
    starts with contender r (mod their number)."""
    names = list(contenders)
    for name in names:
        for _ in range(warmup):
            contenders[name]()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            synchronize(device)
            began = time.perf_counter()
            contenders[name]()
            synchronize(device)
            seconds[name].append(time.perf_counter() - began)
    return Timings(seconds)


def print_rates(timings: Timings, work: float, unit: str) -> dict[str, float]:
    """Print ``work`` / median seconds of each contender in ``unit`` per second; returns the
    rates by name."""
    rates = {}
    width = max(len(name) for name in timings.seconds)
    for name in timings.seconds:
        rates[name] = work / timings.median(name)
        print(f"  {name:<{width}}  {rates[name]:>12,.0f} {unit}/s   (median of "
              f"{len(timings.seconds[name])}, spread {timings.spread(name):.0%})")
    return rates


def conclude(name: str, ratio: float, what: str) -> None:
    """The benchmark's last line, which ``python -m benchmarks`` collects."""
    print(f"{name}: {ratio:.2f}x {what}", flush=True)
