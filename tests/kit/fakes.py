"""Fakes of what the processor reads and writes around the core, without Kafka or Faust.

>>> store = Store()
>>> store.load(b"c1", 0) is None, store.reads
(True, [(b'c1', 0)])
"""

from __future__ import annotations

from app.service.processor import CustomerBatch, Flush


class Store:
    """A dict standing in for the table; records how it was read."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.reads: list[tuple[bytes, int]] = []

    def load(self, key: bytes, index: int) -> bytes | None:
        self.reads.append((key, index))
        return self.data.get(key)

    def flush(self, b: CustomerBatch) -> Flush:
        """Flush ``b`` into this store, as the agent does once the writes are delivered."""
        flush = b.flush()
        for w in flush.writes:
            self.data[w.key] = w.value
        b.flushed(flush)
        return flush
