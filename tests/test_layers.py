"""The layers import downward only.

Top to bottom: the CLI; ``study`` and ``analysis`` (neither imports the other); the
trainable that records a trial (``trainables.trainable``, ``recording``, ``local_run``);
``tracking`` (MLflow); the torch core of ``trainables``; ``search_spaces`` and the
tracking schema (plain data). Each module of the project is imported in a fresh
interpreter (forked from one that has loaded only what the module may use anyway), and
what lands in ``sys.modules`` is checked against what its layer may use; the import
statements of all modules (lazy ones included) must point downward, which also rules out
cycles.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("study", "analysis", "tracking", "trainables", "search_spaces")
#: Modules of the trainables package above the torch core.
TRAINABLES_TOP = {"trainables.trainable", "trainables.recording", "trainables.local_run"}
#: Modules of the study package that commands with nothing to train use (the CLI's
#: input error, the checks of the places a command writes to): no torch, Ray or MLflow.
STUDY_LIGHT = {"study.errors", "study.paths"}
#: Modules of the tracking package that import nothing (usable by every layer).
TRACKING_PLAIN = {"tracking", "tracking.schema", "tracking.errors"}
HEAVY = ("torch", "ray", "mlflow", "optuna")


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        names.append(package)
        path = [str(ROOT / package)]
        for info in pkgutil.walk_packages(path, prefix=f"{package}."):
            names.append(info.name)
    return sorted(names)


def layer(module: str) -> tuple[int, str]:
    """(rank, group): a module may import only from lower ranks, or from its own group."""
    if module == "study.cli":
        return 6, "cli"
    if module in STUDY_LIGHT:
        return 4, "study-light"
    if module.startswith("study"):
        return 5, "study"
    if module.startswith("analysis"):
        return 5, "analysis"
    if module in TRAINABLES_TOP:
        return 4, "trainables-top"
    if module in TRACKING_PLAIN:
        return 1, "tracking-plain"
    if module.startswith("tracking"):
        return 3, "tracking"
    if module.startswith("trainables"):
        return 2, "trainables-core"
    return 1, "search_spaces"


def forbidden(module: str) -> set[str]:
    """Packages (or project modules) that must not be in ``sys.modules`` after importing
    ``module`` alone."""
    group = layer(module)[1]
    project_above = {m for m in _modules() if layer(m)[0] > layer(module)[0]}
    rules = {
        "cli": {"torch", "ray", "mlflow", "optuna", "analysis", "trainables", "pandas"},
        "study": {"analysis"},
        "study-light": set(HEAVY) | {"analysis", "trainables"},
        "analysis": {"torch", "ray", "study", "trainables"},
        "trainables-top": {"optuna", "study", "analysis"},
        "tracking": {"torch", "ray", "optuna", "study", "analysis", "trainables",
                     "search_spaces"},
        "trainables-core": {"ray", "mlflow", "optuna", "study", "analysis"},
        "tracking-plain": set(HEAVY) | {"study", "analysis", "trainables", "search_spaces"},
        "search_spaces": set(HEAVY) | {"study", "analysis", "trainables", "tracking"},
    }[group]
    if module == "search_spaces.distributions":
        rules = rules - {"optuna"}
    if module in ("trainables.recording", "trainables.local_run"):
        rules = rules | {"ray"}
    if group == "study-light":
        # Importing it imports its package, whose __init__ is a docstring.
        project_above = project_above - {"study"}
    return rules | project_above


#: What each probe process loads before forking: the libraries every module it probes
#: may use anyway, so that each fork only pays for the module itself.
PROBES = {
    "bare": [],
    "mlflow": ["mlflow.tracking", "pandas", "numpy", "scipy.stats", "matplotlib.pyplot"],
    "torch": ["torch", "torchvision", "numpy"],
    # The study layer may use everything below it: each of its modules would otherwise
    # import Ray, Tune, MLflow and Optuna again in its own fork.
    "study": ["torch", "torchvision", "numpy", "pandas", "ray", "ray.tune", "ray.train",
              "ray.tune.search.optuna", "mlflow.tracking", "optuna", "yaml", "pydantic"],
}


def _probe_of(module: str) -> str:
    group = layer(module)[1]
    if group in ("analysis", "tracking"):
        return "mlflow"
    if group == "study":
        return "study"
    if group in ("trainables-top", "trainables-core"):
        return "torch"
    return "bare"


PROBE = r"""
import importlib, json, os, sys
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
baseline = sorted(sys.modules)
results = {"<baseline>": baseline}
for module in json.loads(sys.argv[2]):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(module)
            out = json.dumps(sorted(sys.modules))
        except BaseException as exc:
            out = json.dumps({"error": repr(exc)})
        with os.fdopen(write, "w") as handle:
            handle.write(out)
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as handle:
        results[module] = json.loads(handle.read())
    os.waitpid(pid, 0)
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def loaded() -> dict[str, list[str]]:
    """module -> the modules in ``sys.modules`` after importing it (forked probes)."""
    by_probe: dict[str, list[str]] = {name: [] for name in PROBES}
    for module in _modules():
        by_probe[_probe_of(module)].append(module)
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-c", PROBE, json.dumps(PROBES[name]), json.dumps(modules)],
            stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )
        for name, modules in by_probe.items()
    }
    results: dict[str, list[str]] = {}
    for name, process in processes.items():
        out, _ = process.communicate(timeout=600)
        assert process.returncode == 0, name
        found = json.loads(out)
        baseline = found.pop("<baseline>")
        # What the probe preloaded must itself be allowed for every module it probes.
        for module in by_probe[name]:
            assert not _hits(baseline, forbidden(module)), (name, module)
        results.update(found)
    return results


def _hits(modules: list[str], banned: set[str]) -> list[str]:
    return sorted(m for m in modules if m in banned or m.split(".")[0] in banned)


@pytest.mark.parametrize("module", _modules())
def test_a_module_loads_nothing_its_layer_may_not_use(module: str, loaded) -> None:
    found = loaded[module]
    assert not isinstance(found, dict), found
    hits = _hits(found, forbidden(module))
    assert not hits, f"importing {module} loads {hits[:5]}"


def _imports(module: str) -> set[str]:
    """Project modules that ``module`` imports anywhere in its source (lazily too)."""
    path = ROOT / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = ROOT / module.replace(".", "/") / "__init__.py"
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name.split(".")[0] in PACKAGES:
                found.add(name)
    known = set(_modules())
    return {name for name in found if name in known}


def test_every_import_points_down_the_layers() -> None:
    upward = []
    for module in _modules():
        rank, group = layer(module)
        for target in _imports(module):
            target_rank, target_group = layer(target)
            if target_rank > rank or (target_rank == rank and target_group != group):
                upward.append(f"{module} -> {target}")
    assert not upward, upward


def test_the_import_graph_has_no_cycle() -> None:
    graph = {module: _imports(module) - {module} for module in _modules()}
    # Importing a package's submodule runs the package's __init__ first; that edge is
    # not a dependency of the submodule's code.
    graph = {m: {t for t in targets if not m.startswith(t + ".")} for m, targets in graph.items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                raise AssertionError(" -> ".join([*path, node, target]))
            if target not in state:
                visit(target, [*path, node])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_the_train_command_loads_neither_ray_tune_nor_optuna() -> None:
    """``sslstudy train`` runs one configuration in-process: everything its code path
    imports (lazily too) stays clear of the search machinery."""
    code = (
        "import sys, study.cli, study.train, trainables.local_run, tqdm\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('ray.tune', 'ray.train', "
        "'optuna')))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
