"""Reading input event files (JSON Lines, JSON arrays, CSV) into plain dict documents.

The documents are what ``schemas.decode_event`` and the input topics take, so a file read
here is decoded exactly like a message the worker consumes. Reading never raises on a bad
line: every line comes back as a :class:`SourceLine` with either a document or the reason
it could not become one. Only an unreadable file or a bad column mapping raises
:class:`InputError`.

CSV specifics (``--format csv``):

- ``--map field=COLUMN,...`` names the column of each event field; ``COLUMN`` is a header
  name or a 1-based index. Without a header only indexes work and only mapped columns are
  used; with a header every column is kept under its own name unless mapped.
  ``attributes.NAME=COLUMN`` fills a profile attribute.
- Values are parsed: numbers become numbers (except the text fields such as ``customer_id``,
  whose leading zeros matter), empty cells are left out, and ``occurred_at`` may be
  ISO-8601, date-only (``1997-01-01``), compact (``19970101``) or epoch milliseconds.
- A row without ``event_id`` gets a deterministic one, ``FILENAME:LINE``; a row without
  ``type`` but with ``amount`` is a ``purchase``.

Bytes that are not UTF-8 are read with ``surrogateescape`` (each undecodable byte becomes
one of U+DC80..U+DCFF, which valid UTF-8 never decodes to), so one bad byte spoils only its
own line: a JSON line or array element with one is ``malformed_json`` (the reason the worker
gives the same bytes), a CSV row ``invalid_encoding``; the detail names the byte and where
it is, and ``raw`` shows it escaped (``\\xff``). Only a CSV header with such a byte stops the
read (:class:`InputError`): its column names cannot be trusted.
"""

from __future__ import annotations

import csv
import io
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import orjson

from app.domain.errors import TierstreamError
from app.service.source import SourceLine

Format = Literal["jsonl", "csv"]
FORMATS: tuple[str, ...] = ("jsonl", "csv")

#: Fields that always stay text in CSV (identifiers keep their leading zeros).
TEXT_FIELDS = frozenset(
    {"event_id", "customer_id", "type", "kind", "currency", "order_id", "category", "channel"}
)
#: Named delimiters accepted by ``--delimiter`` besides a single character.
DELIMITERS = {"comma": ",", "tab": "\t", "\\t": "\t", "semicolon": ";", "pipe": "|"}
WHITESPACE = "whitespace"

_COMPACT_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
#: An undecodable byte as ``surrogateescape`` decodes it (byte 0xXY -> U+DCXY).
_UNDECODABLE = re.compile("[\udc80-\udcff]")


class InputError(TierstreamError):
    """The input file cannot be read as asked (missing file, bad ``--map``, bad format)."""


def detect_format(path: Path, fmt: str | None = None) -> Format:
    """``fmt`` if given, else from the extension: .jsonl/.ndjson/.json -> jsonl, .csv/.tsv/.txt
    -> csv."""
    if fmt is not None:
        f = fmt.lower()
        if f in ("json", "ndjson"):
            f = "jsonl"
        if f not in FORMATS:
            raise InputError(f"unknown format {fmt!r} (one of: {', '.join(FORMATS)})")
        return f  # type: ignore[return-value]
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix in (".csv", ".tsv", ".txt"):
        return "csv"
    raise InputError(
        f"cannot tell the format of {path.name!r} from its extension: pass --format jsonl|csv"
    )


def parse_map(spec: str | Iterable[str] | None) -> dict[str, str]:
    """``"customer_id=2,occurred_at=date"`` -> ``{"customer_id": "2", ...}`` (field -> column).

    Several specs (a repeated option) are merged. Raises :class:`InputError` on a malformed
    entry or a field mapped twice.
    """
    if spec is None:
        return {}
    specs = [spec] if isinstance(spec, str) else list(spec)
    mapping: dict[str, str] = {}
    for s in specs:
        for raw_item in s.split(","):
            item = raw_item.strip()
            if not item:
                continue
            field, sep, column = item.partition("=")
            field, column = field.strip(), column.strip()
            if not sep or not field or not column:
                raise InputError(f"--map entry {item!r} must look like FIELD=COLUMN")
            if not _FIELD_NAME.match(field):
                raise InputError(f"--map entry {item!r}: {field!r} is not a valid field name")
            if field in mapping:
                raise InputError(f"--map maps {field!r} twice")
            mapping[field] = column
    return mapping


