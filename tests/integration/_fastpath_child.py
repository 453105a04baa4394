"""Child process of ``test_fastpath.py``: a Faust worker with :mod:`app.stream.fastpath`
installed that appends ``partition offset value`` for every event its agent sees."""

from __future__ import annotations

import argparse
import os
from typing import Any

import faust

from app.stream import fastpath


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--broker", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--app-id", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    app = faust.App(
        args.app_id,
        broker=f"kafka://{args.broker}",
        store="memory://",
        web_enabled=False,
        broker_session_timeout=6.0,
        broker_heartbeat_interval=0.5,
        broker_commit_interval=0.5,
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
    )
    topic = app.topic(args.topic, key_type=bytes, value_type=bytes, value_serializer="raw")
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    @app.agent(topic)
    async def record(stream: Any) -> None:
        async for event in stream.events():
            m = event.message
            os.write(fd, f"{m.partition} {m.offset} {event.value.decode()}\n".encode())

    fastpath.install(app)
    assert fastpath.installed(app)
    faust.Worker(
        app, loglevel="WARNING", quiet=True, redirect_stdouts=False
    ).execute_from_commandline()


if __name__ == "__main__":
    main()
