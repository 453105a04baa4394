"""Integration tests: a real local broker (session fixture ``broker``), real workers."""

from __future__ import annotations

import pytest

from app.adapters.broker import LocalBroker
from tests.integration._worker_proc import Names


@pytest.fixture
def names(broker: LocalBroker) -> Names:
    """A fresh app id and topic prefix on the session broker."""
    return Names(broker.bootstrap)
