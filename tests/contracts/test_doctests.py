"""Every doctest of the package, behind one switch (LAYOUT.md, example 9): each module of
``app``, ``agents``, ``schemas`` and the test kit (``tests.kit``) runs its examples, and
every ``>>>`` prompt that starts a line of a module's source is an example doctest finds
(one in a string doctest does not read, such as a plain string or the docstring of a
function defined inside another, would silently never run). A new module is covered
without being listed; ``app.cli.__main__`` is the one module left out, because importing
it runs the command line.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
from pathlib import Path
from types import ModuleType

import pytest

import agents
import app
import schemas
import tests.kit

#: Modules whose import does something: ``python -m app.cli`` runs the command line.
SKIP = {"app.cli.__main__"}
PROMPT = re.compile(r"^\s*>>> ", re.MULTILINE)


def _raise(name: str) -> None:
    raise ImportError(f"cannot import {name} to look for its modules")


def modules(*packages: ModuleType) -> list[str]:
    """Every module of ``packages``, the packages themselves included."""
    out = []
    for pkg in packages:
        out.append(pkg.__name__)
        walk = pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".", onerror=_raise)
        out.extend(m.name for m in walk)
    return sorted(set(out) - SKIP)


MODULES = modules(app, agents, schemas, tests.kit)


def test_every_package_is_walked() -> None:
    # the walk found each layer (a package it could not walk would show up as missing)
    for name in ("app.domain.engine", "app.service.ordering", "app.cli.main", "agents"):
        assert name in MODULES
    assert "tests.kit.builders" in MODULES and "app.cli.__main__" not in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__file__ is not None
    found = sum(len(t.examples) for t in doctest.DocTestFinder().find(module))
    prompts = len(PROMPT.findall(Path(module.__file__).read_text("utf-8")))
    assert found == prompts, f"{name}: {prompts} '>>>' in the source, {found} examples found"
    assert doctest.testmod(module).failed == 0
