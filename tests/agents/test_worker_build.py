"""``build_worker`` assembles what ``tierstream worker`` runs: the fast consumer path, no
spinner, the tuned garbage collector (each measured to matter in ``make bench``)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from app.settings import load_settings
from app.stream import fastpath
from app.worker import GC_THRESHOLDS, build_worker


@pytest.fixture
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_build_worker(restore_gc: None, tmp_path: object) -> None:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        gc.set_threshold(700, 10, 10)
        worker = build_worker(load_settings(app_id="build-check", data_dir=str(tmp_path)))
        assert worker.spinner is None  # type: ignore[attr-defined]
        assert fastpath.installed(worker.app)  # type: ignore[attr-defined]
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        asyncio.set_event_loop(None)
        loop.close()
