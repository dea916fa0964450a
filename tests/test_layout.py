"""The house rules of the layout: packages talk through their faces, and each face says what it holds.

A subpackage of ``core`` (``core/model``, ``core/data``, ...) may import anything of its own, but from
another subpackage only the names its ``__init__.py`` exports (``from core.train import fit``, never
``from core.train.trainer import fit``). ``experiments/`` and ``export/`` follow the same rule for every
subpackage. Tests may reach into modules (they test them).
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
            if (ROOT / "core" / parts[1] / f"{parts[2]}.py").exists():
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {module}")
    return bad


def test_there_are_subpackages_to_check():
    assert {"model", "data", "train", "sweep", "finetune", "explain"} <= set(SUBPACKAGES), SUBPACKAGES


def test_packages_import_each_other_only_through_their_faces():
    bad = [line for path in _sources("core", "experiments", "export") for line in _private_imports(path)]
    assert bad == [], "import the package, not its module (add the name to its __init__.py):\n" + "\n".join(bad)


def test_the_rule_catches_a_private_import(tmp_path):
    probe = ROOT / "export" / "_layout_probe.py"
    probe.write_text("from core.train.trainer import fit\nimport core.sweep.local\n")
    try:
        assert _private_imports(probe) == ["export/_layout_probe.py:1: core.train.trainer",
                                           "export/_layout_probe.py:1: core.train.trainer.fit",
                                           "export/_layout_probe.py:2: core.sweep.local"]
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
    assert len(top) <= 2, f"core/ top level should hold at most a couple of cross-cutting modules, found {top}"


def test_no_module_is_a_house_of_its_own():
    long = [f"{p.relative_to(ROOT)} ({n} lines)" for p in _sources("core", "experiments", "export")
            if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert long == [], f"split these modules (>{MAX_LINES} lines): {long}"


# Each package may use only the packages below it: data at the ground, the sweep at the top.
FLOORS = ["data", "model", "train", "explain", "partA", "finetune", "sweep"]


def _package_imports(package: str) -> set[str]:
    used = set()
    for path in (ROOT / "core" / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            used |= {n.split(".")[1] for n in names if n.startswith("core.") and n.count(".") >= 1}
    return used & set(SUBPACKAGES) - {package}


def test_packages_only_use_the_floors_below_them():
    assert sorted(FLOORS) == sorted(SUBPACKAGES), "a new package needs its floor in FLOORS"
    upward = {p: sorted(u for u in _package_imports(p) if FLOORS.index(u) > FLOORS.index(p)) for p in FLOORS}
    assert all(not v for v in upward.values()), f"imports that run back up the floors: {upward}"
