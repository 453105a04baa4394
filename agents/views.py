"""The web views of a worker: ``/metrics``, ``/healthz`` and ``/readyz`` here, and the query
views of :mod:`app.stream.web` (``/customers/{id}[/explain]``, ``/tiers[/local]``,
``/cluster``, ``/policy/diff``)."""

from __future__ import annotations

from typing import Any

from app.stream.app import TierstreamApp
from app.stream.web import register_pages


def register(app: TierstreamApp) -> None:
    """Attach every view to ``app``'s web server."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    counters = app.counters
    registry = app.metrics.registry

    @app.faust.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        # content_type= refuses a charset parameter (aiohttp): set the header itself
        return web.bytes(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.faust.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        why = app.not_ready()
        if why is not None:
            return web.json({"ready": False, "reason": why}, status=503)
        return web.json(
            {
                "ready": True,
                "partitions": sorted(app.active_partitions()),
                "policy": app.batch.policy.key,
            }
        )

    @app.faust.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        policy = app.batch.policy
        return web.json(
            {
                "status": "ok",
                "counters": counters.as_dict(),
                "policy": policy.key,
                "cutoffs": policy.cutoffs.to_dict(),
            }
        )

    register_pages(app)  # the query and explain views (app.stream.web)
