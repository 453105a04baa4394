"""Run a benchmark child process that prints one JSON result line; never leave it behind."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from typing import Any

import orjson


def run_json_process(
    cmd: list[str], timeout_s: float, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Start ``cmd``, wait (at most ``timeout_s``) for a JSON line on its stdout, stop it."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=err,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + timeout_s
            assert proc.stdout is not None
            os.set_blocking(proc.stdout.fileno(), False)
            buf = b""
            while time.monotonic() < deadline:
                chunk = proc.stdout.read()
                if chunk:
                    buf += chunk
                    for line in buf.splitlines():
                        # Faust's worker may print terminal control codes before it.
                        start = line.find(b'{"')
                        if start >= 0 and line.rstrip().endswith(b"}"):
                            return dict(orjson.loads(line[start:]))
                if proc.poll() is not None and not chunk:
                    break
                time.sleep(0.05)
            err.seek(0)
            tail = err.read()[-2000:].decode(errors="replace")
            state = "exited" if proc.poll() is not None else "timed out"
            raise RuntimeError(f"{cmd[2:4]} {state} without a result; stderr tail:\n{tail}")
        finally:
            stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    """SIGTERM the child's process group, then SIGKILL after ``grace_s``."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(grace_s)
