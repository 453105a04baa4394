"""The customer-events agent: purchases, interactions and profiles -> tiers.

One agent consumes all three input topics, so one customer's state is only ever touched by
one coroutine (the topics are co-partitioned with the table: key = customer_id).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from faust.types import StreamT

from app.faust_app import BatchTaker, TierstreamApp


def register(app: TierstreamApp) -> Any:
    """Attach the agent to ``app``; returns the Faust agent."""
    settings = app.settings

    async def customer_events(stream: StreamT[bytes]) -> None:
        await app.ready_to_process()
        batches = BatchTaker(stream, settings.batch_size, settings.batch_timeout_s)
        try:
            while not stream.should_stop:
                # Wait for events, but not past the next flush or timer run (no timer
                # while a rebalance waits: it must not keep the loop from waiting).
                wait = app.until_flush() if batches.suspended else app.until_wake()
                events = await batches.take(wait, wake_on_suspend=app.unflushed > 0)
                if events:
                    outcome = app.process(events)  # decode -> step, per event, in order
                    await app.send(outcome)  # tier changes and dead letters, on their way
                if not batches.suspended:
                    await app.run_control()  # a new policy or new cut-offs: everyone
                    await app.run_timer()  # customers whose due time has come
                reason = app.flush_due(rebalancing=batches.suspended)
                if reason:
                    # snapshots, then the touched customers' states, all on the broker:
                    # only now may Faust commit the events
                    batches.ack(await app.flush(reason))
        except asyncio.CancelledError:  # the worker stops: the unflushed rest is not acked
            app.abandon("the worker stopped", logging.INFO)
            raise
        except BaseException:
            app.abandon("the agent failed")  # its tier changes may not all have been sent
            raise
        finally:
            batches.close()

    return app.faust.agent(app.inputs, name="customer-events")(customer_events)
