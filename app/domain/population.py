"""Population percentiles: mergeable quantile sketches and the cut-offs they yield.

A Pareto pyramid ("platinum is the top 1 % by 365-day spend") ranks each customer against
**all** customers, on every partition. No worker sees them all, so each summarises the
customers of its own partitions in one :class:`MetricSketch` per ranked metric, the
sketches are merged (:func:`merge_cutoffs`) and the result, a :class:`Cutoffs`, is what
every worker decides with. Because merging is randomised, one designated merger publishes the
cut-offs and everyone reads the same ones; workers never merge on their own, so they cannot
diverge.

The sketch is Apache DataSketches' KLL sketch of doubles with ``k = 4000``: its normalised
rank error is below 0.073 % with 99 % confidence, at every rank, after any number of merges,
and a partition's sketch serialises to under 100 KB however many customers it holds. (The
REQ sketch is smaller and sharper at the top, but its float32 items and its weaker middle
ranks made the 60th percentile miss by 0.1 % on a million customers.)

Percentile semantics: the cut-off for ``p`` is the value with ``p`` % of the population
strictly below it (an *exclusive* quantile), so "``percentile.spend_365d`` at or above 99"
takes in about the top 1 %. Ties go in together. One exception keeps the lower end honest: when
most customers share the minimum (say 30 % never bought, so spend 0), a cut-off equal to the
population minimum does not take in the customers at that minimum.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from datasketches import kll_doubles_sketch

from app.domain.errors import PolicyError

#: KLL accuracy parameter (see the module docstring for what it buys).
SKETCH_K = 4000


class MetricSketch:
    """A mergeable quantile summary of one metric's values; non-finite values are ignored."""

    __slots__ = ("_sk",)

    def __init__(self, sketch: kll_doubles_sketch | None = None) -> None:
        self._sk = sketch if sketch is not None else kll_doubles_sketch(SKETCH_K)

    def add(self, value: float) -> None:
        if math.isfinite(value):
            self._sk.update(value)

    def add_many(self, values: Iterable[float]) -> None:
        update = self._sk.update
        for v in values:
            if math.isfinite(v):
                update(v)

    @property
    def n(self) -> int:
        return int(self._sk.n)

    def merge(self, other: MetricSketch) -> None:
        self._sk.merge(other._sk)

    def quantile(self, rank: float) -> float:
        """The value with ``rank`` (0..1) of the values strictly below it."""
        if self._sk.is_empty():
            raise ValueError("quantile of an empty sketch")
        return float(self._sk.get_quantile(rank, False))

    @property
    def min(self) -> float:
        return float(self._sk.get_min_value())

    @property
    def max(self) -> float:
        return float(self._sk.get_max_value())

    def to_bytes(self) -> bytes:
        return bytes(self._sk.serialize())

    @classmethod
    def from_bytes(cls, data: bytes) -> MetricSketch:
        return cls(kll_doubles_sketch.deserialize(data))


@dataclass(slots=True)
class PartitionSketches:
    """One partition's sketches, one per ranked metric, as of one moment."""

    partition: int
    as_of: int
    metrics: dict[str, MetricSketch] = field(default_factory=dict)

    def sketch(self, metric: str) -> MetricSketch:
        sk = self.metrics.get(metric)
        if sk is None:
            sk = self.metrics[metric] = MetricSketch()
        return sk


def encode_partition_sketches(part: PartitionSketches) -> bytes:
    return json.dumps(
        {
            "partition": part.partition,
            "as_of": part.as_of,
            "metrics": {
                m: base64.b64encode(sk.to_bytes()).decode("ascii")
                for m, sk in sorted(part.metrics.items())
            },
        },
        separators=(",", ":"),
    ).encode()


