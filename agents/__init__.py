"""Thin Faust agents: decode -> engine.step -> write table -> send outputs -> count."""

from __future__ import annotations

from typing import Any

from app.stream.app import TierstreamApp


def register(app: TierstreamApp) -> list[Any]:
    """Attach every agent to ``app``."""
    from agents import customer_events

    return [customer_events.register(app)]
