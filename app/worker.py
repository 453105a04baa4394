"""``tierstream worker``: run the Faust worker until SIGINT/SIGTERM, then exit cleanly."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import TYPE_CHECKING

from app.errors import ConfigError
from app.settings import Settings

if TYPE_CHECKING:
    from app.faust_app import TierstreamApp

log = logging.getLogger(__name__)

#: Garbage-collector thresholds of the worker process (CPython's default: 700, 10, 10).
GC_THRESHOLDS = (20_000, 10, 100)


def tune_gc() -> None:
    """Make the cyclic garbage collector run less often, and skip what exists at startup.

    A worker holds many long-lived container objects (up to ``state_cache_size`` decoded
    customer states, each a handful of lists and dicts; Faust's and aiokafka's own
    machinery) and allocates a few dozen short-lived ones per event. With CPython's
    default thresholds the collector runs a young collection every 700 net allocations and
    a full one, which traverses every tracked object, every 100 young ones: measured on
    ``make bench``, a third of the worker's time (10,300 events/s with the defaults,
    15,200 with these settings). Young collections every 20,000 allocations and full
    ones a tenth as often still reclaim reference cycles (asyncio and Faust make some),
    only later; objects that are not in cycles are freed by reference counting as always.
    ``gc.freeze()`` moves everything allocated while starting (modules, the app) out of
    the collector's sight: it lives as long as the process anyway.
    """
    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()


def build_worker(settings: Settings, tapp: TierstreamApp | None = None) -> object:
    """The Faust worker for the app (``tapp``, else one made from ``settings``) with every
    agent registered (nothing started yet)."""
    import faust

    import agents
    from app import fastpath
    from app.faust_app import create_app

    if tapp is None:
        tapp = create_app(settings)
    agents.register(tapp)
    fastpath.install(tapp.faust)  # batch-wise consumer hand-off (app.fastpath)
    worker = faust.Worker(
        tapp.faust,
        loglevel=settings.log_level,
        quiet=True,  # no banner
        redirect_stdouts=False,
        workdir=None,
    )
    # No terminal spinner: with one, Faust sets the root logger to DEBUG (the spinner
    # shows log records), so every debug call in Faust's and aiokafka's hot paths builds
    # a record that is then dropped: 11-15 % of the worker's time, measured.
    worker.spinner = None
    tune_gc()
    return worker


def run_worker(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM. Faust's own command line is not involved (our argv is
    not Faust's): the worker is built directly and run with ``execute_from_commandline``,
    which installs the signal handlers, stops the app gracefully (leaving the consumer
    group, flushing the producer, committing offsets) and raises ``SystemExit``."""
    # A fresh loop for Faust: it must own the loop it runs on.
    asyncio.set_event_loop(asyncio.new_event_loop())
    from app.faust_app import create_app

    tapp = create_app(settings)
    worker = build_worker(settings, tapp)
    try:
        worker.execute_from_commandline()  # type: ignore[attr-defined]
    except SystemExit as exc:
        if tapp.refused is not None:  # it stopped itself: a setting clashes with the group's
            raise ConfigError(tapp.refused) from None
        if exc.code not in (None, 0):
            raise
