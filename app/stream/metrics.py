"""The worker's Prometheus metrics (``GET /metrics``); names and labels are a contract
with the dashboards and alert rules in ``deploy/`` (README, Operations: never rename).

:class:`WorkerMetrics` owns a :class:`~prometheus_client.CollectorRegistry` (a fresh one
per worker unless one is given: tests build their own and read values with
``registry.get_sample_value``). Two kinds of metric:

* **counters**, added to once per batch from its :class:`~app.service.processor.BatchOutcome`
  (:meth:`WorkerMetrics.add`), per flush (:meth:`WorkerMetrics.add_flush`) and per timer
  run: the batch is tallied by label set first, then each label set's child is
  incremented once. Children are looked up once and kept, so a batch costs a few dict
  operations per label set, not a ``labels()`` call per event;
* **state**, computed at scrape time by a collector from callbacks into the worker
  (:class:`WorkerView`): customers per tier and stage (:class:`app.service.census.Census`, kept
  in O(changes)), table size, consumer and event-time lag, recovery, assignment, the
  policy in force. Nothing of it is updated per event.

``tierstream_processing_latency_seconds`` is a histogram whose buckets this module counts
itself (:class:`LatencyHistogram`): ``Histogram.observe`` takes a lock and walks the
buckets (~1.1 us a call here); a ``bisect`` into a list of counts costs ~0.2 us an event.

No label ever holds a customer id: labels are kinds, outcomes, reason codes, tier and
stage names of the policy, severities, logical topic names and partition numbers.
"""

from __future__ import annotations

import bisect
import platform
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from app import __version__
from app.service.processor import BatchOutcome, Flush
from schemas import REASONS
from schemas.topics import CUSTOMERS, DEAD_LETTER, INPUTS, WRITTEN

#: Input kinds (``unknown``: a record of a topic that is no input topic, never expected).
KINDS: tuple[str, ...] = tuple(t.kind for t in INPUTS)
OUTCOMES = ("applied", "duplicate", "dead_letter")
#: Dead-letter reasons besides the decoding ones of :data:`schemas.REASONS`.
CORE_REASONS = ("key_mismatch", "processing_error")
#: The logical names of the output topics (``tierstream_output_records_total{topic}``):
#: every topic the worker writes (schemas.topics).
OUTPUT_TOPICS = WRITTEN
#: Upper bounds of the latency buckets, seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

#: Every metric name (without the ``_total``/``_bucket`` suffixes the exposition adds),
#: its type and labels: the contract, documented in README (tests/contracts/test_docs.py).
METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "tierstream_events_processed_total": ("counter", ("kind", "outcome")),
    "tierstream_dead_letters_total": ("counter", ("reason",)),
    "tierstream_duplicates_dropped_total": ("counter", ("kind",)),
    "tierstream_tier_changes_total": ("counter", ("from_tier", "to_tier")),
    "tierstream_lifecycle_changes_total": ("counter", ("from_stage", "to_stage")),
    "tierstream_churn_warnings_total": ("counter", ("severity",)),
    "tierstream_churn_cleared_total": ("counter", ()),
    "tierstream_upgrade_candidates_total": ("counter", ()),
    "tierstream_output_records_total": ("counter", ("topic",)),
    "tierstream_rebalances_total": ("counter", ()),
    "tierstream_timer_reevaluations_total": ("counter", ()),
    "tierstream_processing_latency_seconds": ("histogram", ()),
    "tierstream_customers": ("gauge", ("tier",)),
    "tierstream_customers_by_stage": ("gauge", ("stage",)),
    "tierstream_table_customers": ("gauge", ()),
    "tierstream_event_time_lag_seconds": ("gauge", ("partition",)),
    "tierstream_consumer_lag_messages": ("gauge", ("topic", "partition")),
    "tierstream_recovering": ("gauge", ()),
    "tierstream_recovery_seconds": ("gauge", ()),
    "tierstream_assigned_partitions": ("gauge", ()),
    "tierstream_policy_info": ("gauge", ("name", "version")),
    "tierstream_build_info": ("gauge", ("version", "python")),
}


