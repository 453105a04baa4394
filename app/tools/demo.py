"""``tierstream demo``: local broker + worker + simulated traffic, tier changes live.

What happens, in order:

1. a simulated stream is generated (:mod:`app.tools.simulate`), months of event time;
2. the local broker starts on a free port (:class:`app.adapters.broker.LocalBroker`);
3. a worker starts as a subprocess (``python -m app.cli worker``) with a fresh app id and
   the memory store, configured through ``TIERSTREAM_*`` environment variables;
4. a probe event is sent and the demo waits for its tier change: that proves the worker
   is consuming and producing (a clear error if it exits or does not answer in time);
5. the stream is fed at a steady rate so that it all flows by in ``--duration`` seconds,
   while the tier-changes topic is consumed and shown (rich Live view on a terminal,
   plain lines otherwise);
6. a short drain (none after Ctrl-C), then the worker is stopped (SIGTERM, SIGKILL after
   a grace period), so what it emitted is final: the output topics (tier changes,
   lifecycle changes, upgrade candidates, churn warnings) and the customers topic are
   read from the start to their end once, and both the summary and ``report.html`` in
   the demo's work directory (:mod:`app.tools.report`, its path is printed) are made from
   that one reading, so their counts agree;
7. shutdown: the broker stops (and the worker, when it still runs). The same shutdown
   runs on a second Ctrl-C, SIGTERM or an error. On success the work directory keeps
   only the report (and the logs with ``--keep-logs``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from app.adapters.broker import LocalBroker, free_port
from app.adapters.kafka import ensure_topics, make_producer
from app.adapters.policy_files import load_policy
from app.domain.errors import TierstreamError
from app.settings import Settings, load_settings
from app.tools.produce import Record, input_topic_names, send_records, to_record
from app.tools.simulate import DEFAULT_START, SimulationConfig, simulate
from schemas.topics import OUTPUT_BY_KIND

if TYPE_CHECKING:
    from app.tools.report import Outputs

PROBE_CUSTOMER = "demo-probe"
REPORT_FILE = "report.html"
TIER_STYLE = {"A": "bold magenta", "B": "bold cyan", "C": "green", "D": "dim"}
DIRECTION_STYLE = {"up": "green", "down": "red", "new": "blue"}
ARROW = {"up": "▲ up", "down": "▼ down", "new": "● new"}


class DemoError(TierstreamError):
    """The demo could not run (worker did not start, broker failed, ...)."""


@dataclass(frozen=True, slots=True)
class DemoConfig:
    duration: float = 60.0
    customers: int = 500
    days: int = 365
    seed: int = 1
    start: date = DEFAULT_START
    rate: float | None = None  # events/s; None: the whole stream in ``duration``
    partitions: int = 4
    policy_file: Path | None = None
    plain: bool | None = None  # None: plain when stdout is not a terminal
    worker_timeout: float = 90.0
    drain_seconds: float = 10.0
    keep_logs: bool = False
    #: Write ``report.html`` (:mod:`app.tools.report`) into the work directory at the end.
    report: bool = True
    #: The worker's command line (default: this Python running ``app.cli worker``).
    worker_command: tuple[str, ...] | None = None


@dataclass(slots=True)
class DemoState:
    """What the view shows; updated by the tier-change consumer and the feeder."""

    total_events: int = 0
    sent: int = 0
    tier_changes: int = 0
    directions: Counter[str] = field(default_factory=Counter)
    tiers: dict[str, str] = field(default_factory=dict)
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=14))
    last_event_time: str = ""
    probe_seen: asyncio.Event = field(default_factory=asyncio.Event)
    last_change_at: float = 0.0
    started: float = field(default_factory=time.monotonic)
    #: churn warnings by severity, and clearings (tierstream.churn-warnings)
    churn: Counter[str] = field(default_factory=Counter)
    churn_cleared: int = 0

    def per_tier(self) -> Counter[str]:
        return Counter(self.tiers.values())

    def apply(self, ce: dict[str, Any]) -> dict[str, Any] | None:
        data = ce.get("data") or {}
        cid = str(data.get("customer_id", ""))
        kind = str(ce.get("type", ""))
        if kind.startswith("io.tierstream.churn."):
            if cid == PROBE_CUSTOMER:
                return None
            if kind.startswith("io.tierstream.churn.cleared"):
                self.churn_cleared += 1
                return None
            self.churn[str(data.get("severity"))] += 1
            return {
                "churn": True,
                "customer_id": cid,
                "severity": str(data.get("severity")),
                "tier": data.get("tier") or "-",
                "action": data.get("suggested_action") or "-",
                "reason": (data.get("reasons") or [""])[0],
                "time": str(ce.get("time", ""))[:10],
            }
        if cid == PROBE_CUSTOMER:
            self.probe_seen.set()
            return None
        self.tier_changes += 1
        self.last_change_at = time.monotonic()
        self.directions[str(data.get("direction"))] += 1
        self.tiers[cid] = str(data.get("to_tier"))
        reasons = data.get("reasons") or []
        row = {
            "customer_id": cid,
            "from": data.get("from_tier") or "-",
            "to": data.get("to_tier") or "?",
            "direction": str(data.get("direction")),
            "reason": _main_reason([str(r) for r in reasons]),
            "time": str(ce.get("time", ""))[:10],
        }
        self.recent.append(row)
        return row


def _main_reason(reasons: list[str]) -> str:
    """The reason worth a line: what held, or for the catch-all tier, what just failed."""
    if not reasons:
        return ""
    if reasons[0].startswith("no better tier") and len(reasons) > 1:
        return reasons[-1]
    return reasons[0]


def _churn_text(state: DemoState) -> str:
    return "  ".join(f"{k} {v:,}" for k, v in sorted(state.churn.items())) or "-"


def _tier_counts_text(counts: Counter[str]) -> str:
    return "  ".join(f"{t}={counts.get(t, 0)}" for t in sorted(set(counts) | set("ABCD")))


def render(state: DemoState, cfg: DemoConfig, bootstrap: str) -> RenderableType:
    """The live view: counters, customers per tier and the latest tier changes."""
    elapsed = time.monotonic() - state.started
    head = Table.grid(padding=(0, 2))
    head.add_row(
        Text(f"events sent {state.sent:,}/{state.total_events:,}", style="bold"),
        Text(f"{state.sent / max(elapsed, 1e-3):,.0f}/s"),
        Text(f"tier changes {state.tier_changes:,}", style="bold"),
        Text(
            f"up {state.directions['up']:,}  down {state.directions['down']:,}  "
            f"new {state.directions['new']:,}"
        ),
        Text(f"event time {state.last_event_time or '-'}"),
        Text(f"{elapsed:5.1f}s", style="dim"),
    )
    head.add_row(
        Text(f"churn warnings {sum(state.churn.values()):,}", style="bold"),
        Text(_churn_text(state)),
        Text(f"cleared {state.churn_cleared:,}"),
    )
    counts = state.per_tier()
    total = max(sum(counts.values()), 1)
    tiers = Table.grid(padding=(0, 1))
    for t in sorted(set(counts) | set("ABCD")):
        n = counts.get(t, 0)
        bar = "█" * round(40 * n / total)
        tiers.add_row(
            Text(t, style=TIER_STYLE.get(t, "")),
            Text(f"{n:6,}"),
            Text(f"{n / total:6.1%}"),
            Text(bar, style=TIER_STYLE.get(t, "")),
        )
    table = Table(expand=True, title="latest tier changes", title_justify="left")
    table.add_column("event day", style="dim", no_wrap=True)
    table.add_column("customer", no_wrap=True)
    table.add_column("from → to", no_wrap=True)
    table.add_column("direction", no_wrap=True)
    table.add_column("reason", overflow="ellipsis", no_wrap=True, ratio=1)
    for row in reversed(state.recent):
        table.add_row(
            row["time"],
            row["customer_id"],
            Text.assemble(
                (row["from"], TIER_STYLE.get(row["from"], "")),
                " → ",
                (row["to"], TIER_STYLE.get(row["to"], "")),
            ),
            Text(
                ARROW.get(row["direction"], row["direction"]),
                DIRECTION_STYLE.get(row["direction"], ""),
            ),
            row["reason"],
        )
    title = f"tierstream demo — broker {bootstrap}, {cfg.customers:,} customers, {cfg.days} days"
    return Panel(Group(head, Text(""), tiers, Text(""), table), title=title, border_style="blue")


class _Processes:
    """The broker and worker processes, and their always-run shutdown."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.broker: LocalBroker | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.worker_code: int | None = None
        self.worker_log = workdir / "worker.log"

    def start_broker(self) -> LocalBroker:
        self.broker = LocalBroker(log_file=self.workdir / "broker.log")
        self.broker.start()
        return self.broker

    def start_worker(
        self, settings: Settings, command: tuple[str, ...] | None = None
    ) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "TIERSTREAM_BROKER": settings.broker,
            "TIERSTREAM_APP_ID": settings.app_id,
            "TIERSTREAM_STORE": settings.store,
            "TIERSTREAM_WEB_PORT": str(settings.web_port),
            "TIERSTREAM_DATA_DIR": str(settings.data_dir),
            "TIERSTREAM_PARTITIONS": str(settings.partitions),
            "TIERSTREAM_TOPIC_PREFIX": settings.topic_prefix,
            "TIERSTREAM_SESSION_TIMEOUT_S": str(settings.session_timeout_s),
            "TIERSTREAM_HEARTBEAT_INTERVAL_S": str(settings.heartbeat_interval_s),
            "TIERSTREAM_CLOCK_MODE": settings.clock_mode,
            "TIERSTREAM_LOG_LEVEL": settings.log_level,
            "PYTHONUNBUFFERED": "1",
        }
        if settings.policy_file is not None:
            env["TIERSTREAM_POLICY_FILE"] = str(settings.policy_file)
        log = self.worker_log.open("ab")
        try:
            self.worker = subprocess.Popen(
                list(command or (sys.executable, "-m", "app.cli", "worker")),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # Ctrl-C reaches only us; we stop it in order
            )
        finally:
            log.close()
        return self.worker

    def worker_log_tail(self, lines: int = 25) -> str:
        try:
            text = self.worker_log.read_text("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop_worker(self, grace: float = 20.0) -> int | None:
        """Stop the worker (SIGTERM, then SIGKILL to its process group); its exit code
        (None when it never started)."""
        proc, self.worker = self.worker, None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(grace)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
            # Anything the worker left in its process group goes too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            self.worker_code = proc.returncode
        return self.worker_code

    def stop(self, grace: float = 20.0) -> int | None:
        """Stop the worker (if it still runs), then the broker. Returns the worker's exit
        code."""
        code = self.stop_worker(grace)
        broker, self.broker = self.broker, None
        if broker is not None:
            broker.stop()
        return code


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, so ``finally`` blocks run and nothing is orphaned."""
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_demo(cfg: DemoConfig, console: Console | None = None) -> int:
    """Run the whole demo; returns the exit code (0 on success)."""
    console = console or Console()
    plain = cfg.plain if cfg.plain is not None else not console.is_terminal
    workdir = Path(tempfile.mkdtemp(prefix="tierstream-demo-"))
    # Client library warnings go to a file, not across the live view.
    log_handler = logging.FileHandler(workdir / "demo.log")
    log_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.getLogger().addHandler(log_handler)
    procs = _Processes(workdir)
    ok = False
    if cfg.policy_file is not None:
        load_policy(cfg.policy_file)  # a bad policy is reported before anything starts
    try:
        with _sigterm_as_interrupt():
            sim = simulate(
                SimulationConfig(
                    customers=cfg.customers, days=cfg.days, seed=cfg.seed, start=cfg.start
                )
            )
            console.print(
                f"simulated {len(sim.events):,} events of {cfg.customers:,} customers over "
                f"{cfg.days} days starting {cfg.start.isoformat()}"
            )
            broker = procs.start_broker()
            assert broker._proc is not None
            console.print(f"broker pid {broker._proc.pid} listening on {broker.bootstrap}")
            settings = load_settings(
                broker=broker.bootstrap,
                app_id=f"tierstream-demo-{uuid.uuid4().hex[:8]}",
                store="memory://",
                web_port=free_port(),
                data_dir=workdir / "data",
                partitions=cfg.partitions,
                policy_file=cfg.policy_file,
                session_timeout_s=6.0,
                heartbeat_interval_s=0.5,
                # The sample traffic is a past year: its partition clocks are event time
                # (the wall clock would make everyone silent since then).
                clock_mode="event",
            )
            records = [to_record(doc, settings) for doc in sim.events]
            try:
                asyncio.run(_run(cfg, settings, procs, records, console, plain))
            except KeyboardInterrupt:
                console.print("interrupted: shutting down")
            ok = True
            return 0
    except DemoError as exc:
        console.print(Text.assemble(("demo failed: ", "bold red"), str(exc)))
        return 1
    except (TierstreamError, KafkaError, OSError) as exc:
        console.print(Text.assemble(("demo failed: ", "bold red"), f"{type(exc).__name__}: {exc}"))
        return 1
    except KeyboardInterrupt:
        console.print("interrupted: shutting down")
        return 130
    finally:
        with contextlib.suppress(KeyboardInterrupt):
            code = procs.stop()
            console.print(
                f"stopped worker (exit code {code}) and broker"
                if code is not None
                else "stopped broker"
            )
        logging.getLogger().removeHandler(log_handler)
        log_handler.close()
        if ok and not cfg.keep_logs:
            _clean_workdir(workdir, keep=REPORT_FILE)
        else:
            console.print(f"logs kept in {workdir}", highlight=False)


def _clean_workdir(workdir: Path, keep: str) -> None:
    """Remove the work directory, or all of it but the file ``keep`` when that exists."""
    if not (workdir / keep).is_file():
        shutil.rmtree(workdir, ignore_errors=True)
        return
    for child in workdir.iterdir():
        if child.name == keep:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                child.unlink()


async def _run(
    cfg: DemoConfig,
    settings: Settings,
    procs: _Processes,
    records: list[Record],
    console: Console,
    plain: bool,
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    interrupts = 0

    def _on_signal() -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts > 1:  # a second Ctrl-C: leave now (cleanup still runs)
            raise KeyboardInterrupt
        console.print("stopping early (Ctrl-C again to abort)")
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _on_signal)
    try:
        await _demo(cfg, settings, procs, records, console, plain, stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _demo(
    cfg: DemoConfig,
    settings: Settings,
    procs: _Processes,
    records: list[Record],
    console: Console,
    plain: bool,
    stop: asyncio.Event,
) -> None:
    tier_topic = settings.topic(OUTPUT_BY_KIND["tier_change"].topic)
    churn_topic = settings.topic(OUTPUT_BY_KIND["churn_warning"].topic)
    await ensure_topics(settings, [*input_topic_names(settings), tier_topic, churn_topic])
    state = DemoState(total_events=len(records))
    printer = _PlainPrinter(console, state) if plain else None
    consumer = AIOKafkaConsumer(
        tier_topic,
        churn_topic,
        **settings.kafka_client_kwargs(),
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    producer = make_producer(settings)
    await producer.start()
    consume_task = asyncio.create_task(_consume(consumer, state, printer))
    try:
        worker = procs.start_worker(settings, cfg.worker_command)
        console.print(f"worker pid {worker.pid} started (app id {settings.app_id})")
        await _wait_for_worker(cfg, settings, procs, producer, state, stop)
        if stop.is_set():
            return
        console.print("worker is up: feeding the simulated stream")
        # Aim to finish a little early so the whole stream fits in the duration.
        rate = cfg.rate or max(len(records) / max(0.95 * cfg.duration, 1.0), 1.0)
        state.started = time.monotonic()
        if plain:
            console.print(f"sending {len(records):,} events at {rate:,.0f}/s")
            await _feed(cfg, producer, records, rate, state, stop, procs)
            await _drain(cfg, state, stop, procs)
        else:
            with Live(
                render(state, cfg, settings.broker),
                console=console,
                refresh_per_second=4,
                transient=False,
            ) as live:
                refresher = asyncio.create_task(_refresh(live, state, cfg, settings.broker))
                try:
                    await _feed(cfg, producer, records, rate, state, stop, procs)
                    await _drain(cfg, state, stop, procs)
                finally:
                    refresher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await refresher
                    live.update(render(state, cfg, settings.broker))
        # Stop the worker first: what it emitted is then final, and the summary and the
        # report, both made from one reading of the output topics, agree.
        console.print("stopping the worker, then reading its outputs")
        code = await asyncio.to_thread(procs.stop_worker)
        console.print(f"worker stopped (exit code {code})", highlight=False)
        final = await _read_outputs(settings, console)
        if final is None:
            _summary_live(console, state)
            return
        outputs, snapshots = final
        _summary(console, state.sent, outputs)
        if cfg.report:
            _write_report(outputs, snapshots, procs.workdir / REPORT_FILE, console)
    finally:
        consume_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await consume_task
        await producer.stop()
        await consumer.stop()


async def _read_outputs(
    settings: Settings, console: Console
) -> tuple[Outputs, dict[str, dict[str, Any]]] | None:
    """What the worker emitted: the output topics and the customer snapshots, read from
    the start to their end (:class:`app.tools.report.Outputs`, latest snapshot per customer);
    None (said on the console) when they cannot be read."""
    from app.tools.report import (
        CUSTOMERS_TOPIC,
        OUTPUT_TOPICS,
        Outputs,
        parse_outputs,
        parse_snapshots,
        read_topics,
    )

    try:
        topics = await asyncio.wait_for(
            read_topics(settings, [*OUTPUT_TOPICS, CUSTOMERS_TOPIC]), 60
        )
    except (KafkaError, OSError, TimeoutError) as exc:
        console.print(
            f"the output topics could not be read: {type(exc).__name__}: {exc}",
            highlight=False,
        )
        return None
    outputs = Outputs(sources=["the demo's output topics"])
    for name in OUTPUT_TOPICS:
        parse_outputs(topics[name], outputs, exclude=[PROBE_CUSTOMER])
    snapshots, _ = parse_snapshots(topics[CUSTOMERS_TOPIC], exclude=[PROBE_CUSTOMER])
    return outputs, snapshots


def _write_report(
    outputs: Outputs, snapshots: dict[str, dict[str, Any]], path: Path, console: Console
) -> None:
    """Write the report page from what the worker emitted; a failure is reported, not
    fatal."""
    from app.tools.report import ReportError, write_report

    try:
        report = write_report(outputs, snapshots, path)
    except (ReportError, OSError) as exc:
        console.print(f"report not written: {type(exc).__name__}: {exc}", highlight=False)
        return
    console.print(
        f"report written to {path} ({report.counts['tier changes']:,} tier changes, "
        f"{report.snapshot_customers:,} customer snapshots)",
        highlight=False,
        soft_wrap=True,
    )


async def _wait_for_worker(
    cfg: DemoConfig,
    settings: Settings,
    procs: _Processes,
    producer: Any,
    state: DemoState,
    stop: asyncio.Event,
) -> None:
    """Send a probe purchase and wait for its tier change (or the worker's death)."""
    probe = {
        "event_id": f"probe-{uuid.uuid4()}",
        "customer_id": PROBE_CUSTOMER,
        "type": "purchase",
        "occurred_at": cfg.start.isoformat(),
        "amount": 1.0,
    }
    rec = to_record(probe, settings)
    await (await producer.send(rec.topic, value=rec.value, key=rec.key))
    deadline = time.monotonic() + cfg.worker_timeout
    while not state.probe_seen.is_set():
        worker = procs.worker
        if worker is None or worker.poll() is not None:
            code = worker.returncode if worker is not None else None
            raise DemoError(
                f"the worker exited with code {code} while starting; its log:\n"
                f"{procs.worker_log_tail()}"
            )
        if stop.is_set():
            return
        if time.monotonic() > deadline:
            raise DemoError(
                f"the worker did not process a probe event within {cfg.worker_timeout:.0f}s; "
                f"its log:\n{procs.worker_log_tail()}"
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.probe_seen.wait(), 0.5)


def _check_worker(procs: _Processes) -> None:
    worker = procs.worker
    if worker is None or worker.poll() is not None:
        code = worker.returncode if worker is not None else None
        raise DemoError(
            f"the worker exited with code {code} during the demo; its log:\n"
            f"{procs.worker_log_tail()}"
        )


async def _feed(
    cfg: DemoConfig,
    producer: Any,
    records: list[Record],
    rate: float,
    state: DemoState,
    stop: asyncio.Event,
    procs: _Processes,
) -> None:
    """Send the stream at ``rate`` until done, ``stop`` is set, or the duration is up."""

    def sent(rec: Record) -> None:
        state.sent += 1

    send = asyncio.create_task(send_records(producer, records, rate, sent))
    deadline = time.monotonic() + cfg.duration
    try:
        while not send.done():
            _check_worker(procs)
            if stop.is_set() or time.monotonic() >= deadline:
                break
            await asyncio.wait({send}, timeout=0.5)
        if send.done():
            send.result()
    finally:
        if not send.done():
            send.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await send


async def _drain(cfg: DemoConfig, state: DemoState, stop: asyncio.Event, procs: _Processes) -> None:
    """Give the worker a moment to catch up: until 2 s without a tier change."""
    deadline = time.monotonic() + cfg.drain_seconds
    while time.monotonic() < deadline and not stop.is_set():
        _check_worker(procs)
        if time.monotonic() - state.last_change_at > 2.0:
            break
        await asyncio.sleep(0.25)


async def _consume(
    consumer: AIOKafkaConsumer, state: DemoState, printer: _PlainPrinter | None
) -> None:
    while True:
        batches = await consumer.getmany(timeout_ms=200, max_records=1000)
        for messages in batches.values():
            for msg in messages:
                try:
                    ce = orjson.loads(msg.value)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(ce, dict):
                    continue
                row = state.apply(ce)
                if row is not None:
                    state.last_event_time = row["time"] or state.last_event_time
                    if printer is not None:
                        printer.change(row)

        if printer is not None:
            printer.status()


async def _refresh(live: Live, state: DemoState, cfg: DemoConfig, bootstrap: str) -> None:
    while True:
        live.update(render(state, cfg, bootstrap))
        await asyncio.sleep(0.25)


class _PlainPrinter:
    """Plain lines for a non-terminal stdout: a sample of tier changes (at most a few per
    second) and a status line every five seconds."""

    def __init__(self, console: Console, state: DemoState, per_second: int = 4) -> None:
        self.console = console
        self.state = state
        self.per_second = per_second
        self.window = int(time.monotonic())
        self.in_window = 0
        self.last_status = time.monotonic()

    def change(self, row: dict[str, Any]) -> None:
        now = int(time.monotonic())
        if now != self.window:
            self.window, self.in_window = now, 0
        if self.in_window >= self.per_second:
            return
        self.in_window += 1
        if row.get("churn"):
            self.console.print(
                f"churn {row['severity']} {row['time']} {row['customer_id']} tier "
                f"{row['tier']} -> {row['action']}: {row['reason']}",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
            return
        self.console.print(
            f"tier change {row['time']} {row['customer_id']} {row['from']} -> {row['to']} "
            f"{row['direction']}: {row['reason']}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )

    def status(self) -> None:
        if time.monotonic() - self.last_status < 5.0:
            return
        self.last_status = time.monotonic()
        s = self.state
        self.console.print(
            f"status: sent {s.sent}/{s.total_events} events, {s.tier_changes} tier changes, "
            f"tiers {_tier_counts_text(s.per_tier())}",
            highlight=False,
            soft_wrap=True,
        )


def _summary(console: Console, sent: int, outputs: Outputs) -> None:
    """Customers per tier and the counts, from the outputs read after the worker stopped
    (the report's source)."""
    changes = sorted(outputs.tier_changes, key=lambda c: c[0])  # stable: emitted order
    tiers = {cid: to for _, cid, _, to, _ in changes}
    directions = Counter(c[4] for c in changes)
    churn = Counter(w[1] for w in outputs.warnings)
    _print_summary(
        console,
        sent,
        len(changes),
        directions,
        Counter(tiers.values()),
        churn,
        len(outputs.cleared),
    )


def _summary_live(console: Console, state: DemoState) -> None:
    """The summary from the live counts (when the output topics could not be read)."""
    _print_summary(
        console,
        state.sent,
        state.tier_changes,
        state.directions,
        state.per_tier(),
        state.churn,
        state.churn_cleared,
        note=" (live counts: they may miss the latest outputs)",
    )


def _print_summary(
    console: Console,
    sent: int,
    tier_changes: int,
    directions: Counter[str],
    counts: Counter[str],
    churn: Counter[str],
    cleared: int,
    note: str = "",
) -> None:
    total = max(sum(counts.values()), 1)
    table = Table(title="customers per tier", title_justify="left")
    table.add_column("tier")
    table.add_column("customers", justify="right")
    table.add_column("share", justify="right")
    for t in sorted(set(counts) | set("ABCD")):
        table.add_row(t, f"{counts.get(t, 0):,}", f"{counts.get(t, 0) / total:.1%}")
    console.print(table)
    churn_text = "  ".join(f"{k} {v:,}" for k, v in sorted(churn.items())) or "-"
    console.print(
        f"summary: events sent {sent}, tier changes {tier_changes} "
        f"(up {directions['up']}, down {directions['down']}, "
        f"new {directions['new']}), tiers {_tier_counts_text(counts)}, "
        f"churn warnings {sum(churn.values())} ({churn_text}), "
        f"cleared {cleared}{note}",
        highlight=False,
        soft_wrap=True,
    )