def resolve_delimiter(delimiter: str | None) -> str | None:
    """``None`` -> ``,``; names (``tab``, ``whitespace``, ...) -> the character, or ``None``
    meaning "runs of whitespace"."""
    if delimiter is None:
        return ","
    if delimiter.lower() == WHITESPACE:
        return None
    if delimiter.lower() in DELIMITERS:
        return DELIMITERS[delimiter.lower()]
    if len(delimiter) != 1:
        raise InputError(
            f"--delimiter {delimiter!r}: give one character or one of "
            f"{', '.join([*DELIMITERS, WHITESPACE])}"
        )
    return delimiter


def read_events(
    path: Path | str,
    *,
    fmt: str | None = None,
    mapping: Mapping[str, str] | None = None,
    delimiter: str | None = None,
    header: bool = True,
) -> Iterator[SourceLine]:
    """Read an event file (``-``: standard input); see the module docstring for the CSV
    rules.

    Raises :class:`InputError` (before yielding anything) when the file cannot be opened or
    the mapping names a column that does not exist.
    """
    p = Path(path)
    handle: Any
    if str(path) == "-":  # standard input; JSON Lines unless --format says otherwise
        kind = detect_format(p, fmt or "jsonl")
        p = Path("stdin")
        handle = io.TextIOWrapper(
            sys.stdin.buffer, encoding="utf-8-sig", errors="surrogateescape", newline=""
        )
    else:
        kind = detect_format(p, fmt)
        try:
            handle = p.open("r", encoding="utf-8-sig", errors="surrogateescape", newline="")
        except OSError as exc:
            raise InputError(f"cannot read {p}: {exc.strerror or exc}") from exc
    if kind == "jsonl":
        if delimiter is not None or not header:
            handle.close()
            raise InputError("--delimiter and --no-header apply to CSV input only")
        return _read_json(handle, dict(mapping or {}))
    try:
        return _read_csv(handle, p.name, dict(mapping or {}), resolve_delimiter(delimiter), header)
    except BaseException:
        handle.close()
        raise


def _read_json(handle: Any, mapping: dict[str, str]) -> Iterator[SourceLine]:
    with handle:
        first = handle.read(1)
        skipped = 0  # blank lines before the first non-blank character
        while first and first.isspace():
            skipped += first == "\n"
            first = handle.read(1)
        if first == "[":  # a JSON array of objects
            yield from _json_array(first + handle.read(), skipped + 1, mapping)
            return
        number = skipped
        pending = first
        for raw_line in handle:
            number += 1
            line = pending + raw_line if pending else raw_line
            pending = ""
            text = line.strip()
            if not text:
                continue
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                bad = _UNDECODABLE.search(line)
                if bad is None:
                    yield SourceLine(number, text, reason="malformed_json", detail=str(exc))
                else:  # orjson refuses the surrogates: say which byte is not UTF-8
                    detail = f"{_not_utf8(bad)} at column {bad.start() + 1}"
                    yield SourceLine(
                        number, printable(text), reason="malformed_json", detail=detail
                    )
                continue
            yield _json_doc(number, text, value, mapping)
        if pending.strip():  # a one-character file
            yield SourceLine(
                number + 1, printable(pending), reason="malformed_json", detail="not JSON"
            )


