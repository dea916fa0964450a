"""The house rules of the layout: packages talk through their faces, imports go down the floors and never loop,
no folder grows into a house of its own, and the seams people extend are registries.

A subpackage of ``core`` (``core/model``, ``core/data``, ...) may import anything of its own, but from
another subpackage only the names its ``__init__.py`` exports (``from core.train import fit``, never
``from core.train.trainer import fit``); a nested subpackage's face counts too
(``from core.sweep.backends.local import run_local``). ``experiments/`` and ``export/`` follow the same rule.
Imports under ``if TYPE_CHECKING:`` only name types for annotations and load nothing: the floors and loops
ignore them. Tests may reach into modules (they test them).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = sorted(p.name for p in (ROOT / "core").iterdir() if (p / "__init__.py").exists())
MAX_LINES = 350


def _sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def _owner(path: Path) -> str | None:
    parts = path.relative_to(ROOT).parts
    return parts[1] if parts[0] == "core" and len(parts) > 2 else None


def _private_imports(path: Path) -> list[str]:
    """Every import in ``path`` that reaches past another subpackage's face, as 'line: statement'."""
    own = _owner(path)
    bad = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        else:
            continue
        for module in modules:
            parts = module.split(".")
            if parts[0] != "core" or len(parts) < 3 or parts[1] == own or parts[1] not in SUBPACKAGES:
                continue
            if any(ROOT.joinpath(*parts[:i]).with_suffix(".py").exists() for i in range(3, len(parts) + 1)):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {module}")
    return bad


def test_there_are_subpackages_to_check():
    assert {"model", "data", "train", "sweep", "finetune", "explain"} <= set(SUBPACKAGES), SUBPACKAGES


def test_packages_import_each_other_only_through_their_faces():
    bad = [line for path in _sources("core", "experiments", "export") for line in _private_imports(path)]
    assert bad == [], "import the package, not its module (add the name to its __init__.py):\n" + "\n".join(bad)


def test_the_rule_catches_a_private_import(tmp_path):
    probe = ROOT / "export" / "_layout_probe.py"
    probe.write_text("from core.train.trainer import fit\nimport core.sweep.backends.local.study\n")
    try:
        assert _private_imports(probe) == ["export/_layout_probe.py:1: core.train.trainer",
                                           "export/_layout_probe.py:1: core.train.trainer.fit",
                                           "export/_layout_probe.py:2: core.sweep.backends.local.study"]
    finally:
        probe.unlink()


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_each_face_says_what_it_holds_and_exports_real_names(package):
    module = importlib.import_module(f"core.{package}")
    assert module.__doc__ and len(module.__doc__.split()) >= 8, f"core/{package}/__init__.py needs a docstring"
    exported = getattr(module, "__all__", [])
    assert exported, f"core/{package}/__init__.py exports nothing (__all__)"
    missing = [name for name in exported if getattr(module, name, None) is None]
    assert missing == [], f"core.{package}.__all__ names that do not resolve: {missing}"


def test_core_top_level_keeps_only_cross_cutting_modules():
    top = sorted(p.name for p in (ROOT / "core").glob("*.py") if p.name != "__init__.py")
    assert len(top) <= 4, f"core/ top level should hold at most a few cross-cutting modules, found {top}"


def test_the_top_floors_are_experiments_then_export_then_core():
    """core imports neither top folder; export/ runs its scripts with core's runner, not experiments'."""
    above = {"core": ("experiments", "export"), "export": ("experiments",)}
    bad = [f"{p.relative_to(ROOT)}: {n}" for folder, banned in above.items() for p in _sources(folder)
           for n in _runtime_imports(p) if n.split(".")[0] in banned]
    assert bad == [], "imports that run back up the floors:\n" + "\n".join(bad)


