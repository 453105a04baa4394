"""What runs inside a worker, each part registering itself on the app
(:func:`register`): the customer-events agent, the control-plane task and the web views."""

from __future__ import annotations

from typing import Any

from app.stream.app import TierstreamApp


def register(app: TierstreamApp) -> list[Any]:
    """Attach every agent, task and view to ``app``; returns the Faust agents."""
    from agents import control, customer_events, views

    control.register(app)
    views.register(app)
    return [customer_events.register(app)]