class WorkerView(Protocol):
    """What the scrape-time collector asks the worker (:class:`app.stream.app.TierstreamApp`
    implements it). Called on the event loop, synchronously: keep each one cheap."""

    def tier_counts(self) -> tuple[Mapping[str, int], Mapping[str, int]]:
        """Customers by tier and by stage in this worker's table partitions."""
        ...

    def event_times(self) -> Mapping[int, int]:
        """Assigned partition -> event time (epoch ms) of the latest event processed."""
        ...

    def consumer_lags(self) -> Mapping[tuple[str, int], int]:
        """(logical input topic, partition) -> high watermark minus next offset."""
        ...

    def recovering(self) -> bool: ...

    def recovery_seconds(self) -> float | None:
        """How long the last table recovery took (None: none finished yet)."""
        ...

    def assigned_partitions(self) -> int:
        """Input topic-partitions assigned to this worker."""
        ...

    def policy_in_force(self) -> tuple[str, str]:
        """(name, version) of the policy in force."""
        ...


class LatencyHistogram:
    """Bucket counts and sum of ``tierstream_processing_latency_seconds``, kept here and
    exposed by :class:`StateCollector` (see the module docstring)."""

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.bounds = list(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0

    def observe_batch(self, stamps: Iterable[float | None], done: float) -> None:
        """One observation per stamp: ``done - stamp`` (seconds; negative clock skew
        counts as 0; a record without a timestamp is left out)."""
        bounds, counts = self.bounds, self.counts
        where = bisect.bisect_left
        total = 0.0
        for stamp in stamps:
            if stamp is None:
                continue
            latency = done - stamp
            if latency < 0.0:
                latency = 0.0
            counts[where(bounds, latency)] += 1
            total += latency
        self.sum += total

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        buckets: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            buckets.append((repr(float(bound)), running))
        running += self.counts[-1]
        buckets.append(("+Inf", running))
        return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=self.sum)


class StateCollector(Collector):
    """The scrape-time metrics: asks the worker (:class:`WorkerView`) at every scrape."""

    def __init__(self, view: WorkerView | None, latency: LatencyHistogram) -> None:
        self.view = view
        self.latency = latency
        self.python = platform.python_version()

    def describe(self) -> Iterable[Metric]:
        return []  # computed at scrape time: the registry must not collect at register

    def collect(self) -> Iterator[Metric]:
        yield self.latency.family(
            "tierstream_processing_latency_seconds",
            "Per event: wall time from its Kafka timestamp to the end of processing of its "
            "batch (outputs handed to the producer).",
        )
        build = GaugeMetricFamily(
            "tierstream_build_info", "The build.", labels=("version", "python")
        )
        build.add_metric((__version__, self.python), 1)
        yield build
        view = self.view
        if view is None:
            return
        tiers, stages = view.tier_counts()
        customers = GaugeMetricFamily(
            "tierstream_customers",
            "Customers per tier in this worker's table partitions (summed over workers: "
            "the population).",
            labels=("tier",),
        )
        for tier, n in sorted(tiers.items()):
            customers.add_metric((tier,), n)
        yield customers
        by_stage = GaugeMetricFamily(
            "tierstream_customers_by_stage",
            "Customers per lifecycle stage in this worker's table partitions.",
            labels=("stage",),
        )
        for stage, n in sorted(stages.items()):
            by_stage.add_metric((stage,), n)
        yield by_stage
        yield GaugeMetricFamily(
            "tierstream_table_customers",
            "Customer states held by this worker's table partitions.",
            value=sum(tiers.values()),
        )
        now_ms = time.time() * 1000.0
        event_lag = GaugeMetricFamily(
            "tierstream_event_time_lag_seconds",
            "Now minus the event time of the latest event processed, per assigned partition.",
            labels=("partition",),
        )
        for partition, at in sorted(view.event_times().items()):
            event_lag.add_metric((str(partition),), max(now_ms - at, 0.0) / 1000.0)
        yield event_lag
        consumer_lag = GaugeMetricFamily(
            "tierstream_consumer_lag_messages",
            "High watermark minus the next offset to process, per assigned input partition.",
            labels=("topic", "partition"),
        )
        for (topic, partition), lag in sorted(view.consumer_lags().items()):
            consumer_lag.add_metric((topic, str(partition)), lag)
        yield consumer_lag
        yield GaugeMetricFamily(
            "tierstream_recovering",
            "1 while partitions are assigned but the tables are still recovering, else 0.",
            value=1 if view.recovering() else 0,
        )
        took = view.recovery_seconds()
        recovery = GaugeMetricFamily(
            "tierstream_recovery_seconds", "How long the last table recovery took."
        )
        if took is not None:
            recovery.add_metric((), took)
        yield recovery
        yield GaugeMetricFamily(
            "tierstream_assigned_partitions",
            "Input topic-partitions assigned to this worker.",
            value=view.assigned_partitions(),
        )
        name, version = view.policy_in_force()
        policy = GaugeMetricFamily(
            "tierstream_policy_info", "The policy in force.", labels=("name", "version")
        )
        policy.add_metric((name, version), 1)
        yield policy


