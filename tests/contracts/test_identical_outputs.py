"""Byte-identical outputs across refactors: ``simulate``, ``classify`` (four pinned
policies) and ``report`` over the same input give exactly the bytes they gave when these
hashes were recorded (before the layout of issue 14 moved the code). A refactor that
changes any byte of an output fails here; a deliberate change of behaviour records new
hashes in its own commit, saying why.

The commands run as a user runs them (the ``tierstream`` entry point), with the policies
pinned in ``tests/kit/policies`` (copies, so a change of the packaged default or of the
examples does not move these hashes).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

TIERSTREAM = str(Path(sys.executable).with_name("tierstream"))
POLICIES = Path(__file__).resolve().parents[1] / "kit" / "policies"

SIMULATED = "08f20b9914e4fde449a8c4c5f1322b3832b9b001303793a439b2a52a7ecb75b7"
#: sha256 of classify's outputs file followed by its customers file, per pinned policy
CLASSIFIED = {
    "value-tiers-v2.yaml": "f2fd69b06a9351a299837a93c204183035084f9f253ce4416715f8af6cc538a6",
    "churn-early-warning.yaml": "7b038eb478aa8c40c5b386a4f4e89789439631134ffeeed4337bf64c6ce57591",
    "rfm-quintiles.yaml": "8ac19abf95b1d4688b9189d8c88cfa63492048f5977707d1503a0eac858f9c9a",
    "real-estate-scorecard.yaml": (
        "520e04309b7dde92f2f8df95558999e3eceaf13331b23f6689b19d13bfdd0a0d"
    ),
}
REPORTED = "d6bc0c31f5c19f6b1e964f02c9843c57753a19d525ad65b0ea45a09c93a5d336"


ROOT = Path(__file__).resolve().parents[2]


def run(*args: str | Path) -> None:
    # this tree's code first on the path (the venv's editable install may be another's)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [TIERSTREAM, *map(str, args)], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stdout + done.stderr


def sha(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("golden") / "events.jsonl"
    run("simulate", "--customers", "150", "--days", "300", "--seed", "5", "--out", path)
    return path


def test_simulate_gives_the_recorded_bytes(events: Path) -> None:
    assert sha(events) == SIMULATED


@pytest.mark.parametrize("policy", sorted(CLASSIFIED))
def test_classify_gives_the_recorded_bytes(events: Path, policy: str, tmp_path: Path) -> None:
    out, customers = tmp_path / "out.jsonl", tmp_path / "customers.jsonl"
    run(
        "classify",
        events,
        "--policy",
        POLICIES / policy,
        "--out",
        out,
        "--customers-out",
        customers,
    )
    assert sha(out, customers) == CLASSIFIED[policy]


def test_report_gives_the_recorded_bytes(events: Path, tmp_path: Path) -> None:
    policy = POLICIES / "value-tiers-v2.yaml"
    out, customers = tmp_path / "out.jsonl", tmp_path / "customers.jsonl"
    run("classify", events, "--policy", policy, "--out", out, "--customers-out", customers)
    page = tmp_path / "report.html"
    run("report", out, "--customers", customers, "-o", page, "--policy", policy)
    assert sha(page) == REPORTED
