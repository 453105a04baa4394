"""The command line is one module per command (``app/cli``): every command module is
registered by ``app.cli.main``, and commands never import each other -- only what they
share, ``app.cli._base`` and ``app.cli.worker_http``."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli.main import COMMANDS
from tests.contracts.test_layers import ROOT, imports_of, module_of

CLI = ROOT / "app" / "cli"
SHARED = {"_base", "worker_http", "main", "__init__", "__main__"}
MODULES = sorted(p for p in CLI.glob("*.py") if p.stem not in SHARED)


def test_every_command_module_is_registered() -> None:
    assert sorted(COMMANDS) == [p.stem for p in MODULES]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_commands_do_not_import_each_other(path: Path) -> None:
    me = module_of(path)
    for name in imports_of(path):
        if name.startswith("app.cli."):
            target = name.split(".")[2]
            assert target in ("_base", "worker_http"), f"{me} imports {name}"
