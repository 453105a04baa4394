"""What every command module shares: the ``tierstream`` and ``tierstream policy`` Typers,
settings from options, reading input files, output files, the report of rejected lines, and
the mapping of errors to exit codes (:func:`main`). Command modules import only this (and
:mod:`app.cli.worker_http`); :mod:`app.cli.main` imports them all."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import typer

from app.errors import ConfigError, TierstreamError

if TYPE_CHECKING:
    from app.service.source import SourceLine
    from app.settings import Settings


cli = typer.Typer(
    name="tierstream",
    help="Real-time customer tiering on Kafka.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


policy_cli = typer.Typer(
    name="policy",
    help="Check tiering policies and list the features they can use.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
cli.add_typer(policy_cli, name="policy")


@cli.callback()
def _root() -> None:
    """Real-time customer tiering on Kafka: run `tierstream COMMAND --help` for details."""


FORMAT_HELP = "Input format: jsonl or csv (default: from the extension, .jsonl/.json/.csv)."
MAP_HELP = (
    "CSV column of each event field, FIELD=COLUMN[,FIELD=COLUMN...]; COLUMN is a header name "
    "or a 1-based index, FIELD any event field (event_id, customer_id, type, occurred_at, "
    "amount, ..., attributes.NAME). Repeatable."
)
DELIM_HELP = "CSV delimiter: one character, or comma, tab, semicolon, pipe, whitespace."
HEADER_HELP = "Whether the CSV's first row names the columns."
READ_NOTES = """

    Input: JSON Lines (one event object per line; a JSON array also works) or CSV. CSV
    values are parsed (numbers become numbers; text fields such as customer_id stay text),
    occurred_at may be ISO-8601, a date (1997-01-01 or 19970101) or epoch ms. A CSV row
    without event_id gets the deterministic id FILENAME:LINE; a row without type but with
    an amount is a purchase. A line with bytes that are not UTF-8 is an invalid line
    (malformed_json; a CSV row: invalid_encoding).
"""


def settings_from_options(**overrides: object) -> Settings:
    """Settings from the environment and options; invalid ones are a clean error (exit 2)."""
    from pydantic import ValidationError

    from app.settings import load_settings

    try:
        return load_settings(**overrides)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            name = "_".join(str(p) for p in e["loc"])
            problem = f"TIERSTREAM_{name.upper()}: {e['msg']}"
            # Our own validators name the value; say it for pydantic's too (not secrets).
            if e["type"] != "invalid_setting" and "password" not in name:
                problem += f" (got {e.get('input')!r})"
            problems.append(problem)
        raise ConfigError(f"invalid settings: {'; '.join(problems)}") from None


def read_lines(
    path: Path,
    fmt: str | None,
    map_: list[str] | None,
    delimiter: str | None,
    header: bool,
) -> Iterator[SourceLine]:
    from app.adapters.files import parse_map, read_events

    return read_events(path, fmt=fmt, mapping=parse_map(map_), delimiter=delimiter, header=header)


def open_out(path: Path | None, stack: contextlib.ExitStack) -> IO[bytes]:
    if path is None or str(path) == "-":
        return sys.stdout.buffer
    try:
        return stack.enter_context(path.open("wb"))
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from exc


def report_rejected(
    err: Any, rejected: list[tuple[int, str, str]], errors_out: Path | None, first: int = 5
) -> None:
    if not rejected:
        return
    err.print(f"[yellow]{len(rejected):,} invalid line(s)[/]; the first ones:")
    for line, reason, detail in rejected[:first]:
        err.print(f"  line {line}: {reason}: {detail}", markup=False, highlight=False)
    if errors_out is not None:
        err.print(f"  all of them are in {errors_out}", markup=False)


def main() -> None:
    try:
        cli()
    except TierstreamError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
