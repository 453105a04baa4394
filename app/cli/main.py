"""The umbrella of the command line: imports every command module (each registers itself on
the Typers of :mod:`app.cli._base`) in the order ``tierstream --help`` lists them. Nothing
imports this module but the entry point (``tierstream = "app.cli.main:main"``)."""

from __future__ import annotations

import importlib

from app.cli._base import cli, main

#: The command modules, in the order ``tierstream --help`` lists their commands (Typer
#: lists them in the order they were registered, that is imported).
COMMANDS = (
    "policy",
    "explain",
    "report",
    "broker",
    "worker",
    "classify",
    "fit",
    "produce",
    "simulate",
    "demo",
)
for _name in COMMANDS:
    importlib.import_module(f"app.cli.{_name}")

__all__ = ["COMMANDS", "cli", "main"]

if __name__ == "__main__":
    main()
