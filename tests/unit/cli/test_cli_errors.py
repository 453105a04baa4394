"""Mistakes a user makes get one clear line and the documented exit code, never a traceback:
bytes that are not UTF-8 in an input file are an invalid line like any other (``classify``,
``fit``, ``policy diff --events``; ``produce``, which needs a broker, is in
``tests/integration/test_cli_broker.py``); ``broker`` on a port in use, ``worker`` with a
bad setting, an unreachable broker or a missing store driver exit 2. No broker here."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner, Result

from app.adapters import broker as broker_mod
from app.adapters.broker import LocalBroker, free_port
from app.cli.main import cli
from app.errors import BrokerError, ConfigError
from app.settings import load_settings
from app.tools.simulate import SimulationConfig, simulate

ROOT = Path(__file__).resolve().parents[3]
ABCD = ROOT / "examples" / "value-tiers-abcd.yaml"
TIERSTREAM = str(Path(sys.executable).with_name("tierstream"))

#: A line whose event id holds Latin-1 e-acute (0xE9): not UTF-8.
BAD_LINE = (
    b'{"event_id":"caf\xe9","customer_id":"c00001","type":"purchase",'
    b'"occurred_at":"2024-02-01T00:00:00Z","amount":10}'
)
BAD_AT = 8  # its line number in the file


def invoke(args: list[str], stdin: bytes | None = None) -> Result:
    result = CliRunner().invoke(cli, args, input=stdin)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback is the bug these tests look for
    return result


def bad_byte_files(base: Path) -> tuple[Path, Path]:
    """The same simulated stream twice under ``base`` (same file name, for `fit`'s
    source): as it is, and with BAD_LINE inserted."""
    sim = simulate(SimulationConfig(customers=60, days=200, seed=3, start=date(2024, 1, 1)))
    lines = [orjson.dumps(d) for d in sim.events]
    (base / "good").mkdir()
    (base / "bad").mkdir()
    good, bad = base / "good" / "events.jsonl", base / "bad" / "events.jsonl"
    good.write_bytes(b"\n".join(lines) + b"\n")
    bad.write_bytes(b"\n".join([*lines[: BAD_AT - 1], BAD_LINE, *lines[BAD_AT - 1 :]]) + b"\n")
    return good, bad


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return bad_byte_files(tmp_path_factory.mktemp("bad-bytes"))


def test_classify_reports_the_bad_byte_line_and_goes_on(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    good, bad = files
    outs = {}
    for name, path in (("good", good), ("bad", bad)):
        out, errors = tmp_path / f"{name}.out", tmp_path / f"{name}.errors"
        result = invoke(["classify", str(path), "-o", str(out), "--errors-out", str(errors)])
        assert result.exit_code == 0, result.output
        outs[name] = (out.read_bytes(), result.output, errors)
    assert outs["bad"][0] == outs["good"][0]  # everything else classified the same
    assert outs["good"][0]  # (there are tier changes to compare)
    assert f"line {BAD_AT}: malformed_json: not valid UTF-8: byte 0xE9" in outs["bad"][1]
    (rejected,) = [orjson.loads(x) for x in outs["bad"][2].read_bytes().splitlines()]
    assert rejected["line"] == BAD_AT and rejected["reason"] == "malformed_json"
    assert "caf\\xe9" in rejected["raw"]


def test_classify_from_stdin_reports_the_bad_byte_line(files: tuple[Path, Path]) -> None:
    good, bad = files
    from_file = invoke(["classify", str(good), "-q"])
    from_stdin = invoke(["classify", "-", "-q"], stdin=bad.read_bytes())
    assert from_stdin.exit_code == 0, from_stdin.output
    assert f"line {BAD_AT}: malformed_json: not valid UTF-8" in from_stdin.output
    # stdout (the tier changes) then the report: everything else classified the same
    assert from_stdin.stdout.startswith(from_file.stdout)


def test_fit_reports_the_bad_byte_line_and_fits_the_rest(files: tuple[Path, Path]) -> None:
    good, bad = files
    with_bad = invoke(["fit", str(bad), "--quiet"])
    without = invoke(["fit", str(good), "--quiet"])
    assert with_bad.exit_code == 0, with_bad.output
    assert f"line {BAD_AT}: malformed_json: not valid UTF-8" in with_bad.output
    assert with_bad.stdout.endswith(without.stdout)  # the same model block
    assert "bgnbd" in without.stdout


def test_policy_diff_events_reports_the_bad_byte_line(files: tuple[Path, Path]) -> None:
    good, bad = files
    args = ["policy", "diff", str(ABCD), "--json", "--events"]
    with_bad = invoke([*args, str(bad)])
    without = invoke([*args, str(good)])
    assert with_bad.exit_code == 0, with_bad.output
    assert f"line {BAD_AT}: malformed_json: not valid UTF-8" in with_bad.output
    assert with_bad.stdout.endswith(without.stdout)
    assert orjson.loads(without.stdout)["customers"] == 60


def test_classify_csv_with_a_bad_byte_row(tmp_path: Path) -> None:
    p = tmp_path / "orders.csv"
    p.write_bytes(
        b"customer_id,occurred_at,amount\nc1,2024-01-01,10\nc\xf62,2024-01-02,20\nc3,2024-01-03,30\n"
    )
    result = invoke(["classify", str(p), "--customers-out", str(tmp_path / "c.jsonl"), "-q"])
    assert result.exit_code == 0, result.output
    assert "line 3: invalid_encoding: not valid UTF-8: byte 0xF6 in column 1" in result.output
    customers = [
        orjson.loads(x)["customer_id"] for x in (tmp_path / "c.jsonl").read_bytes().split()
    ]
    assert customers == ["c1", "c3"]


# --- the command line as a user runs it (a subprocess: exit code, stderr) ------------------


def run_tierstream(
    args: list[str], env: dict[str, str] | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """``tierstream ARGS`` in a subprocess with this tree's code and a clean environment
    (no TIERSTREAM_* but ``env``)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("TIERSTREAM_")}
    base["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), base.get("PYTHONPATH")) if p)
    return subprocess.run(
        [TIERSTREAM, *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The one line on stderr of a command that failed as a user's mistake (exit 2)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port something else listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield int(s.getsockname()[1])


def test_broker_on_a_port_in_use_says_so_and_exits_2(taken_port: int) -> None:
    proc = run_tierstream(["broker", "--port", str(taken_port)], timeout=30)
    line = one_error_line(proc)
    assert line.startswith(f"error: port {taken_port} is in use")
    assert "listening" not in proc.stdout


def test_local_broker_notices_its_binary_failing_to_bind(
    taken_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The port taken after the check (a race): the binary itself fails to bind and exits,
    # while the other program answers connections.
    monkeypatch.setattr(broker_mod, "check_port_free", lambda host, port: None)
    b = LocalBroker(port=taken_port)
    with pytest.raises(BrokerError, match=f"port {taken_port} is in use"):
        b.start()
    assert not b.running


def fake_binary(tmp_path: Path, body: str, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "fake-broker"
    script.write_text(f"#!{sys.executable}\nimport sys, socket, time\n{body}\n")
    script.chmod(0o755)
    monkeypatch.setattr(broker_mod, "broker_binary", lambda: str(script))


@pytest.mark.parametrize("with_log", [False, True])
def test_local_broker_reports_a_binary_that_exits_while_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_log: bool
) -> None:
    fake_binary(
        tmp_path, "print('ERROR cannot open storage', flush=True); sys.exit(3)", monkeypatch
    )
    log = tmp_path / "broker.log" if with_log else None
    if log is not None:  # an earlier run's failure in the same log is not this one's
        log.write_text("ERROR Os { kind: AddrInUse }\n")
    with pytest.raises(BrokerError, match="exited with code 3 while starting: ERROR cannot open"):
        LocalBroker(log_file=log).start()


def test_broker_command_exits_1_when_the_broker_dies_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Listens (so it comes up), then exits on its own after a second.
    fake_binary(
        tmp_path,
        "url = sys.argv[sys.argv.index('--listener-url') + 1]\n"
        "host, port = url.removeprefix('tcp://').rsplit(':', 1)\n"
        "s = socket.create_server((host, int(port)))\n"
        "time.sleep(1.0)\n",
        monkeypatch,
    )
    result = CliRunner().invoke(cli, ["broker", "--port", str(free_port())])
    assert result.exit_code == 1, result.output
    assert "broker listening" in result.stdout
    assert result.stderr.strip() == "error: the broker exited unexpectedly"


# --- tierstream worker: mistakes stop it before Faust starts ------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"TIERSTREAM_STORE": "bogus://"}, "TIERSTREAM_STORE: 'bogus://' is not a table store"),
        ({"TIERSTREAM_LOG_LEVEL": "LOUD"}, "TIERSTREAM_LOG_LEVEL: 'LOUD' is not a log level"),
        ({"TIERSTREAM_BROKER": "localhost:kafka"}, "TIERSTREAM_BROKER: 'localhost:kafka' is not"),
        ({"TIERSTREAM_WEB_PORT": "0"}, "TIERSTREAM_WEB_PORT: Input should be greater"),
    ],
)
def test_worker_with_an_invalid_setting_is_one_line_exit_2(
    env: dict[str, str], expected: str
) -> None:
    line = one_error_line(run_tierstream(["worker"], env))
    assert line.startswith("error: invalid settings: " + expected), line


def test_worker_with_an_unreachable_broker_is_one_line_exit_2() -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    proc = run_tierstream(
        ["worker"], {"TIERSTREAM_BROKER": address, "TIERSTREAM_BROKER_WAIT_S": "1.5"}
    )
    line = one_error_line(proc)
    assert line.startswith(f"error: cannot reach the broker at TIERSTREAM_BROKER={address}")
    assert "tried for 1.5 s" in line and "Connect call failed" in line
    assert time.monotonic() - started < 30  # it gave up after the wait, not Faust's retries


@pytest.mark.skipif(
    any(importlib.util.find_spec(m) for m in ("rocksdict", "rocksdb")),
    reason="a RocksDB binding is installed here",
)
def test_worker_with_rocksdb_but_no_binding_is_one_line_exit_2() -> None:
    line = one_error_line(run_tierstream(["worker"], {"TIERSTREAM_STORE": "rocksdb://"}))
    assert line.startswith("error: TIERSTREAM_STORE=rocksdb:// needs the rocksdb extra")


def test_check_store_needs_a_rocksdb_binding(monkeypatch: pytest.MonkeyPatch) -> None:
    from app import worker

    rocks = load_settings(store="rocksdb://")
    monkeypatch.setattr(worker.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="needs the rocksdb extra"):
        worker.check_store(rocks)
    worker.check_store(load_settings(store="memory://"))  # memory needs nothing
    monkeypatch.setattr(worker.importlib.util, "find_spec", lambda name: name == "rocksdict")
    worker.check_store(rocks)


def test_worker_on_a_web_port_in_use_is_one_line_exit_2(taken_port: int) -> None:
    proc = run_tierstream(["worker"], {"TIERSTREAM_WEB_PORT": str(taken_port)})
    line = one_error_line(proc)
    assert line.startswith(f"error: TIERSTREAM_WEB_PORT={taken_port} is in use")


def test_settings_normalise_what_they_accept() -> None:
    s = load_settings(log_level="info", store="RocksDB://")
    assert (s.log_level, s.store) == ("INFO", "rocksdb://")
    assert load_settings(broker="kafka://a:1, b,[::1]:9092").bootstrap_servers == "a:1,b,[::1]:9092"