def _json_array(text: str, first_line: int, mapping: dict[str, str]) -> Iterator[SourceLine]:
    """The elements of a JSON array file (``line``: the element number). Elements holding
    bytes that are not UTF-8 are ``malformed_json``, the others are read as usual."""
    bad = _UNDECODABLE.search(text)
    marker = _unused_char(text) if bad is not None else None
    try:
        # orjson refuses the surrogates anywhere: stand a character the text does not
        # contain in for them, then find the elements that hold it.
        items = orjson.loads(text if marker is None else _UNDECODABLE.sub(marker, text))
    except orjson.JSONDecodeError as exc:
        detail = str(exc)
        if bad is not None:
            line = first_line + text.count("\n", 0, bad.start())
            column = bad.start() - text.rfind("\n", 0, bad.start())
            detail = f"{_not_utf8(bad)} at line {line} column {column}; the array was not read"
        yield SourceLine(1, printable(text[:200]), reason="malformed_json", detail=detail)
        return
    for i, item in enumerate(items, 1):
        raw = orjson.dumps(item).decode()
        if marker is not None and marker in raw:
            yield SourceLine(
                i,
                raw.replace(marker, "\ufffd"),
                reason="malformed_json",
                detail="not valid UTF-8 (the bytes that are not are shown as U+FFFD)",
            )
            continue
        yield _json_doc(i, raw, item, mapping)


def _unused_char(text: str) -> str | None:
    """A private-use character that ``text`` does not contain (None if it has them all)."""
    for code in range(0xE000, 0xF900):
        if chr(code) not in text:
            return chr(code)
    return None


def _not_utf8(match: re.Match[str]) -> str:
    return f"not valid UTF-8: byte 0x{ord(match.group()) - 0xDC00:02X}"


def printable(text: str) -> str:
    """``text`` with each byte that was not UTF-8 written as ``\\xNN`` (encodable again)."""
    if _UNDECODABLE.search(text) is None:
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _json_doc(number: int, raw: str, value: Any, mapping: dict[str, str]) -> SourceLine:
    if not isinstance(value, dict):
        return SourceLine(
            number,
            raw,
            reason="not_an_object",
            detail=f"an event must be a JSON object, got {type(value).__name__}",
        )
    if mapping:
        doc = {k: v for k, v in value.items() if k not in mapping.values()}
        for field, source in mapping.items():
            if source in value:
                _put(doc, field, value[source])
        value = doc
    return SourceLine(number, raw, doc=value)


def _split_whitespace(handle: Any) -> Iterator[tuple[int, list[str] | str]]:
    for number, line in enumerate(handle, 1):
        cells = line.split()
        if cells:
            yield number, cells


def _split_csv(handle: Any, delimiter: str) -> Iterator[tuple[int, list[str] | str]]:
    """(line number, cells) per row, or (line number, what is wrong) for a row the csv
    module refuses (a field over its size limit); reading goes on after it."""
    reader = csv.reader(handle, delimiter=delimiter)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield reader.line_num, str(exc)
            continue
        if row and any(cell.strip() for cell in row):
            yield reader.line_num, row


def _read_csv(
    handle: Any, file_name: str, mapping: dict[str, str], delimiter: str | None, header: bool
) -> Iterator[SourceLine]:
    rows = _split_whitespace(handle) if delimiter is None else _split_csv(handle, delimiter)
    names: list[str] | None = None
    if header:
        first = next(rows, None)
        if first is None:
            handle.close()
            return iter(())
        number, cells = first
        if isinstance(cells, str):
            handle.close()
            raise InputError(f"{file_name} line {number}: the header cannot be read: {cells}")
        names = [c.strip() for c in cells]
        for i, name in enumerate(names, 1):
            bad = _UNDECODABLE.search(name)
            if bad is not None:
                handle.close()
                raise InputError(
                    f"{file_name} line {number}: the header is {_not_utf8(bad)} in column {i}"
                )
    elif not mapping:
        handle.close()
        raise InputError("--no-header needs --map to say which column holds which field")
    columns = _resolve_columns(mapping, names)
    return _csv_docs(handle, rows, file_name, columns, names, delimiter)


