"""Customers per tier and per lifecycle stage, per partition, kept up to date in O(changes).

What ``tierstream_customers`` / ``tierstream_customers_by_stage`` (:mod:`app.stream.metrics`) and
``GET /tiers`` report, without scanning (or decoding) the table at every scrape:

- every flush knows, per customer it writes, the tier and stage the table held before
  (taken when the customer was first touched since the previous flush: the state then
  loaded *is* the stored one, or there was none) and the ones it writes now
  (:attr:`app.service.processor.Flush.moves`); :meth:`Census.apply` adjusts the counts by those
  differences only, once the flush is on the broker;
- after a table recovery or a rebalance the counts are rebuilt from the table in the
  same pass that rebuilds the timer's due-time index (:meth:`app.service.processor.CustomerBatch.
  rebuild_due`), reading ``"tier":`` and ``"stage":`` out of each stored state without
  decoding it (:func:`peek_string`), as :func:`app.service.due.peek_next_due` reads the due
  time;
- partitions this worker no longer owns are left out when counting
  (:meth:`Census.totals` takes the partitions to count) and dropped at the next rebuild.

So the counts are those of the table: a customer's change shows once the flush that
writes it is done (at most ``TIERSTREAM_FLUSH_INTERVAL_S`` later). Memory: a few counters
per partition, nothing per customer. A customer without a tier (or stage) yet is counted
as ``none``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import orjson

#: The label of "no tier" / "no stage" (also ``from_tier`` of a first tier change).
NONE = "none"
#: A customer's (tier, stage) as stored; None: not in the table.
Place = tuple[str | None, str | None] | None

_TIER = b'"tier":'
_STAGE = b'"stage":'
_ATTRIBUTES = b'"attributes":'


def peek_string(raw: bytes, name: bytes) -> str | None:
    """The string (or null) value of the top-level ``name`` (``b'"tier":'``) of a stored
    state's JSON without decoding it. A JSON string holds no unescaped quote, so
    ``"tier":`` cannot match inside one; the only object with keys of its own is
    ``attributes`` (profile attributes: a key ``tier`` is possible), which is looked
    past (it comes after the scalars)."""
    end = raw.find(_ATTRIBUTES)
    i = raw.find(name, 0, end if end >= 0 else len(raw))
    if i < 0:
        return None
    i += len(name)
    if raw.startswith(b"null", i):
        return None
    if raw[i : i + 1] != b'"':
        return None
    j = raw.find(b'"', i + 1)
    while j > 0 and raw[j - 1 : j] == b"\\":  # an escaped quote: look further
        k = j - 1
        slashes = 0
        while k > i and raw[k : k + 1] == b"\\":
            slashes += 1
            k -= 1
        if slashes % 2 == 0:
            break
        j = raw.find(b'"', j + 1)
    if j < 0:
        return None
    value = orjson.loads(raw[i : j + 1])
    return value if isinstance(value, str) else None


def peek_place(raw: bytes) -> tuple[str | None, str | None]:
    """(tier, stage) of a stored state."""
    return peek_string(raw, _TIER), peek_string(raw, _STAGE)


class Census:
    """Per partition: customers by tier and by stage (the table's view)."""

    def __init__(self) -> None:
        self._tiers: dict[int, dict[str, int]] = {}
        self._stages: dict[int, dict[str, int]] = {}

    def apply(self, moves: Iterable[tuple[int, Place, tuple[str | None, str | None]]]) -> None:
        """Customers written to ``partition``: ``(partition, before, after)``, where
        ``before`` is what the table held (None: a new customer)."""
        for partition, before, (tier, stage) in moves:
            tiers = self._tiers.setdefault(partition, {})
            stages = self._stages.setdefault(partition, {})
            if before is not None:
                old_tier, old_stage = before
                if old_tier == tier and old_stage == stage:
                    continue
                _bump(tiers, old_tier or NONE, -1)
                _bump(stages, old_stage or NONE, -1)
            _bump(tiers, tier or NONE, 1)
            _bump(stages, stage or NONE, 1)

    def rebuild(
        self, items: Iterable[tuple[int, bytes, bytes]]
    ) -> Iterator[tuple[int, bytes, bytes]]:
        """Replace the counts with those of the stored states ``(partition, key, value)``
        passing through (a generator: the caller's pass over the table feeds both)."""
        tiers: dict[int, dict[str, int]] = {}
        stages: dict[int, dict[str, int]] = {}
        for item in items:
            partition, _, raw = item
            tier, stage = peek_place(raw)
            _bump(tiers.setdefault(partition, {}), tier or NONE, 1)
            _bump(stages.setdefault(partition, {}), stage or NONE, 1)
            yield item
        self._tiers, self._stages = tiers, stages

    def clear(self) -> None:
        self._tiers.clear()
        self._stages.clear()

    def totals(self, partitions: Iterable[int]) -> tuple[dict[str, int], dict[str, int]]:
        """Customers by tier and by stage over ``partitions`` (zero counts left out)."""
        tiers: dict[str, int] = {}
        stages: dict[str, int] = {}
        for p in partitions:
            for name, n in self._tiers.get(p, {}).items():
                tiers[name] = tiers.get(name, 0) + n
            for name, n in self._stages.get(p, {}).items():
                stages[name] = stages.get(name, 0) + n
        return _positive(tiers), _positive(stages)

    def customers(self, partitions: Iterable[int]) -> int:
        """Customers stored in ``partitions``."""
        return sum(sum(self._tiers.get(p, {}).values()) for p in partitions)


def _bump(counts: dict[str, int], name: str, n: int) -> None:
    counts[name] = counts.get(name, 0) + n


def _positive(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in sorted(counts.items()) if v}
