"""Errors of the pure core. ``TierstreamError`` is the project's root exception."""


class TierstreamError(Exception):
    """Root of every error tierstream raises on purpose."""


class InvalidEvent(TierstreamError):
    """An input event violates its contract; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class PolicyError(TierstreamError):
    """A policy document is invalid. ``problems`` lists ``(path, message)`` pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {path}: {msg}" for path, msg in problems)
        super().__init__(f"invalid policy {source}:\n{lines}")
