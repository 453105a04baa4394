"""The test tree as a contract (issue 14, point 4).

``make unit`` runs ``tests/unit``, ``tests/agents`` and ``tests/contracts`` and needs no
broker: no test or fixture there (nor in the kit they share) asks for the session ``broker``
fixture or carries the ``integration`` mark; those belong in ``tests/integration``. And
``tests/unit`` mirrors the package: one folder per sub-package of ``app`` (or ``schemas``),
no test module loose at its top. Every path under ``tests/`` that the docs name (README,
``deploy/``, comments in the package) exists, so moving a test cannot leave a stale
pointer to it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
NO_BROKER = ("unit", "agents", "contracts", "kit")
SOURCES = sorted(p for d in NO_BROKER for p in (TESTS / d).rglob("*.py"))


def broker_uses(source: str) -> list[str]:
    """Where ``source`` asks for the broker: a function (test or fixture) taking a
    ``broker`` argument, ``usefixtures("broker")``, or ``pytest.mark.integration``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            a = node.args
            if any(arg.arg == "broker" for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs]):
                found.append(f"line {node.lineno}: {node.name}(broker)")
        elif (
            isinstance(node, ast.Attribute)
            and node.attr == "integration"
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "mark"
        ):
            found.append(f"line {node.lineno}: mark.integration")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "usefixtures"
            and any(isinstance(x, ast.Constant) and x.value == "broker" for x in node.args)
        ):
            found.append(f"line {node.lineno}: usefixtures(broker)")
    return found


def test_broker_uses_sees_each_way_of_asking_for_the_broker() -> None:
    assert broker_uses("def test_x(broker, tmp_path): ...") == ["line 1: test_x(broker)"]
    marked = "import pytest\npytestmark = pytest.mark.integration"
    assert broker_uses(marked) == ["line 2: mark.integration"]
    used = "@pytest.mark.usefixtures('broker')\ndef test_y(): ..."
    assert broker_uses(used) == ["line 1: usefixtures(broker)"]
    # a module named broker, or a name that only contains it, is no request for it
    other = "from app.adapters import broker as broker_mod\ndef test_z(broker_log): ..."
    assert broker_uses(other) == []


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(TESTS)))
def test_make_unit_needs_no_broker(path: Path) -> None:
    assert broker_uses(path.read_text("utf-8")) == [], f"{path}: move it to tests/integration"


def test_unit_tests_mirror_the_package() -> None:
    unit = TESTS / "unit"
    loose = sorted(p.name for p in unit.glob("test_*.py"))
    assert loose == [], "a unit test belongs in the folder of the package it tests"
    folders = sorted(p.name for p in unit.iterdir() if p.is_dir() and p.name != "__pycache__")
    packages = {p.parent.name for p in (ROOT / "app").glob("*/__init__.py")} | {"schemas"}
    assert folders and set(folders) <= packages, f"{folders} vs app's {sorted(packages)}"
    for name in folders:
        assert (unit / name / "__init__.py").is_file(), name


#: A path under tests/ as the docs write it (``tests/unit/domain/test_engine.py``).
TEST_PATH = re.compile(r"\btests/[\w/]+\.py\b")


def test_every_test_path_the_docs_name_exists() -> None:
    docs = [ROOT / "README.md", *(ROOT / "deploy").rglob("*"), *(ROOT / "app").rglob("*.py")]
    stale = sorted(
        (str(doc.relative_to(ROOT)), path)
        for doc in docs
        if doc.is_file()
        for path in set(TEST_PATH.findall(doc.read_text("utf-8", errors="replace")))
        if not (ROOT / path).is_file()
    )
    assert stale == []
