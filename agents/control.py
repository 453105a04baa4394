"""The control-plane task of a worker: reads the policy, sketches and cut-offs topics
(:class:`app.stream.control.ControlPlane`) for as long as the worker runs."""

from __future__ import annotations

from app.stream.app import TierstreamApp
from app.stream.control import ControlPlane


def register(app: TierstreamApp) -> ControlPlane:
    """Attach the control-plane task to ``app``; returns the control plane."""
    control = ControlPlane(app)

    async def control_plane() -> None:
        await control.run()

    app.faust.task(control_plane)
    return control