def decode_partition_sketches(data: bytes) -> PartitionSketches:
    """Raises ValueError on anything that is not an encoded :class:`PartitionSketches`."""
    try:
        raw = json.loads(data)
        metrics = {
            str(m): MetricSketch.from_bytes(base64.b64decode(b)) for m, b in raw["metrics"].items()
        }
        return PartitionSketches(int(raw["partition"]), int(raw["as_of"]), metrics)
    except (LookupError, TypeError, AttributeError, RuntimeError, ValueError) as e:
        raise ValueError(f"not a partition sketch: {e}") from e


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """Global percentile cut-offs: ``values[metric][p]`` has ``p`` % of the population
    below it. ``generation`` increases with every publication."""

    generation: int
    as_of: int
    population: Mapping[str, int]
    values: Mapping[str, Mapping[float, float]]
    minimum: Mapping[str, float]

    @classmethod
    def empty(cls) -> Cutoffs:
        return cls(0, 0, {}, {}, {})

    def at_or_above(self, metric: str, pct: float, value: float) -> bool:
        """Whether ``value`` reaches the ``pct`` cut-off of ``metric`` (False while the
        cut-off is unknown, and for NaN)."""
        cut = self.values.get(metric, {}).get(pct)
        if cut is None or value != value:
            return False
        if cut <= self.minimum.get(metric, -math.inf):
            return value > cut
        return value >= cut

    def to_dict(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "as_of": self.as_of,
            "population": dict(self.population),
            "values": {m: {_pct_key(p): v for p, v in c.items()} for m, c in self.values.items()},
            "minimum": dict(self.minimum),
        }

    @classmethod
    def from_dict(cls, raw: Any) -> Cutoffs:
        """Raises PolicyError naming what is wrong."""
        try:
            return cls(
                int(raw["generation"]),
                int(raw["as_of"]),
                {str(m): int(n) for m, n in raw["population"].items()},
                {
                    str(m): {float(p): float(v) for p, v in c.items()}
                    for m, c in raw["values"].items()
                },
                {str(m): float(v) for m, v in raw["minimum"].items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise PolicyError(
                "cut-offs",
                [("", f"must have generation, as_of, population, values, minimum: {e!r}")],
            ) from e


def _pct_key(p: float) -> str:
    return str(int(p)) if p == int(p) else str(p)


def merge_cutoffs(
    parts: Iterable[PartitionSketches],
    wanted: Mapping[str, Iterable[float]],
    generation: int,
    as_of: int,
) -> Cutoffs:
    """Merge partition sketches into the cut-offs ``wanted`` (metric → percentiles)."""
    merged: dict[str, MetricSketch] = {}
    for part in parts:
        for metric, sk in part.metrics.items():
            if metric in wanted:
                merged.setdefault(metric, MetricSketch()).merge(sk)
    values: dict[str, dict[float, float]] = {}
    population: dict[str, int] = {}
    minimum: dict[str, float] = {}
    for metric, sk in sorted(merged.items()):
        if sk.n == 0:
            continue
        population[metric] = sk.n
        minimum[metric] = sk.min
        values[metric] = {float(p): sk.quantile(p / 100.0) for p in sorted(wanted[metric])}
    return Cutoffs(generation, as_of, population, values, minimum)


def exact_cutoffs(
    values: Mapping[str, Sequence[float]],
    wanted: Mapping[str, Iterable[float]],
    generation: int = 1,
    as_of: int = 0,
) -> Cutoffs:
    """The exact cut-offs of a whole population (batch ``classify`` and the tests)."""
    cut: dict[str, dict[float, float]] = {}
    population: dict[str, int] = {}
    minimum: dict[str, float] = {}
    for metric, points in wanted.items():
        xs = sorted(v for v in values.get(metric, ()) if math.isfinite(v))
        if not xs:
            continue
        n = len(xs)
        population[metric] = n
        minimum[metric] = xs[0]
        cut[metric] = {float(p): xs[min(n - 1, math.floor(p / 100.0 * n))] for p in points}
    return Cutoffs(generation, as_of, population, cut, minimum)
