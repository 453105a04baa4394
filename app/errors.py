"""Project errors. The root, ``TierstreamError``, lives in the pure core and is re-exported."""

from app.domain.errors import InvalidEvent, PolicyError, TierstreamError

__all__ = ["BrokerError", "ConfigError", "InvalidEvent", "PolicyError", "TierstreamError"]


class ConfigError(TierstreamError):
    """Settings are invalid; the message says which and why."""


class BrokerError(TierstreamError):
    """The local broker could not be started or reached."""
