"""Run the benchmark suite, each benchmark in its own process with its default sizes, and
print the closing line of each together at the end (the figures of the README's
performance table).

    python -m benchmarks [--device cuda] [--only augment,step]

``make bench`` runs this; ``make bench BENCH_ARGS="--device cuda"`` on a GPU machine.
Each benchmark also runs alone with its own flags: ``python -m benchmarks.step --help``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

#: Benchmark name -> module, in the order they run.
SUITE = {
    "augment": "benchmarks.augment",
    "step": "benchmarks.step",
    "optimizer": "benchmarks.optimizer",
    "vs-lightly": "benchmarks.vs_lightly",
    "study-overhead": "benchmarks.study_overhead",
    "shared-data": "benchmarks.shared_data",
    "packing": "benchmarks.packing",
}


def main() -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    cli.add_argument("--only", default=",".join(SUITE),
                     help=f"comma-separated subset of: {', '.join(SUITE)}")
    args = cli.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(SUITE))
    if unknown:
        cli.error(f"--only: unknown {', '.join(unknown)}; allowed: {', '.join(SUITE)}")
    summary, failed = [], []
    for name in chosen:
        process = subprocess.Popen(
            [sys.executable, "-m", SUITE[name], "--device", args.device],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        last = ""
        assert process.stdout is not None
        for line in process.stdout:
            print(line, end="", flush=True)
            if line.startswith(f"{name}: "):
                last = line.strip()
        if process.wait() != 0:
            failed.append(name)
        summary.append(last or f"{name}: {'failed' if name in failed else 'skipped'}")
        print()
    print("== summary ==")
    print("\n".join(summary))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
