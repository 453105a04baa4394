"""``tierstream classify``: the core over a file equals ``replay()``; the CDNOW sample's RFM
equals ``lifetimes``; invalid lines are reported, not fatal."""

from __future__ import annotations

import random
import subprocess
import sys
from datetime import date
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from app.cli.main import cli
from app.domain.engine import tick
from app.domain.outputs import snapshot
from app.domain.replay import replay, sort_key
from app.tools.simulate import SimulationConfig, simulate
from schemas.codec import decode_event, encode_output, encode_snapshot
from tests.kit.policies import VALUE_TIERS_V2, VALUE_TIERS_V2_FILE

CDNOW = Path(__import__("lifetimes").__file__).parent / "datasets" / "CDNOW_sample.txt"
CDNOW_ARGS = [
    "--format",
    "csv",
    "--delimiter",
    "whitespace",
    "--no-header",
    "--map",
    "customer_id=1,occurred_at=3,quantity=4,amount=5",
]


def run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(cli, args)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def jsonl(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def shuffled_stream(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[bytes]]:
    """A simulated stream written out of order, with a few invalid lines mixed in."""
    sim = simulate(SimulationConfig(customers=150, days=400, seed=5, start=date(2023, 6, 1)))
    lines = [orjson.dumps(d) for d in sim.events]
    rng = random.Random(3)
    # Out of order: classify must sort (stably, like the reference below).
    rng.shuffle(lines)
    bad = [
        b"{not json",
        b'{"event_id":"x1","customer_id":"c1","type":"purchase","occurred_at":"2024-01-01"}',
        b'{"event_id":"x2","type":"visit","occurred_at":"2024-01-01"}',
        b"42",
    ]
    for i, b in enumerate(bad):
        lines.insert(10 + 50 * i, b)
    path = tmp_path_factory.mktemp("classify") / "stream.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path, lines


def test_classify_output_equals_replay_of_the_same_events(
    shuffled_stream: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    path, lines = shuffled_stream
    out, customers = tmp_path / "changes.jsonl", tmp_path / "customers.jsonl"
    outs = ["--out", str(out), "--customers-out", str(customers)]
    code, _ = run(["classify", str(path), "--policy", str(VALUE_TIERS_V2_FILE), *outs])
    assert code == 0

    # The reference: decode what decodes, stable sort by event time, replay, run what
    # falls due up to the last event time, order the outputs by time, encode.
    events = []
    for raw in lines:
        try:
            events.append(decode_event(raw))
        except Exception:
            continue
    policy = VALUE_TIERS_V2
    expected = replay(sorted(events, key=sort_key), policy)
    for state in expected.states.values():
        expected.outputs.extend(tick(state, expected.max_event_time, policy).outputs)
    expected.outputs.sort(key=lambda o: o.at)
    assert out.read_bytes() == b"".join(encode_output(o) + b"\n" for o in expected.outputs)
    assert customers.read_bytes() == b"".join(
        encode_snapshot(snapshot(s)) + b"\n" for _, s in sorted(expected.states.items())
    )
    assert expected.duplicates > 0 and len(expected.outputs) > 150


def test_classify_reports_invalid_lines_and_writes_them(
    shuffled_stream: tuple[Path, list[bytes]], tmp_path: Path
) -> None:
    path, _ = shuffled_stream
    errors = tmp_path / "errors.jsonl"
    code, output = run(
        ["classify", str(path), "--out", str(tmp_path / "o.jsonl"), "--errors-out", str(errors)]
    )
    assert code == 0
    assert "4 invalid line(s)" in output
    assert "line 11: malformed_json" in output
    rejected = jsonl(errors)
    assert [(r["line"], r["reason"]) for r in rejected] == [
        (11, "malformed_json"),
        (61, "missing_field"),
        (111, "missing_field"),
        (161, "not_an_object"),
    ]
    assert rejected[1]["detail"] == "required field 'amount' is missing"
    assert rejected[3]["raw"] == "42"
    # The summary table (rich, on stderr) names the counts.
    for word in ("events", "customers", "duplicates dropped", "tier changes", "tier D"):
        assert word in output


def cli_process(args: list[str]) -> subprocess.CompletedProcess[str]:
    """The real entry point (error handling and exit codes included)."""
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_classify_unreadable_file_or_bad_map_exits_2(tmp_path: Path) -> None:
    proc = cli_process(["classify", str(tmp_path / "nope.jsonl")])
    assert proc.returncode == 2 and "error: cannot read" in proc.stderr
    csv = tmp_path / "e.csv"
    csv.write_text("cust,ts\nc1,2024-01-01\n")
    proc = cli_process(["classify", str(csv), "--map", "customer_id=client"])
    assert proc.returncode == 2 and "no column named 'client'" in proc.stderr
    proc = cli_process(["classify", str(csv), "--as-of", "yesterday"])
    assert proc.returncode == 2 and "--as-of" in proc.stderr


def test_cdnow_sample_rfm_matches_lifetimes(tmp_path: Path) -> None:
    import pandas as pd
    from lifetimes.utils import summary_data_from_transaction_data

    customers = tmp_path / "customers.jsonl"
    code, output = run(
        [
            "classify",
            str(CDNOW),
            *CDNOW_ARGS,
            "--out",
            str(tmp_path / "changes.jsonl"),
            "--customers-out",
            str(customers),
            "--as-of",
            "1998-06-30",
        ]
    )
    assert code == 0, output
    assert "invalid" in output and "6,919" in output
    ours = {c["customer_id"]: c for c in jsonl(customers)}
    assert len(ours) == 2357

    df = pd.read_csv(
        CDNOW,
        sep=r"\s+",
        header=None,
        names=["customer_id", "customer_index", "date", "quantity", "amount"],
        dtype={"customer_id": str, "date": str},
    )
    df["date"] = pd.to_datetime(df["date"], format="%Y%m%d")
    ref = summary_data_from_transaction_data(
        df,
        "customer_id",
        "date",
        monetary_value_col="amount",
        observation_period_end="1998-06-30",
        freq="D",
    )
    assert set(ref.index) == set(ours)
    checked = 0
    for cid, row in ref.iterrows():
        rfm = ours[str(cid)]["rfm"]
        assert isinstance(rfm, dict)
        assert rfm["frequency"] == int(row["frequency"]), cid
        assert rfm["recency"] == int(row["recency"]), cid
        assert rfm["T"] == int(row["T"]), cid
        assert rfm["monetary_value"] == pytest.approx(row["monetary_value"], abs=1e-6), cid
        checked += 1
    assert checked == 2357
    # --as-of advances everyone to that date: tiers agree with the reported aggregates.
    assert "advanced to" in output and "1998-06-30T00:00:00.000Z" in output
    for c in ours.values():
        rolling = c["rolling"]
        assert isinstance(rolling, dict)
        if rolling["spend_90d"] < 100 and rolling["spend_365d"] < 1000:
            assert c["tier"] == "D", c
    # A few by hand, from the file: customer 00004 bought on 4 days in 1997.
    assert ours["00004"]["rfm"] == {
        "frequency": 3,
        "recency": 345,
        "T": 545,
        "monetary_value": pytest.approx((29.73 + 14.96 + 26.48) / 3),
    }


def test_cdnow_own_clock_default(tmp_path: Path) -> None:
    """Without --as-of everyone is advanced to the last event time of the file and reported
    as of their last evaluation: the last event, or the last re-evaluation that fell due
    after it (here: silence making 00004, last seen 1997-12-12, at risk 90 days later)."""
    customers = tmp_path / "customers.jsonl"
    code, _ = run(
        ["classify", str(CDNOW), *CDNOW_ARGS, "-o", "-", "--customers-out", str(customers), "-q"]
    )
    assert code == 0
    first = jsonl(customers)[0]
    assert first["customer_id"] == "00004"
    at_risk = first["last_purchase_at"] + 90 * 86_400_000  # 90 days of silence
    assert (first["stage"], first["stage_since"]) == ("at_risk", at_risk)
    assert first["as_of"] == at_risk + 1  # the last re-evaluation: 1 ms past the threshold
    rfm = first["rfm"]
    assert isinstance(rfm, dict) and rfm["recency"] == 345 and rfm["T"] == 345 + 90


def test_classify_rejects_far_future_events_like_the_worker(tmp_path: Path) -> None:
    path = tmp_path / "future.jsonl"
    path.write_text(
        '{"event_id":"a","customer_id":"c1","type":"purchase","occurred_at":"2024-01-01",'
        '"amount":5}\n'
        '{"event_id":"b","customer_id":"c1","type":"purchase","occurred_at":"2099-01-01",'
        '"amount":5}\n'
    )
    errors = tmp_path / "errors.jsonl"
    code, output = run(["classify", str(path), "-o", "-", "--errors-out", str(errors)])
    assert "1 invalid line(s)" in output
    assert code == 0
    assert [(r["line"], r["reason"]) for r in jsonl(errors)] == [(2, "timestamp_in_future")]


def test_classify_reads_stdin() -> None:
    line = (
        '{"event_id":"a","customer_id":"c1","type":"purchase",'
        '"occurred_at":"2024-01-01","amount":150}'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "classify", "-", "-q"],
        input=line + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    outputs = [orjson.loads(x) for x in proc.stdout.splitlines()]
    (change,) = [o for o in outputs if o["type"] == "io.tierstream.tier.changed.v1"]
    assert change["data"]["to_tier"] == "C" and change["data"]["direction"] == "new"
