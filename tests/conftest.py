"""Shared fixtures: one real local broker per test session (never a mock)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.adapters.broker import LocalBroker


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A Tansu broker on a free loopback port, or TIERSTREAM_TEST_BROKER if set."""
    log: Path = tmp_path_factory.mktemp("broker") / "broker.log"
    b = LocalBroker(log_file=log)
    b.start()
    os.environ.setdefault("TIERSTREAM_TEST_BROKER_LOG", str(log))
    try:
        yield b
    finally:
        b.stop()
