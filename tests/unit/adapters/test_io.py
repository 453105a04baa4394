"""Reading event files: JSON Lines, JSON arrays, CSV with --map, date-only timestamps."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.adapters.files import (
    InputError,
    SourceLine,
    detect_format,
    parse_cell,
    parse_map,
    read_events,
)
from schemas.codec import decode_event


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def docs(lines: list[SourceLine]) -> list[dict[str, object]]:
    return [sl.doc for sl in lines if sl.doc is not None]


# --- JSON -------------------------------------------------------------------------------


def test_jsonl_lines_bad_lines_and_line_numbers(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "e.jsonl",
        "\n"
        '{"event_id":"e1","customer_id":"c1","type":"purchase","occurred_at":"2024-01-01","amount":5}\n'
        "not json\n"
        "\n"
        "[1, 2]\n"
        '{"event_id":"e2","customer_id":"c1","type":"visit","occurred_at":1704067200000}\n',
    )
    lines = list(read_events(p))
    assert [(sl.line, sl.reason) for sl in lines] == [
        (2, None),
        (3, "malformed_json"),
        (5, "not_an_object"),
        (6, None),
    ]
    assert lines[1].raw == "not json"
    assert [decode_event(d).event_id for d in docs(lines)] == ["e1", "e2"]


def test_json_array_file(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "e.json",
        '[{"event_id":"e1","customer_id":"c1","type":"visit","occurred_at":"2024-01-01"}, 3]',
    )
    lines = list(read_events(p))
    assert lines[0].doc is not None and lines[0].doc["event_id"] == "e1"
    assert (lines[1].line, lines[1].reason) == (2, "not_an_object")


def test_jsonl_map_renames_fields(tmp_path: Path) -> None:
    p = write(tmp_path, "e.jsonl", '{"id":"e1","cust":"c1","type":"visit","ts":"2024-01-01"}\n')
    (line,) = read_events(p, mapping=parse_map("event_id=id,customer_id=cust,occurred_at=ts"))
    assert line.doc == {
        "event_id": "e1",
        "customer_id": "c1",
        "type": "visit",
        "occurred_at": "2024-01-01",
    }


# --- CSV --------------------------------------------------------------------------------


def test_csv_with_header_keeps_columns_and_parses_values(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "orders.csv",
        "customer_id,occurred_at,amount,quantity,channel,note\n"
        "007,2024-03-05,19.5,2,web,\n"
        "008,20240306,-3,1,store,gift\n",
    )
    lines = list(read_events(p))
    assert [sl.line for sl in lines] == [2, 3]
    first, second = docs(lines)
    # Leading zeros of identifiers survive; numbers are numbers; empty cells are left out.
    assert first == {
        "customer_id": "007",
        "occurred_at": "2024-03-05",
        "amount": 19.5,
        "quantity": 2,
        "channel": "web",
        "event_id": "orders.csv:2",
        "type": "purchase",
    }
    assert second["amount"] == -3 and second["note"] == "gift"
    assert second["occurred_at"] == "2024-03-06"
    ev = decode_event(second)
    assert (ev.kind, ev.amount, ev.occurred_at) == ("purchase", -3.0, ms(2024, 3, 6))


def test_csv_map_by_name_and_index_and_attributes(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "crm.csv",
        "who;when;what;sector\nc1;2024-01-02T10:00:00Z;profile;retail\n",
    )
    mapping = parse_map(["customer_id=who,occurred_at=2", "type=what,attributes.industry=sector"])
    (line,) = read_events(p, delimiter="semicolon", mapping=mapping)
    assert line.doc == {
        "customer_id": "c1",
        "occurred_at": "2024-01-02T10:00:00Z",
        "type": "profile",
        "attributes": {"industry": "retail"},
        "event_id": "crm.csv:2",
    }
    ev = decode_event(line.doc)
    assert ev.kind == "profile" and ev.attributes == {"industry": "retail"}


def test_csv_whitespace_no_header_like_cdnow(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "CDNOW_sample.txt",
        " 00004 0001 19970101  2   29.33\n\n 00004 0001 19970118  2   29.73\n",
    )
    mapping = parse_map("customer_id=1,occurred_at=3,quantity=4,amount=5")
    lines = list(read_events(p, fmt="csv", delimiter="whitespace", header=False, mapping=mapping))
    assert [sl.line for sl in lines] == [1, 3]
    events = [decode_event(d) for d in docs(lines)]
    assert [e.customer_id for e in events] == ["00004", "00004"]
    assert [e.occurred_at for e in events] == [ms(1997, 1, 1), ms(1997, 1, 18)]
    assert [e.amount for e in events] == [29.33, 29.73]
    assert [e.event_id for e in events] == ["CDNOW_sample.txt:1", "CDNOW_sample.txt:3"]
    assert {e.type for e in events} == {"purchase"}


def test_csv_bad_rows_are_reported_not_raised(tmp_path: Path) -> None:
    p = write(tmp_path, "e.csv", "customer_id,amount\nc1,5\nc2\nc3,7,8\n")
    lines = list(read_events(p))
    assert [(sl.line, sl.reason) for sl in lines] == [(2, None), (3, "bad_row"), (4, "bad_row")]
    p2 = write(tmp_path, "n.txt", "a b c\nx y\n")
    lines = list(
        read_events(p2, header=False, delimiter="whitespace", mapping={"customer_id": "3"})
    )
    assert [(sl.line, sl.reason) for sl in lines] == [(1, None), (2, "bad_row")]
    assert lines[1].detail is not None and "customer_id" in lines[1].detail


@pytest.mark.parametrize(
    ("field", "text", "value"),
    [
        ("occurred_at", "1997-01-01", "1997-01-01"),
        ("occurred_at", "19970101", "1997-01-01"),
        ("occurred_at", "1704067200000", 1704067200000),
        ("occurred_at", "1704067200000.5", 1704067200000.5),
        ("occurred_at", "2024-01-01 10:00:00", "2024-01-01 10:00:00"),
        ("occurred_at", "2024-01-01T00:00:00+02:00", "2024-01-01T00:00:00+02:00"),
        ("amount", "12", 12),
        ("amount", "-1.5e2", -150.0),
        ("amount", "abc", "abc"),
        ("customer_id", "0012", "0012"),
        ("order_id", "123", "123"),
        ("flag", "TRUE", True),
    ],
)
def test_parse_cell(field: str, text: str, value: object) -> None:
    assert parse_cell(field, text) == value


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1997-01-01", ms(1997, 1, 1)), ("19970101", ms(1997, 1, 1))],
)
def test_date_only_timestamps_decode(text: str, expected: int) -> None:
    doc = {
        "event_id": "e",
        "customer_id": "c",
        "type": "purchase",
        "occurred_at": parse_cell("occurred_at", text),
        "amount": 1,
    }
    assert decode_event(doc).occurred_at == expected


# --- bytes that are not UTF-8 -------------------------------------------------------------

EVENT = b'{"event_id":"%s","customer_id":"c1","type":"visit","occurred_at":"2024-01-01"}'


def test_jsonl_line_with_a_bad_byte_is_malformed_and_the_rest_is_read(tmp_path: Path) -> None:
    p = tmp_path / "e.jsonl"
    # \xef\xbb\xbf: a BOM still goes; \xe9 alone (Latin-1 e-acute) and a truncated
    # 3-byte sequence are not UTF-8.
    p.write_bytes(
        b"\xef\xbb\xbf" + EVENT % b"e1" + b"\n" + EVENT % b"caf\xe9" + b"\n"
        b"\n" + EVENT % b"e\xe2\x82" + b"\n" + EVENT % b"e2" + b"\n" + b"\xff\n"
    )
    lines = list(read_events(p))
    assert [(sl.line, sl.reason) for sl in lines] == [
        (1, None),
        (2, "malformed_json"),
        (4, "malformed_json"),
        (5, None),
        (6, "malformed_json"),
    ]
    assert [decode_event(d).event_id for d in docs(lines)] == ["e1", "e2"]
    assert lines[1].detail == "not valid UTF-8: byte 0xE9 at column 17"
    assert lines[2].detail == "not valid UTF-8: byte 0xE2 at column 15"
    # raw shows the bytes escaped, and can be written out again (errors-out is JSON).
    assert lines[1].raw == (EVENT % b"caf\\xe9").decode()
    assert lines[2].raw.encode() == EVENT % b"e\\xe2\\x82"


def test_json_array_element_with_a_bad_byte_is_malformed_the_others_read(
    tmp_path: Path,
) -> None:
    p = tmp_path / "e.json"
    # U+E000 (private use), the first stand-in the reader would try, is in a good element.
    p.write_bytes(
        b"[\n"
        + EVENT % "e\ue000".encode()
        + b",\n"
        + EVENT % b"x\xff"
        + b",\n"
        + EVENT % b"e2"
        + b"\n]\n"
    )
    lines = list(read_events(p))
    assert [(sl.line, sl.reason) for sl in lines] == [(1, None), (2, "malformed_json"), (3, None)]
    assert [decode_event(d).event_id for d in docs(lines)] == ["e\ue000", "e2"]
    assert "\ufffd" in lines[1].raw and "not valid UTF-8" in (lines[1].detail or "")


def test_json_array_with_a_bad_byte_outside_strings_names_its_place(tmp_path: Path) -> None:
    p = tmp_path / "e.json"
    p.write_bytes(b"\n[\n" + EVENT % b"e1" + b",\n \xff" + EVENT % b"e2" + b"]")
    (line,) = read_events(p)
    assert line.reason == "malformed_json"
    assert line.detail == "not valid UTF-8: byte 0xFF at line 4 column 2; the array was not read"


def test_csv_row_with_a_bad_byte_is_invalid_encoding(tmp_path: Path) -> None:
    p = tmp_path / "e.csv"
    p.write_bytes(b"customer_id,amount,note\nc1,5,ok\nc2,6,caf\xe9\nc3,7,\n")
    lines = list(read_events(p))
    assert [(sl.line, sl.reason) for sl in lines] == [
        (2, None),
        (3, "invalid_encoding"),
        (4, None),
    ]
    assert lines[1].detail == "not valid UTF-8: byte 0xE9 in column 3"
    assert lines[1].raw == "c2,6,caf\\xe9"
    assert [d["customer_id"] for d in docs(lines)] == ["c1", "c3"]
    ws = tmp_path / "w.txt"
    ws.write_bytes(b"c1 2024-01-01 5\nc\x802 2024-01-02 6\n")
    mapping = parse_map("customer_id=1,occurred_at=2,amount=3")
    lines = list(read_events(ws, fmt="csv", delimiter="whitespace", header=False, mapping=mapping))
    assert [(sl.line, sl.reason) for sl in lines] == [(1, None), (2, "invalid_encoding")]


def test_csv_header_with_a_bad_byte_stops_the_read(tmp_path: Path) -> None:
    p = tmp_path / "e.csv"
    p.write_bytes(b"customer_id,am\xf6unt\nc1,5\n")
    with pytest.raises(InputError, match=r"e.csv line 1: the header is not valid UTF-8: byte 0xF6"):
        read_events(p)


def test_csv_field_over_the_csv_module_limit_is_a_bad_row(tmp_path: Path) -> None:
    p = write(tmp_path, "e.csv", "customer_id,note\nc1," + "x" * 200_000 + "\nc2,ok\n")
    lines = list(read_events(p))
    assert [(sl.line, sl.reason) for sl in lines] == [(2, "bad_row"), (3, None)]
    assert "field larger than field limit" in (lines[0].detail or "")


# --- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("customer_id", "must look like FIELD=COLUMN"),
        ("customer_id=", "must look like FIELD=COLUMN"),
        ("=3", "must look like FIELD=COLUMN"),
        ("customer id=3", "not a valid field name"),
        ("amount=1,amount=2", "maps 'amount' twice"),
    ],
)
def test_bad_map_spec(spec: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_map(spec)


def test_map_unknown_column_names_the_columns(tmp_path: Path) -> None:
    p = write(tmp_path, "e.csv", "cust,ts,amt\nc1,2024-01-01,3\n")
    with pytest.raises(InputError, match=r"no column named 'amount' \(columns: cust, ts, amt\)"):
        read_events(p, mapping=parse_map("customer_id=cust,amount=amount"))


def test_map_index_out_of_range_and_zero(tmp_path: Path) -> None:
    p = write(tmp_path, "e.csv", "cust,ts\nc1,2024-01-01\n")
    with pytest.raises(InputError, match="only 2 columns"):
        read_events(p, mapping={"amount": "3"})
    with pytest.raises(InputError, match="start at 1"):
        read_events(p, mapping={"amount": "0"})


def test_no_header_needs_map_and_indexes(tmp_path: Path) -> None:
    p = write(tmp_path, "e.csv", "c1,2024-01-01,3\n")
    with pytest.raises(InputError, match="--no-header needs --map"):
        read_events(p, header=False)
    with pytest.raises(InputError, match="1-based index"):
        read_events(p, header=False, mapping={"customer_id": "cust"})


def test_format_detection_and_errors(tmp_path: Path) -> None:
    assert detect_format(Path("a.JSONL")) == "jsonl"
    assert detect_format(Path("a.json")) == "jsonl"
    assert detect_format(Path("a.csv")) == "csv"
    assert detect_format(Path("a.data"), "json") == "jsonl"
    with pytest.raises(InputError, match="--format"):
        detect_format(Path("a.data"))
    with pytest.raises(InputError, match="unknown format"):
        detect_format(Path("a.csv"), "xml")
    with pytest.raises(InputError, match="cannot read"):
        read_events(tmp_path / "missing.jsonl")
    with pytest.raises(InputError, match="one character"):
        read_events(write(tmp_path, "x.csv", "a\n"), delimiter="::")
    with pytest.raises(InputError, match="CSV input only"):
        read_events(write(tmp_path, "x.jsonl", "{}\n"), header=False)