class WorkerMetrics:
    """Every metric of one worker, in ``registry`` (default: a fresh one).

    ``kinds`` maps each input topic's full name to the kind of event it carries (the
    ``kind`` label); ``view`` answers the scrape-time gauges (None: only the counters,
    the latency histogram and the build info, e.g. in tests)."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        kinds: Mapping[str, str] | None = None,
        view: WorkerView | None = None,
        reasons: Iterable[str] = (),
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.kinds = dict(kinds or {})
        reg = self.registry
        self.events = Counter(
            "tierstream_events_processed",
            "Input records handled, by event kind and outcome.",
            ("kind", "outcome"),
            registry=reg,
        )
        self.dead_letters = Counter(
            "tierstream_dead_letters",
            "Records sent to the dead-letter topic, by reason.",
            ("reason",),
            registry=reg,
        )
        self.duplicates = Counter(
            "tierstream_duplicates_dropped",
            "Duplicate events dropped (also in events_processed outcome=duplicate).",
            ("kind",),
            registry=reg,
        )
        self.tier_changes = Counter(
            "tierstream_tier_changes",
            'Tier changes emitted (from_tier "none": a first tier).',
            ("from_tier", "to_tier"),
            registry=reg,
        )
        self.lifecycle_changes = Counter(
            "tierstream_lifecycle_changes",
            'Lifecycle changes emitted (from_stage "none": a first stage).',
            ("from_stage", "to_stage"),
            registry=reg,
        )
        self.churn_warnings = Counter(
            "tierstream_churn_warnings",
            "Churn warnings emitted, by severity.",
            ("severity",),
            registry=reg,
        )
        self.churn_cleared = Counter(
            "tierstream_churn_cleared", "Churn-warning episodes cleared.", registry=reg
        )
        self.upgrade_candidates = Counter(
            "tierstream_upgrade_candidates", "Upgrade candidates flagged.", registry=reg
        )
        self.output_records = Counter(
            "tierstream_output_records",
            "Records produced, by logical output topic.",
            ("topic",),
            registry=reg,
        )
        self.rebalances = Counter(
            "tierstream_rebalances",
            "Partition assignments seen (rebalances, the first one at start included).",
            registry=reg,
        )
        self.timer_reevaluations = Counter(
            "tierstream_timer_reevaluations",
            "Customers re-evaluated by the timer (due times).",
            registry=reg,
        )
        self.latency = LatencyHistogram()
        self.collector = StateCollector(view, self.latency)
        reg.register(self.collector)
        # Children looked up once (labels() costs ~1 us); the known ones exist from the
        # start at 0, so rate() and absent() work before the first occurrence.
        self._events = {(k, o): self.events.labels(k, o) for k in KINDS for o in OUTCOMES}
        self._dead = {r: self.dead_letters.labels(r) for r in (*REASONS, *CORE_REASONS, *reasons)}
        self._dups = {k: self.duplicates.labels(k) for k in KINDS}
        self._outputs = {t: self.output_records.labels(t) for t in OUTPUT_TOPICS}

    # -- per batch, per flush, per timer run -------------------------------------------
    def add(self, outcome: BatchOutcome) -> None:
        """Count a batch (events, the timer's or a re-evaluation's outputs)."""
        kinds = self.kinds
        handled: dict[str, int] = {}
        for topic, n in outcome.records.items():
            kind = kinds.get(topic, "unknown")
            handled[kind] = handled.get(kind, 0) + n
        if outcome.dead_letters:
            dead_by_kind: dict[str, int] = {}
            reasons: dict[str, int] = {}
            for dl in outcome.dead_letters:
                kind = kinds.get(dl.topic, "unknown")
                dead_by_kind[kind] = dead_by_kind.get(kind, 0) + 1
                reasons[dl.reason] = reasons.get(dl.reason, 0) + 1
            for kind, n in dead_by_kind.items():
                self._event(kind, "dead_letter").inc(n)
                handled[kind] = handled.get(kind, 0) - n
            for reason, n in reasons.items():
                child = self._dead.get(reason)
                if child is None:
                    child = self._dead[reason] = self.dead_letters.labels(reason)
                child.inc(n)
            self._outputs[DEAD_LETTER.name].inc(len(outcome.dead_letters))
        for kind, n in outcome.duplicates_by_kind.items():
            self._event(kind, "duplicate").inc(n)
            dups = self._dups.get(kind)
            if dups is None:
                dups = self._dups[kind] = self.duplicates.labels(kind)
            dups.inc(n)
            handled[kind] = handled.get(kind, 0) - n
        for kind, n in handled.items():
            if n:
                self._event(kind, "applied").inc(n)
        for topic, records in outcome.outputs.items():
            if records:
                self._output(topic).inc(len(records))
        for (kind, a, b), n in outcome.said.items():
            if kind == "tier_change":
                self.tier_changes.labels(a, b).inc(n)
            elif kind == "lifecycle_change":
                self.lifecycle_changes.labels(a, b).inc(n)
            elif kind == "churn_warning":
                self.churn_warnings.labels(a).inc(n)
            elif kind == "churn_cleared":
                self.churn_cleared.inc(n)
            elif kind == "upgrade_candidate":
                self.upgrade_candidates.inc(n)

    def observe_latency(self, stamps: Iterable[float | None], done: float | None = None) -> None:
        """Record ``done`` (default: now, epoch seconds) minus each Kafka timestamp."""
        self.latency.observe_batch(stamps, time.time() if done is None else done)

    def add_flush(self, flush: Flush) -> None:
        """Count a flush's snapshots (``customers`` topic)."""
        if flush.snapshots:
            self._outputs[CUSTOMERS.name].inc(len(flush.snapshots))

    def add_timer(self, reevaluated: int) -> None:
        if reevaluated:
            self.timer_reevaluations.inc(reevaluated)

    def add_rebalance(self) -> None:
        self.rebalances.inc()

    def _event(self, kind: str, outcome: str) -> Counter:
        child = self._events.get((kind, outcome))
        if child is None:
            child = self._events[(kind, outcome)] = self.events.labels(kind, outcome)
        return child

    def _output(self, topic: str) -> Counter:
        child = self._outputs.get(topic)
        if child is None:
            child = self._outputs[topic] = self.output_records.labels(topic)
        return child
