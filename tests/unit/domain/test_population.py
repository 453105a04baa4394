"""Population cut-offs: the sketch against exact ranks, merging, encoding, tie rules."""

from __future__ import annotations

import bisect
import math
import random

import pytest

from app.domain.errors import PolicyError
from app.domain.population import (
    Cutoffs,
    MetricSketch,
    PartitionSketches,
    decode_partition_sketches,
    encode_partition_sketches,
    exact_cutoffs,
    merge_cutoffs,
)

PERCENTILES = (20.0, 40.0, 60.0, 80.0, 95.0, 99.0)


def _population(n: int, seed: int) -> list[float]:
    """Spend-like values: 30 % zero (never bought), a heavy lognormal tail, and many ties
    (whole currency units below 50)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        if rng.random() < 0.3:
            out.append(0.0)
        else:
            v = rng.lognormvariate(4.0, 1.5)
            out.append(float(round(v)) if v < 50 else round(v, 2))
    return out


def _rank_error(sorted_values: list[float], cut: float, pct: float) -> float:
    """How far ``pct`` lies outside the exact rank interval of ``cut`` (ties span one)."""
    n = len(sorted_values)
    below = bisect.bisect_left(sorted_values, cut) / n
    at_or_below = bisect.bisect_right(sorted_values, cut) / n
    p = pct / 100.0
    if below <= p <= at_or_below:
        return 0.0
    return min(abs(below - p), abs(at_or_below - p))


def test_merged_sketches_rank_a_million_customers_within_a_tenth_of_a_percent() -> None:
    values = _population(1_000_000, seed=7)
    parts = []
    for p in range(4):  # four partitions, each summarised alone, shipped as bytes
        part = PartitionSketches(partition=p, as_of=1)
        part.sketch("spend_365d").add_many(values[p::4])
        parts.append(decode_partition_sketches(encode_partition_sketches(part)))
    cut = merge_cutoffs(parts, {"spend_365d": PERCENTILES}, generation=3, as_of=1)
    assert cut.population["spend_365d"] == 1_000_000
    assert cut.minimum["spend_365d"] == 0.0
    xs = sorted(values)
    exact = exact_cutoffs({"spend_365d": values}, {"spend_365d": PERCENTILES})
    errors = {p: _rank_error(xs, cut.values["spend_365d"][p], p) for p in PERCENTILES}
    assert max(errors.values()) < 0.001, errors
    # and the exact cut-offs are exact: no rank error at all
    assert all(_rank_error(xs, exact.values["spend_365d"][p], p) == 0.0 for p in PERCENTILES)
    # the top 1 % by the merged cut-off is about 1 % of customers
    top = sum(1 for v in values if cut.at_or_above("spend_365d", 99.0, v))
    assert 9_000 <= top <= 11_000, top


def test_exclusive_percentiles_on_a_small_population() -> None:
    xs = [float(i) for i in range(1, 11)]  # 1..10
    sk = MetricSketch()
    sk.add_many(xs)
    exact = exact_cutoffs({"m": xs}, {"m": (0, 20, 50, 90, 99)})
    # p % of the population lies strictly below the cut-off
    assert exact.values["m"] == {0.0: 1.0, 20.0: 3.0, 50.0: 6.0, 90.0: 10.0, 99.0: 10.0}
    for p, v in exact.values["m"].items():
        assert sk.quantile(p / 100) == v  # small sketches are exact, same semantics
    assert exact.at_or_above("m", 90.0, 10.0)
    assert not exact.at_or_above("m", 90.0, 9.99)


def test_a_cutoff_at_the_population_minimum_does_not_take_in_the_minimum() -> None:
    xs = [0.0] * 30 + [float(i) for i in range(1, 71)]  # 30 % never bought
    cut = exact_cutoffs({"spend": xs}, {"spend": (20.0, 40.0)})
    assert cut.values["spend"][20.0] == 0.0
    assert not cut.at_or_above("spend", 20.0, 0.0)  # not "top 80 %" by spending nothing
    assert cut.at_or_above("spend", 20.0, 0.5)
    assert cut.at_or_above("spend", 40.0, cut.values["spend"][40.0])


def test_unknown_cutoffs_and_nan_never_hold() -> None:
    empty = Cutoffs.empty()
    assert not empty.at_or_above("spend", 99.0, 1e12)
    cut = exact_cutoffs({"m": [1.0, 2.0]}, {"m": (50.0,)})
    assert not cut.at_or_above("m", 50.0, math.nan)
    assert not cut.at_or_above("m", 95.0, 2.0)  # a percentile nobody asked for
    assert cut.at_or_above("m", 50.0, math.inf)


def test_sketch_ignores_non_finite_values() -> None:
    sk = MetricSketch()
    sk.add_many([1.0, math.nan, math.inf, -math.inf, 2.0])
    sk.add(math.nan)
    assert sk.n == 2
    assert (sk.min, sk.max) == (1.0, 2.0)
    with pytest.raises(ValueError):
        MetricSketch().quantile(0.5)


def test_merge_skips_metrics_nobody_wants_and_empty_sketches() -> None:
    a = PartitionSketches(0, 5)
    a.sketch("x").add_many([1.0, 2.0, 3.0])
    a.sketch("unwanted").add(1.0)
    b = PartitionSketches(1, 5)
    b.sketch("x").add_many([4.0])
    b.sketch("y")  # a partition with no customers yet
    cut = merge_cutoffs([a, b], {"x": (50.0,), "y": (50.0,)}, generation=2, as_of=5)
    assert cut.values == {"x": {50.0: 3.0}}
    assert cut.population == {"x": 4}
    assert (cut.generation, cut.as_of) == (2, 5)


def test_cutoffs_round_trip_and_validation() -> None:
    cut = exact_cutoffs({"m": [0.0, 1.0, 5.0]}, {"m": (33.3, 99.0)}, generation=4, as_of=9)
    back = Cutoffs.from_dict(cut.to_dict())
    assert back == cut
    with pytest.raises(PolicyError, match="generation"):
        Cutoffs.from_dict({"values": {}})


def test_decoding_garbage_is_a_value_error() -> None:
    for junk in (b"", b"{}", b'{"partition": 1, "as_of": 2, "metrics": {"m": "AAAA"}}'):
        with pytest.raises(ValueError):
            decode_partition_sketches(junk)
