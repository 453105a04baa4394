"""The customer-events agent: purchases, interactions and profiles -> tiers.

One agent consumes all three input topics, so one customer's state is only ever touched by
one coroutine (the topics are co-partitioned with the table: key = customer_id).
"""

from __future__ import annotations

from typing import Any

from faust.types import StreamT

from app.faust_app import TierstreamApp, take_batches


def register(app: TierstreamApp) -> Any:
    """Attach the agent to ``app``; returns the Faust agent."""
    settings = app.settings

    async def customer_events(stream: StreamT[bytes]) -> None:
        await app.ready_to_process()
        batches = take_batches(stream, settings.batch_size, settings.batch_timeout_s)
        async for batch in batches:
            outcome = app.process(batch)  # decode -> step, per event, in order
            await app.publish(outcome, batch)  # send outputs, write touched customers, count

    return app.faust.agent(app.inputs, name="customer-events")(customer_events)
