"""The floors of the house (docs/DESIGN.md), kept by parsing every file's imports: an import may go
down or sideways within its own package, never up, and never across the floor of data/, models/ and
losses/ (issue 12).

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
    "scripts": {"tools"},
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
