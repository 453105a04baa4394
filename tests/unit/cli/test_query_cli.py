"""``tierstream explain`` and ``tierstream policy diff --worker`` against stand-in workers
(stdlib HTTP servers answering as app.stream.web does): what is printed, the exit codes, and
that the merged diff of the workers equals the diff of all their customers."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from app.adapters.broker import free_port
from app.adapters.policy_files import load_policy
from app.cli.main import cli
from app.domain.engine import step
from app.domain.state import CustomerState
from app.errors import ConfigError
from app.service.explain import explain
from app.service.shadow import diff_states
from tests.kit.builders import DAY, at, purchase
from tests.kit.policies import VALUE_TIERS_V2

POLICY = VALUE_TIERS_V2
T0 = at("2024-03-01T00:00:00")
NEW_POLICY = """\
name: value-tiers
version: "3"
tiers:
  - name: A
    when: {spend_365d: {gte: 1200}, purchases_365d: {gte: 6}}
  - name: B
    when: {spend_365d: {gte: 500}}
  - name: D
"""

# (method, path) -> (status, JSON body); the handler records what it was asked.
Routes = Callable[[str, str, bytes], tuple[int, Any]]


class Stub:
    def __init__(self, routes: Routes) -> None:
        self.routes = routes
        self.asked: list[tuple[str, str, bytes]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(size) if size else b""
                stub.asked.append((self.command, self.path, body))
                status, doc = stub.routes(self.command, self.path, body)
                raw = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stubs() -> Iterator[Callable[[Routes], Stub]]:
    made: list[Stub] = []

    def make(routes: Routes) -> Stub:
        made.append(Stub(routes))
        return made[-1]

    yield make
    for s in made:
        s.close()


def customer(cid: str, n: int, amount: float) -> CustomerState:
    state: CustomerState | None = None
    for k in range(n):
        state = step(state, purchase(cid, amount, T0 + k * 7 * DAY), 0, POLICY).state
    assert state is not None
    return state


def test_explain_prints_tier_stage_reasons_and_key_features(
    stubs: Callable[[Routes], Stub],
) -> None:
    doc = explain(POLICY, customer("b 1/x", 7, 200.0))
    worker = stubs(lambda m, p, b: (200, doc))
    result = CliRunner().invoke(cli, ["explain", "b 1/x", "--url", worker.url + "/"])
    assert result.exit_code == 0, result.output
    assert worker.asked == [("GET", "/customers/b%201%2Fx/explain", b"")]  # quoted
    out = result.stdout
    assert "tier B since 2024-04-05T00:00:00.000Z" in out
    assert "stage loyal" in out and "policy value-tiers@2; as of the last evaluation" in out
    for line in ("why B:", "spend_365d 1400 >= 1000", "not A: spend_365d 1400 < 3000"):
        assert line in out
    assert "why loyal:\n  purchases_365d 7 >= 6" in out
    assert "key features" in out and "purchases_365d" in out

    as_json = CliRunner().invoke(cli, ["explain", "b 1/x", "--url", worker.url, "--json"])
    assert as_json.exit_code == 0 and json.loads(as_json.stdout) == doc


def test_explain_unknown_customer_exits_1_and_no_worker_exits_2(
    stubs: Callable[[Routes], Stub],
) -> None:
    worker = stubs(lambda m, p, b: (404, {"error": "unknown customer", "customer_id": "nobody"}))
    result = CliRunner().invoke(cli, ["explain", "nobody", "--url", worker.url])
    assert result.exit_code == 1
    assert "unknown customer 'nobody'" in result.stderr
    busy = stubs(lambda m, p, b: (503, {"error": "rebalancing; retry", "partition": 1}))
    result = CliRunner().invoke(cli, ["explain", "c1", "--url", busy.url])
    assert result.exit_code == 2 and "answered 503: rebalancing; retry" in result.stderr
    nobody = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(cli, ["explain", "c1", "--url", nobody])
    assert result.exit_code == 2 and "no worker answers at" in result.stderr


def test_policy_diff_needs_exactly_one_source(tmp_path: Path) -> None:
    new = tmp_path / "new.yaml"
    new.write_text(NEW_POLICY)
    for args in ([], ["--events", "x.jsonl", "--worker", "http://h:1"]):
        result = CliRunner().invoke(cli, ["policy", "diff", str(new), *args])
        assert isinstance(result.exception, ConfigError), result.output
        assert "exactly one of --events FILE and --worker URL" in str(result.exception)
    result = CliRunner().invoke(
        cli, ["policy", "diff", str(new), "--worker", "http://h:1", "--policy", str(new)]
    )
    assert isinstance(result.exception, ConfigError)


def worker_routes(
    url: Callable[[], str], partitions: list[int], states: list[CustomerState]
) -> Routes:
    """A worker answering /policy/diff as app.stream.web does, over ``states``."""
    from app.adapters.policy_files import parse_policy

    def routes(method: str, path: str, body: bytes) -> tuple[int, Any]:
        assert method == "POST" and path.startswith("/policy/diff?examples=2")
        new = parse_policy(body.decode())
        doc = diff_states(states, POLICY, new, None, 2).to_dict()
        doc["worker"] = {"url": url(), "partitions": partitions}
        return 200, doc

    return routes


def test_policy_diff_from_workers_is_the_diff_of_all_their_customers(
    stubs: Callable[[Routes], Stub], tmp_path: Path
) -> None:
    first = [customer(f"a{i}", 3 + i, 150.0) for i in range(5)]
    second = [customer(f"b{i}", 8 - i, 260.0) for i in range(6)]
    w1: Stub = stubs(worker_routes(lambda: w1.url, [0, 2], first))
    w2: Stub = stubs(worker_routes(lambda: w2.url, [1, 3], second))
    cluster = {
        "app_id": "ts",
        "partitions": 4,
        "workers": [{"url": w1.url, "partitions": [0, 2]}, {"url": w2.url, "partitions": [1, 3]}],
        "unassigned": [],
    }
    entry = stubs(lambda m, p, b: (200, cluster))
    new = tmp_path / "new.yaml"
    new.write_text(NEW_POLICY)
    args = ["policy", "diff", str(new), "--worker", entry.url, "--examples", "2"]
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    want = diff_states([*first, *second], POLICY, load_policy(new), None, 2).to_dict()
    assert json.loads(result.stdout) == want
    assert want["customers"] == 11 and want["moves"]["changed"] > 0
    assert [a[0] for a in w1.asked + w2.asked] == ["POST", "POST"]
    assert w1.asked[0][2] == NEW_POLICY.encode()

    shown = CliRunner().invoke(cli, args)
    assert shown.exit_code == 0, shown.output
    assert "tier transitions" in shown.stdout and "2 workers of ts via" in shown.stdout

    # a partition nobody covered (a rebalance between /cluster and the diffs): refused
    cluster["workers"] = [{"url": w1.url, "partitions": [0, 2]}]
    cluster["unassigned"] = [1, 3]
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 2 and "have no worker" in refused.stderr


def test_policy_diff_reports_a_workers_rejection(
    stubs: Callable[[Routes], Stub], tmp_path: Path
) -> None:
    # The file is valid here, but the worker (another version?) rejects it: its problems.
    bad = {"error": "invalid policy", "problems": [{"path": "tiers[0]", "problem": "nope"}]}
    w: Stub = stubs(lambda m, p, b: (400, bad))
    entry = stubs(
        lambda m, p, b: (
            200,
            {
                "app_id": "ts",
                "partitions": 1,
                "workers": [{"url": w.url, "partitions": [0]}],
                "unassigned": [],
            },
        )
    )
    new = tmp_path / "new.yaml"
    new.write_text(NEW_POLICY)
    result = CliRunner().invoke(cli, ["policy", "diff", str(new), "--worker", entry.url])
    assert result.exit_code == 2 and "tiers[0]: nope" in result.stderr
