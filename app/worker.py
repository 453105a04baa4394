"""``tierstream worker``: run the Faust worker until SIGINT/SIGTERM, then exit cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import importlib.util
import logging
import socket
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from app.errors import ConfigError
from app.settings import Settings

if TYPE_CHECKING:
    from app.stream.app import TierstreamApp

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
    from app.stream import fastpath
    from app.stream.app import create_app

    if tapp is None:
        tapp = create_app(settings)
    agents.register(tapp)
    fastpath.install(tapp.faust)  # batch-wise consumer hand-off (app.stream.fastpath)
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


def check_store(settings: Settings) -> None:
    """The RocksDB store needs a RocksDB binding (the ``rocksdb`` extra installs rocksdict;
    Faust also takes python-rocksdb)."""
    if not settings.store.startswith("rocksdb:"):
        return
    if not any(importlib.util.find_spec(m) is not None for m in ("rocksdict", "rocksdb")):
        raise ConfigError(
            f"TIERSTREAM_STORE={settings.store} needs the rocksdb extra, which is not "
            "installed: pip install 'tierstream[rocksdb]' (rocksdict), or use memory://"
        )


def check_web_port(settings: Settings) -> None:
    """Nothing else may listen on the worker's HTTP address (a second worker on one
    machine needs its own TIERSTREAM_WEB_PORT)."""
    try:
        infos = socket.getaddrinfo(settings.web_host, settings.web_port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ConfigError(
            f"TIERSTREAM_WEB_HOST={settings.web_host}: cannot resolve it: {exc.strerror or exc}"
        ) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds
        try:
            s.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"TIERSTREAM_WEB_PORT={settings.web_port} is in use on {settings.web_host} "
                    "(another worker or program listens there): give this worker another port"
                ) from None
            raise ConfigError(
                f"TIERSTREAM_WEB_HOST={settings.web_host}, TIERSTREAM_WEB_PORT="
                f"{settings.web_port}: cannot listen there: {exc.strerror or exc}"
            ) from None


@contextlib.contextmanager
def _captured(logger_name: str) -> Iterator[list[str]]:
    """The messages ``logger_name`` logs meanwhile, kept instead of printed."""
    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger(logger_name)
    handler, propagate = Keep(logging.DEBUG), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


async def _reach_broker(settings: Settings) -> str | None:
    """Bootstrap (connect, one metadata request) until it works or ``broker_wait_s`` has
    passed; None when the broker answered, else the last reason it did not."""
    from aiokafka.client import AIOKafkaClient
    from aiokafka.errors import KafkaError

    deadline = time.monotonic() + settings.broker_wait_s
    why = "no answer"
    with _captured("aiokafka") as messages:
        while True:
            left = deadline - time.monotonic()
            timeout_ms = max(int(left * 1000), 100)
            client = AIOKafkaClient(**settings.kafka_client_kwargs(), request_timeout_ms=timeout_ms)
            try:
                await asyncio.wait_for(client.bootstrap(), max(left, 0.1))
                return None
            except (KafkaError, OSError, TimeoutError) as exc:
                # aiokafka logs why each address failed and raises a summary: keep the why.
                why = messages[-1] if messages else (str(exc) or type(exc).__name__)
            finally:
                await client.close()
            if time.monotonic() + 0.5 >= deadline:
                return why
            await asyncio.sleep(0.5)


def check_broker(settings: Settings) -> None:
    """The broker must answer within ``TIERSTREAM_BROKER_WAIT_S``; Faust would otherwise
    fail with a long traceback (or wait forever)."""
    why = asyncio.run(_reach_broker(settings))
    if why is not None:
        raise ConfigError(
            f"cannot reach the broker at TIERSTREAM_BROKER={settings.broker} "
            f"(tried for {settings.broker_wait_s:g} s): {why}"
        )


def check_startup(settings: Settings) -> None:
    """What would make the worker fail right after starting, checked before Faust starts,
    each a :class:`ConfigError` with one clear line (exit 2): the store's driver, the web
    port, the broker."""
    check_store(settings)
    check_web_port(settings)
    check_broker(settings)


def run_worker(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM. Faust's own command line is not involved (our argv is
    not Faust's): the worker is built directly and run with ``execute_from_commandline``,
    which installs the signal handlers, stops the app gracefully (leaving the consumer
    group, flushing the producer, committing offsets) and raises ``SystemExit``.
    :func:`check_startup` runs first: a user's mistake is one line, not a traceback."""
    check_startup(settings)
    # A fresh loop for Faust: it must own the loop it runs on.
    asyncio.set_event_loop(asyncio.new_event_loop())
    from app.stream.app import create_app

    tapp = create_app(settings)
    worker = build_worker(settings, tapp)
    try:
        worker.execute_from_commandline()  # type: ignore[attr-defined]
    except SystemExit as exc:
        if tapp.refused is not None:  # it stopped itself: a setting clashes with the group's
            raise ConfigError(tapp.refused) from None
        if exc.code not in (None, 0):
            raise
