"""Every reach into Faust's table and store internals, typed at this edge.

Faust tables pick the changelog partition, and the RocksDB store its per-partition
database, from ``current_event().message.partition``; the worker reads and writes the
customer table outside a stream iteration (in batches, from the timer, in a flush), so it
sets a stand-in event (:class:`_AtPartition`) for the partition it means.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

from faust.streams import _current_event
from faust.types import TP


class _AtPartition:
    """Stands in for Faust's current event when a table is written outside a stream
    iteration: Faust tables pick the changelog partition, and the RocksDB store its
    per-partition database, from ``current_event().message.partition``."""

    __slots__ = ("__weakref__", "message")

    def __init__(self, partition: int) -> None:
        self.message = TP(topic="", partition=partition)


class TableAccess:
    """The customer table (a Faust ``Table`` of raw bytes) as the worker uses it."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self._at_partition: dict[int, _AtPartition] = {}

    @property
    def changelog(self) -> str:
        """The changelog topic's name."""
        name: str = self.table.changelog_topic.get_topic_name()
        return name

    def marker(self, partition: int) -> _AtPartition:
        """The stand-in current event of ``partition``."""
        marker = self._at_partition.get(partition)
        if marker is None:
            marker = self._at_partition[partition] = _AtPartition(partition)
        return marker

    def get(self, key: bytes, event: Any) -> bytes | None:
        """The stored value of ``key`` in the store of ``event``'s partition."""
        token = _current_event.set(weakref.ref(event))
        try:
            value: bytes | None = self.table.get(key)
        finally:
            _current_event.reset(token)
        return value

    def load_at(self, key: bytes, partition: int) -> bytes | None:
        """The stored value of ``key`` in the store of ``partition``."""
        return self.get(key, self.marker(partition))

    def write(self, key: bytes, value: bytes, partition: int) -> None:
        """Write ``key`` to the store of ``partition`` (not the changelog: the caller sends
        that record itself). Faust's memory store learns a key's partition only from the
        changelog; the timer's index rebuild (and Faust dropping revoked keys) needs it
        for ours too."""
        store = self.table.data
        token = _current_event.set(weakref.ref(self.marker(partition)))  # type: ignore[arg-type]
        try:
            store[key] = value
        finally:
            _current_event.reset(token)
        key_partition: Any = getattr(store, "_key_partition", None)
        if key_partition is not None:
            key_partition[key] = partition

    def stored_items(self, partitions: set[int]) -> Iterator[tuple[int, bytes, bytes]]:
        """``(partition, key, value)`` of every stored customer of ``partitions``."""
        store: Any = self.table.data
        dbs = getattr(store, "_dbs", None)
        if dbs is not None:  # RocksDB: one database per partition
            for partition, db in list(dbs.items()):
                if partition in partitions:
                    for key, value in store._visible_items(db):
                        yield partition, key, value
            return
        key_partition = store._key_partition  # memory store: see write()
        for key, value in list(store.data.items()):
            partition = key_partition.get(key)
            if partition in partitions and value is not None:
                yield partition, key, value

    def lookup(self, key: bytes) -> bytes | None:
        """The stored value of ``key`` in whichever partition's store holds it (queries)."""
        value: bytes | None = self.table.data.get(key)
        return value
