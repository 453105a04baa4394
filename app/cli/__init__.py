"""The ``tierstream`` command line: one module per command (as Faust's ``faust/cli/``).

:mod:`app.cli._base` holds what they share; :mod:`app.cli.main` imports every command and
is the entry point (``tierstream = "app.cli.main:main"``; ``python -m app.cli``).
"""
