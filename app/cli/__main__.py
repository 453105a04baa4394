"""``python -m app.cli``: the ``tierstream`` command line."""

from app.cli.main import main

main()
