"""The floors of the house (docs/DESIGN.md), kept by parsing every file's imports: an import may go
down or sideways within its own package, never up, and never across the floor of data/, models/ and
losses/; and no two modules import each other, round any circle.

    entry points: train.py, eval.py, scripts/ (thin command lines)
    tools/        tables, collector, paired design, figures, benchmarks
    engine/       loop, evaluation, checkpoints, config, distributed
    data/  models/  losses/
    core/         errors, registry, class weights, seeds          rsg/ (the plug-in: torch only)
"""

from __future__ import annotations

import ast
import glob
import os

import pytest

from conftest import ROOT

# What each floor may import of the project, besides itself.
ALLOWED = {
    "core": set(),
    "rsg": set(),
    "data": {"core"},
    "losses": {"core"},
    "models": {"core", "rsg"},
    "engine": {"core", "rsg", "data", "models", "losses"},
    "tools": {"core", "rsg", "data", "models", "losses", "engine"},
    "scripts": {"core", "tools"},      # core.startup: a Ctrl-C while tools load
    "train": {"core", "engine"},
    "eval": {"core", "engine"},
}
PROJECT = set(ALLOWED) | {"tests", "conftest"}


def project_files() -> list[str]:
    files = [os.path.join(ROOT, name) for name in ("train.py", "eval.py")]
    for floor in ALLOWED:
        files += glob.glob(os.path.join(ROOT, floor, "**", "*.py"), recursive=True)
    return sorted(set(files))


def floor_of(path: str) -> str:
    return os.path.relpath(path, ROOT).split(os.sep)[0].removesuffix(".py")


def imported_packages(path: str) -> set[str]:
    """The project's top-level packages that `path` imports, at any depth (function bodies too)."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & PROJECT


def test_the_floors_cover_the_code():
    floors = {floor_of(path) for path in project_files()}
    assert floors == set(ALLOWED)
    assert len(project_files()) > 60


@pytest.mark.parametrize("path", project_files(), ids=lambda p: os.path.relpath(p, ROOT))
def test_imports_run_down(path):
    floor = floor_of(path)
    wrong = imported_packages(path) - ALLOWED[floor] - {floor}
    assert not wrong, f"{os.path.relpath(path, ROOT)} ({floor}/) imports {sorted(wrong)}; it may import {sorted(ALLOWED[floor])}"


def test_the_parser_sees_a_wrong_arrow(tmp_path):
    upward = tmp_path / "upward.py"
    upward.write_text("def f():\n    from engine.config import load_config\n    import tools.figures\n")
    assert imported_packages(str(upward)) == {"engine", "tools"}


def test_rsg_imports_only_torch():
    for path in glob.glob(os.path.join(ROOT, "rsg", "*.py")):
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        roots = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        roots |= {node.module.split(".")[0] for node in ast.walk(tree)
                  if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module}
        assert roots <= {"torch", "rsg", "__future__", "typing", "dataclasses", "math", "collections", "functools",
                         "inspect"}, path


@pytest.mark.slow
def test_pip_install_installs_the_plug_in_alone(tmp_path):
    """A researcher who wants only RSG runs `pip install .`: the wheel holds `rsg` and its metadata,
    none of the training code's generic package names (core, data, engine, ...)."""
    import shutil
    import subprocess
    import sys
    import zipfile

    source = tmp_path / "source"      # a copy: building in the checkout would leave build/ and egg-info there
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "runs", "datasets", "__pycache__"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                             "-w", str(tmp_path / "wheel"), str(source)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = (tmp_path / "wheel").iterdir()
    top_level = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert top_level == {"rsg", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}
    assert {"rsg/__init__.py", "rsg/module.py", "rsg/attach.py"} <= set(zipfile.ZipFile(wheel).namelist())


# ---------------------------------------------------------------------------------------------
# No import cycle between the project's modules, whether the import is at the top of a file or
# inside a function (an import moved into a function hides a cycle from Python, not from a reader).

BARE_NAMED = ("tests", "scripts")     # their files are imported by bare name (`from conftest import ROOT`)


def module_names() -> dict[str, str]:
    """{module name: path} of every Python file of the project, tests and scripts included."""
    paths = glob.glob(os.path.join(ROOT, "*.py")) + glob.glob(os.path.join(ROOT, "*", "**", "*.py"), recursive=True)
    names = {}
    for path in paths:
        parts = os.path.relpath(path, ROOT).removesuffix(".py").split(os.sep)
        if parts[0].startswith("."):
            continue                  # .venv and other hidden folders
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
        if parts[0] in BARE_NAMED and len(parts) == 2:
            names[parts[1]] = path
    return names


def imported_modules(path: str, package: str, modules: dict) -> set[str]:
    """The project modules that the file at `path` (in `package`) imports, anywhere in it."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(project_module(alias.name, modules) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = absolute_name(node, package)
            for alias in node.names:   # `from tools import rsg_pair` imports the module tools.rsg_pair
                found.add(project_module(f"{base}.{alias.name}", modules) or project_module(base, modules))
    return found - {None}


def absolute_name(node: ast.ImportFrom, package: str) -> str:
    if node.level == 0:
        return node.module or ""
    parent = package.split(".")[:len(package.split(".")) - node.level + 1]
    return ".".join(parent + ([node.module] if node.module else []))


def project_module(name: str, modules: dict):
    """The longest prefix of the dotted `name` that is a project module, or None."""
    parts = name.split(".")
    return next((".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in modules), None)


def import_graph(modules: dict) -> dict[str, set[str]]:
    graph = {}
    for name, path in modules.items():
        package = name if os.path.basename(path) == "__init__.py" else name.rpartition(".")[0]
        graph[name] = imported_modules(path, package, modules) - {name}
    return graph


def import_cycles(graph: dict) -> list[list[str]]:
    """Every group of modules that import one another, round a circle (the strongly connected
    components of more than one module; Tarjan's algorithm)."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_import_cycle():
    cycles = import_cycles(import_graph(module_names()))
    assert not cycles, "modules that import one another (at the top or inside a function): " + "; ".join(
        " <-> ".join(cycle) for cycle in cycles)


def test_a_cycle_through_a_function_level_import_is_found(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "spec.py").write_text("from pkg.runner import plan\n")
    (tmp_path / "pkg" / "runner.py").write_text("def plan():\n    from . import spec\n")
    (tmp_path / "pkg" / "leaf.py").write_text("import pkg.spec\n")
    modules = {"pkg": str(tmp_path / "pkg" / "__init__.py"),
               **{f"pkg.{n}": str(tmp_path / "pkg" / f"{n}.py") for n in ("spec", "runner", "leaf")}}
    assert import_cycles(import_graph(modules)) == [["pkg.runner", "pkg.spec"]]
