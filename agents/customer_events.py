"""The customer-events agent: purchases, interactions and profiles -> tiers.

One agent consumes all three input topics, so one customer's state is only ever touched by
one coroutine (the topics are co-partitioned with the table: key = customer_id).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from faust.types import StreamT

from app.stream.app import TierstreamApp
from app.stream.consumer import BatchTaker


def register(app: TierstreamApp) -> Any:
    """Attach the agent to ``app``; returns the Faust agent."""
    settings = app.settings

    async def customer_events(stream: StreamT[bytes]) -> None:
        await app.ready_to_process()
        batches = BatchTaker(stream, settings.batch_size, settings.batch_timeout_s)
        try:
            while not (stream.should_stop or batches.stopped):
                # Wait for events, but not past the next flush, timer run or release of
                # records waiting for event-time order (no timer while a rebalance waits:
                # it must not keep the loop from waiting; with nothing to flush, look
                # again after a timer interval, so the loop sees the rebalance end).
                if batches.suspended:
                    wait = app.until_flush()
                    if wait is None:
                        wait = settings.timer_interval_s  # not until_wake: the timer waits
                else:
                    wait = app.until_wake()
                events = await batches.take(wait, wake_on_suspend=app.unflushed + app.held > 0)
                if events or app.held:
                    # queued for event-time order; decode -> step for those released
                    outcome = app.process(events)
                    await app.send(outcome)  # tier changes and dead letters, on their way
                if batches.suspended:
                    app.drop_held()  # a rebalance: read again from the committed offsets
                else:
                    await app.run_control()  # a new policy or new cut-offs: everyone
                    await app.run_timer()  # customers whose due time has come
                reason = app.flush_due(rebalancing=batches.suspended)
                if reason:
                    # snapshots, then the touched customers' states, all on the broker:
                    # only now may Faust commit the events
                    batches.ack(await app.flush(reason))
            app.abandon("the worker stopped", logging.INFO)
        except asyncio.CancelledError:  # the worker stops: the unflushed rest is not acked
            app.abandon("the worker stopped", logging.INFO)
            raise
        except BaseException as exc:
            app.abandon("the agent failed")  # its tier changes may not all have been sent
            await app.fail(exc)
            raise
        finally:
            batches.close()

    return app.faust.agent(app.inputs, name="customer-events")(customer_events)