def _resolve_columns(mapping: dict[str, str], names: list[str] | None) -> dict[str, int]:
    """field -> 0-based column index; clear errors for unknown names and bad indexes."""
    out: dict[str, int] = {}
    for field, column in mapping.items():
        if names is not None and column in names:
            out[field] = names.index(column)
        elif column.isdigit():
            index = int(column)
            if index < 1:
                raise InputError(f"--map {field}={column}: column indexes start at 1")
            if names is not None and index > len(names):
                raise InputError(f"--map {field}={column}: the file has only {len(names)} columns")
            out[field] = index - 1
        elif names is None:
            raise InputError(
                f"--map {field}={column}: without a header, address columns by 1-based index"
            )
        else:
            raise InputError(
                f"--map {field}={column}: no column named {column!r} "
                f"(columns: {', '.join(names) or 'none'})"
            )
    return out


def _csv_docs(
    handle: Any,
    rows: Iterator[tuple[int, list[str] | str]],
    file_name: str,
    columns: dict[str, int],
    names: list[str] | None,
    delimiter: str | None,
) -> Iterator[SourceLine]:
    mapped = set(columns.values())
    joiner = " " if delimiter is None else delimiter
    with handle:
        for number, cells in rows:
            if isinstance(cells, str):
                yield SourceLine(number, "", reason="bad_row", detail=cells)
                continue
            raw = joiner.join(cells)
            bad_cell = _bad_cell(cells)
            if bad_cell is not None:
                yield SourceLine(number, printable(raw), reason="invalid_encoding", detail=bad_cell)
                continue
            doc: dict[str, Any] = {}
            if names is not None:
                if len(cells) != len(names):
                    yield SourceLine(
                        number,
                        raw,
                        reason="bad_row",
                        detail=f"{len(cells)} columns where the header has {len(names)}",
                    )
                    continue
                for i, (name, cell) in enumerate(zip(names, cells, strict=True)):
                    if i not in mapped and name and name not in columns:
                        _put_cell(doc, name, cell)
            missing = [f for f, i in columns.items() if i >= len(cells)]
            if missing:
                yield SourceLine(
                    number,
                    raw,
                    reason="bad_row",
                    detail=f"only {len(cells)} columns; no column for {', '.join(missing)}",
                )
                continue
            for field, index in columns.items():
                _put_cell(doc, field, cells[index])
            if "event_id" not in doc:
                doc["event_id"] = f"{file_name}:{number}"
            if "type" not in doc and "amount" in doc:
                doc["type"] = "purchase"
            yield SourceLine(number, raw, doc=doc)


def _bad_cell(cells: list[str]) -> str | None:
    """What is wrong with the first cell holding a byte that is not UTF-8, if any."""
    for i, cell in enumerate(cells, 1):
        bad = _UNDECODABLE.search(cell)
        if bad is not None:
            return f"{_not_utf8(bad)} in column {i}"
    return None


def _put_cell(doc: dict[str, Any], field: str, cell: str) -> None:
    text = cell.strip()
    if not text:
        return
    _put(doc, field, parse_cell(field, text))


def _put(doc: dict[str, Any], field: str, value: Any) -> None:
    if field.startswith("attributes.") and len(field) > len("attributes."):
        attrs = doc.setdefault("attributes", {})
        if isinstance(attrs, dict):
            attrs[field[len("attributes.") :]] = value
            return
    doc[field] = value


def parse_cell(field: str, text: str) -> Any:
    """A CSV cell as a JSON value: text fields stay text, ``occurred_at`` becomes ISO-8601 or
    epoch ms, anything that looks like a number becomes one."""
    if field in TEXT_FIELDS:
        return text
    if field == "occurred_at":
        m = _COMPACT_DATE.match(text)
        if m:
            return f"{m.group(1)}-{m.group(2)}-{m.group(3)}"
        if _INT.match(text):
            return int(text)
        if _FLOAT.match(text):
            return float(text)
        return text
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    return text