def test_no_module_is_a_house_of_its_own():
    long = [f"{p.relative_to(ROOT)} ({n} lines)" for p in _sources("core", "experiments", "export")
            if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert long == [], f"split these modules (>{MAX_LINES} lines): {long}"


# Each package may use only the packages below it: data at the ground, the sweep at the top.
FLOORS = ["data", "model", "train", "reports", "explain", "partA", "finetune", "sweep"]
MAX_FOLDER_LINES = 2500  # lines directly in one folder of core/ (its subfolders count on their own)


def _runtime_imports(path: Path) -> list[str]:
    """Every module ``path`` imports, absolute, leaving out ``if TYPE_CHECKING:`` blocks (annotations only)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for stmt in node.body for n in ast.walk(stmt)}
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:  # a submodule, else the package
            out += [f"{node.module}.{a.name}" if _module_file(f"{node.module}.{a.name}") else node.module
                    for a in node.names]
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names]
    return out


def _package_imports(package: str) -> set[str]:
    used = {n.split(".")[1] for path in (ROOT / "core" / package).rglob("*.py") for n in _runtime_imports(path)
            if n.startswith("core.")}
    return used & set(SUBPACKAGES) - {package}


def test_packages_only_use_the_floors_below_them():
    assert sorted(FLOORS) == sorted(SUBPACKAGES), "a new package needs its floor in FLOORS"
    upward = {p: sorted(u for u in _package_imports(p) if FLOORS.index(u) > FLOORS.index(p)) for p in FLOORS}
    assert all(not v for v in upward.values()), f"imports that run back up the floors: {upward}"


def _module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py") if base.with_suffix(".py").exists() else (
        base / "__init__.py" if (base / "__init__.py").exists() else None)


def _import_cycles(files: list[Path]) -> list[list[str]]:
    """Import loops among ``files``, each as the modules around it (depth-first search for back edges)."""
    graph = {f: sorted({m for n in _runtime_imports(f) if n.startswith("core.") and (m := _module_file(n))} - {f})
             for f in files}
    cycles, state, stack = [], {}, []

    def visit(f: Path) -> None:
        state[f] = "open"
        stack.append(f)
        for g in graph.get(f, []):
            if state.get(g) == "open":
                cycles.append([str(p.relative_to(ROOT)) for p in stack[stack.index(g):]])
            elif g not in state:
                visit(g)
        stack.pop()
        state[f] = "done"

    for f in files:
        if f not in state:
            visit(f)
    return cycles


def test_no_import_loops():
    cycles = _import_cycles(_sources("core"))
    assert cycles == [], "modules that import each other (move the shared part down a floor):\n" + "\n".join(
        " -> ".join(c) for c in cycles)


def test_the_loop_rule_catches_a_loop():
    probes = [ROOT / "core" / "model" / f"_loop_probe_{i}.py" for i in (1, 2)]
    probes[0].write_text("def f():\n    from core.model._loop_probe_2 import g\n")
    probes[1].write_text("from typing import TYPE_CHECKING\nfrom core.model._loop_probe_1 import f\n"
                         "if TYPE_CHECKING:\n    from core.sweep import SweepConfig\n")
    try:
        assert _import_cycles(probes) == [["core/model/_loop_probe_1.py", "core/model/_loop_probe_2.py"]]
    finally:
        for p in probes:
            p.unlink()


def test_no_folder_in_core_is_a_house_of_its_own():
    big = {str(d.relative_to(ROOT)): n for d in [ROOT / "core", *(ROOT / "core").rglob("*/")]
           if "__pycache__" not in d.parts and (n := sum(len(p.read_text().splitlines()) for p in d.glob("*.py")))
           > MAX_FOLDER_LINES}
    assert big == {}, f"split these folders by concern (>{MAX_FOLDER_LINES} lines directly in each): {big}"


# Where people extend, a registry (name -> factory) and its decorator, in the package's face.
REGISTRIES = [("train", "OPTIMIZERS", "register_optimizer"), ("train", "SCHEDULERS", "register_scheduler"),
              ("finetune", "STRATEGIES", "register_strategy"), ("data", "AUGMENT_POLICIES", "register_augment_policy"),
              ("sweep", "SWEEP_BACKENDS", "register_backend")]


@pytest.mark.parametrize(("package", "registry", "register"), REGISTRIES)
def test_each_seam_is_a_registry(package, registry, register):
    face = importlib.import_module(f"core.{package}")
    table = getattr(face, registry, None)
    assert isinstance(table, dict) and table, f"core.{package}.{registry} must be a non-empty dict name -> factory"
    assert all(callable(f) and k == k.lower() for k, f in table.items()), f"{registry}: lower-case names, callables"
    assert callable(getattr(face, register, None)), f"core.{package} must export {register} (one line to add one)"
    assert {registry, register} <= set(face.__all__), f"core.{package}.__all__ must name {registry} and {register}"


def test_a_fast_test_that_starts_a_process_fails_and_names_the_rule():
    """tests/conftest.py keeps the fast tier (``-m "not slow"``) free of processes: this test has no mark."""
    import subprocess
    import sys

    with pytest.raises(AssertionError, match=r"starts a process: mark it @pytest.mark.slow"):
        subprocess.run([sys.executable, "-c", "pass"], check=True)


def test_the_architecture_page_counts_each_package_as_it_is():
    """docs/architecture.md's package table: `files, lines` per row, as `wc -l <package>/*.py` counts them today."""
    import re

    rows = re.findall(r"^\| `([^`]+)` \|.*\| (\d+), (\d+) \|$", (ROOT / "docs" / "architecture.md").read_text(), re.M)
    assert len(rows) >= 15, f"the package table was not found: {rows}"
    for place, files, lines in rows:
        paths = [ROOT / place] if place.endswith(".py") else sorted((ROOT / place).glob("*.py"))
        counted = (len(paths), sum(len(p.read_bytes().splitlines()) for p in paths))
        assert counted == (int(files), int(lines)), f"{place}: the page says {files}, {lines}; the tree has {counted}"
