"""The worker's query views (Faust web pages), beside ``/healthz``.

Registered by :meth:`app.faust_app.TierstreamApp._add_pages`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.faust_app import TierstreamApp


def register_pages(app: TierstreamApp) -> None:
    """Attach the query views to ``app.faust`` (none yet)."""
