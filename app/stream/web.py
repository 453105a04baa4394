"""The worker's query views (Faust web pages), beside ``/healthz``.

Registered by :meth:`app.stream.app.TierstreamApp._add_pages` on every worker:

``GET /customers/{customer_id}``
    The customer's tier, stage, churn status, upgrade flag, the features that decide the
    tier and the latest explanation (:func:`app.service.explain.explain`): :func:`customer_view`.
    Routed and answered like the explain (404 for an unknown customer, 503 while the
    owner is unavailable).
``GET /customers/{customer_id}/explain``
    The customer's tier, stage, hysteresis and upgrade flags, the policy's features as of
    the last evaluation and why (:func:`app.service.explain.explain`). Any worker answers: the
    request is forwarded to the worker that owns the customer's partition (see *Routing*).
    404 ``{"error": ..., "customer_id": ...}`` for a customer nobody has seen; 503 while
    the partition's owner is rebalancing, recovering its table or unreachable.
``POST /policy/diff`` (body: a policy YAML; query ``examples=N``, ``as_of=MS``)
    Shadow evaluation of that policy over *this worker's* customers
    (:func:`app.service.shadow.diff_states`): a :class:`app.service.shadow.PolicyDiff` in
    its JSON form,
    plus ``worker`` (this worker's URL and the partitions it covered). 400 with every
    problem for an invalid policy. ``tierstream policy diff --worker`` asks every worker
    and merges the diffs.
``GET /cluster``
    Every worker's web URL and the table partitions it owns, from the partition assignor's
    table metadata (every worker has the same), so clients can fan out.
``GET /tiers/local``
    Customers per tier and per stage in *this worker's* table partitions
    (:class:`app.service.census.Census`: the flushed states, counted as they are written).
``GET /tiers``
    The population per tier and per stage over all workers: every worker of ``/cluster``
    is asked for ``/tiers/local`` and the answers are added up, once each partition was
    covered exactly once (503 otherwise: a worker is missing or rebalancing).

Routing
-------
Input records are keyed by the customer id (UTF-8) and placed by Kafka's default
partitioner, murmur2 of the key modulo the partition count; the table partition a
customer's state lives in is the input partition its events came from (the changelog
and the inputs are co-partitioned). So the owner is found here the same way:
:func:`partition_of` with ``TIERSTREAM_PARTITIONS`` (the count of inputs and table
alike), then the assignor's table metadata for that changelog partition.

Faust's ``@app.table_route`` (``Router.route_req``) picks the same owner here: its
``key_store`` hashes the raw key with the same murmur2 (aiokafka's
``DefaultPartitioner``) and looks the partition up in the same assignor metadata (checked
on two running workers with four partitions: ``Router.key_store`` and :func:`partition_of`
named the same worker for every key tried). That holds because the changelog has as many
partitions as the inputs. It is not used because it takes that count from the
*producer's* metadata cache for the changelog (``Producer.key_partition``), not from the
inputs the keys were partitioned by (a changelog with another count would route to the
wrong worker), and it raises (a 500) instead of routing when that cache does not know the
topic. Its forwarding cannot tell a forwarded request from a client's either, so two
workers with different views of the assignment during a rebalance could forward a request
back and forth, and an unreachable owner is a 500. Here a forwarded request carries
``X-Tierstream-Forwarded`` and is answered by the receiver or refused (503), never
forwarded again; an unreachable owner is a 503; answers carry ``X-Tierstream-Worker`` and
``X-Tierstream-Partition`` (who answered, for which partition).

Customer ids never reach the logs: failures are logged with the error's type and place.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from aiokafka.partitioner import murmur2
from yarl import URL

from app.domain.policy import Policy
from app.domain.state import CustomerState

if TYPE_CHECKING:
    from app.service.shadow import PolicyDiff
    from app.stream.app import TierstreamApp

log = logging.getLogger(__name__)

FORWARDED = "X-Tierstream-Forwarded"
WORKER = "X-Tierstream-Worker"
PARTITION = "X-Tierstream-Partition"
#: How long a forwarded explain (or a worker's ``/tiers/local``) may take.
FORWARD_TIMEOUT_S = 10.0
#: How long the clock-mode check waits for another worker's ``/cluster``.
CLOCK_CHECK_TIMEOUT_S = 3.0
#: Customers decided between two turns of the event loop in ``POST /policy/diff``.
DIFF_CHUNK = 1000


def partition_of(customer_id: str, partitions: int) -> int:
    """The partition of a customer's records: Kafka's default partitioner (the Java
    client's and aiokafka's ``DefaultPartitioner``) on the UTF-8 customer id.

    >>> [partition_of(c, 4) for c in ("c0000", "c0001", "c0002")]
    [2, 3, 1]
    """
    hashed: int = murmur2(customer_id.encode("utf-8"))
    return (hashed & 0x7FFFFFFF) % partitions


def owners(metadata: Mapping[str, Mapping[str, Iterable[int]]], topic: str) -> dict[int, str]:
    """Partition -> worker URL of ``topic`` from the assignor's host -> topic ->
    partitions map (``PartitionAssignor.table_metadata``)."""
    return {p: url for url, topics in metadata.items() for p in topics.get(topic, ())}


def same_worker(a: str, b: str) -> bool:
    """Whether two worker URLs name the same host and port (as Faust compares them)."""
    ua, ub = URL(a), URL(b)
    return (ua.host or "", ua.port or 80) == (ub.host or "", ub.port or 80)


def cluster_view(
    metadata: Mapping[str, Mapping[str, Iterable[int]]], topic: str, partitions: int
) -> dict[str, Any]:
    """The ``workers`` (URL and partitions, by URL) and the ``unassigned`` partitions."""
    workers = [
        {"url": url, "partitions": sorted(topics.get(topic, ()))}
        for url, topics in sorted(metadata.items())
    ]
    covered = {p for w in workers for p in w["partitions"]}
    return {"workers": workers, "unassigned": sorted(set(range(partitions)) - covered)}


class Node:
    """This worker's place in the cluster, as the partition assignor sees it."""

    def __init__(self, tapp: TierstreamApp) -> None:
        self.tapp = tapp

    @property
    def url(self) -> str:
        return str(self.tapp.faust.conf.canonical_url)

    @property
    def changelog(self) -> str:
        name: str = self.tapp.customer_state.changelog_topic.get_topic_name()
        return name

    def metadata(self) -> Mapping[str, Mapping[str, Iterable[int]]]:
        meta: Mapping[str, Mapping[str, Iterable[int]]] = self.tapp.faust.assignor.table_metadata(
            self.changelog
        )
        return meta

    def owner(self, partition: int) -> str | None:
        return owners(self.metadata(), self.changelog).get(partition)

    def serving(self) -> bool:
        """The table is recovered and no rebalance is under way: what the table holds for
        the active partitions is complete."""
        app: Any = self.tapp.faust
        return bool(app.tables.recovery.completed.is_set() and not app.rebalancing)

    def generation(self) -> int:
        return int(self.tapp.faust.consumer_generation_id)


def register_pages(tapp: TierstreamApp) -> None:
    """Attach the query views to ``tapp.faust``."""
    from faust.web import View

    app = tapp.faust
    node = Node(tapp)
    partitions = tapp.settings.partitions

    @app.page("/customers/{customer_id}/explain", name="explain")
    async def explain_view(web: Any, request: Any, customer_id: str) -> Any:
        try:
            return await _explain(tapp, node, partitions, web, request, customer_id)
        except Exception as exc:
            return _failed(web, "explain", exc)

    @app.page("/customers/{customer_id}", name="customer")
    async def customer(web: Any, request: Any, customer_id: str) -> Any:
        try:
            return await _explain(
                tapp, node, partitions, web, request, customer_id, render=customer_view
            )
        except Exception as exc:
            return _failed(web, "customer", exc)

    @app.page("/tiers/local", name="tiers_local")
    async def tiers_local(web: Any, request: Any) -> Any:
        try:
            return _tiers_local(tapp, node, web)
        except Exception as exc:
            return _failed(web, "tiers", exc)

    @app.page("/tiers", name="tiers")
    async def tiers(web: Any, request: Any) -> Any:
        try:
            return await _tiers(tapp, node, partitions, web)
        except Exception as exc:
            return _failed(web, "tiers", exc)

    @app.page("/cluster", name="cluster")
    async def cluster(web: Any, request: Any) -> Any:
        view = cluster_view(node.metadata(), node.changelog, partitions)
        return web.json(
            {
                "app_id": tapp.settings.app_id,
                "worker": node.url,
                "clock_mode": tapp.settings.clock_mode,
                "started_at": tapp.started_at,
                "serving": node.serving(),
                "table": node.changelog,
                "partitions": partitions,
                **view,
                "policy": tapp.batch.policy.key,
            }
        )

    checks: set[asyncio.Future[None]] = set()

    async def _assigned(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        check = asyncio.ensure_future(check_clock_modes(tapp, node))
        checks.add(check)
        check.add_done_callback(checks.discard)

    app.on_partitions_assigned.connect(_assigned)  # type: ignore[arg-type]

    class PolicyDiffView(View):  # type: ignore[misc]
        async def post(self, request: Any) -> Any:
            try:
                return await _policy_diff(tapp, node, self, request)
            except Exception as exc:
                return _failed(self, "policy diff", exc)

    app.page("/policy/diff", name="policy_diff")(PolicyDiffView)


async def check_clock_modes(tapp: TierstreamApp, node: Node) -> None:
    """Workers of one group must share ``TIERSTREAM_CLOCK_MODE``: a partition's clock (and
    so what falls due when) would otherwise depend on which worker owns it, and change
    with every rebalance. After each assignment this worker asks the others (``GET
    /cluster``); if one that started earlier runs the other mode, this one refuses to run
    (:meth:`TierstreamApp.refuse`: stops, exit code 2). Workers that do not answer are
    passed over (the check runs again at the next assignment)."""
    import aiohttp

    mine, mode = node.url, tapp.settings.clock_mode
    client: Any = tapp.faust.http_client
    for url in sorted(node.metadata()):
        if same_worker(url, mine):
            continue
        try:
            async with client.get(
                url.rstrip("/") + "/cluster",
                timeout=aiohttp.ClientTimeout(total=CLOCK_CHECK_TIMEOUT_S),
            ) as resp:
                doc = await resp.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, ValueError):
            continue
        if not isinstance(doc, dict):
            continue
        theirs, started = doc.get("clock_mode"), doc.get("started_at")
        if theirs in (None, mode) or not isinstance(started, int):
            continue
        if (started, url) < (tapp.started_at, mine):
            tapp.refuse(
                f"the worker at {url} of group {tapp.settings.app_id!r} runs "
                f"TIERSTREAM_CLOCK_MODE={theirs}, this one {mode}: the workers of one group "
                f"must use one clock mode, so this one (started later) stops"
            )
            return


def _failed(web: Any, what: str, exc: Exception) -> Any:
    """A 500, logged without the error's message (it could hold a customer id)."""
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" at {frame.filename}:{frame.lineno}" if frame is not None else ""
    log.error("%s failed: %s%s", what, type(exc).__name__, where)
    return web.json({"error": f"{what} failed: {type(exc).__name__}"}, status=500)


def _unavailable(web: Any, why: str, **extra: Any) -> Any:
    return web.json({"error": why, **extra}, status=503, headers={"Retry-After": "1"})


def customer_view(policy: Policy, state: CustomerState) -> dict[str, Any]:
    """``GET /customers/{id}``: where the customer stands, and why (the explain)."""
    from app.service.explain import evaluated_at, explain

    why = explain(policy, state)
    return {
        "customer_id": state.customer_id,
        "tier": state.tier,
        "tier_since": state.tier_since,
        "stage": state.stage,
        "stage_since": state.stage_since,
        "pending_tier": state.pending_tier,
        "upgrade_candidate_since": state.upgrade_since,
        "churn": {
            "severity": state.churn_severity,
            "since": state.churn_since,
            "at_risk": state.churn_severity is not None,
        },
        "policy": state.policy,
        "as_of": evaluated_at(state),
        "features": why["deciding"],
        "explanation": why,
    }


def _tiers_local(tapp: TierstreamApp, node: Node, web: Any) -> Any:
    if not node.serving() or not tapp.census_current:
        return _unavailable(web, "this worker is rebalancing or recovering; retry")
    partitions = tapp.active_partitions()
    tiers, stages = tapp.batch.census.totals(partitions)
    return web.json(
        {
            "worker": node.url,
            "partitions": sorted(partitions),
            "customers": sum(tiers.values()),
            "tiers": tiers,
            "stages": stages,
        }
    )


async def _tiers(tapp: TierstreamApp, node: Node, partitions: int, web: Any) -> Any:
    """Every worker's ``/tiers/local``, added up."""
    import aiohttp

    view = cluster_view(node.metadata(), node.changelog, partitions)
    workers = [w for w in view["workers"] if w["partitions"]]
    if view["unassigned"] or not workers:
        return _unavailable(
            web,
            "some partitions have no worker (starting or rebalancing?); retry",
            unassigned=view["unassigned"],
        )
    client: Any = tapp.faust.http_client

    async def ask(url: str) -> tuple[int, Any]:
        try:
            async with client.get(
                url.rstrip("/") + "/tiers/local",
                timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S),
            ) as resp:
                return resp.status, await resp.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            return 503, {"error": f"no answer ({type(exc).__name__})"}

    answers = await asyncio.gather(*(ask(w["url"]) for w in workers))
    total_tiers: dict[str, int] = {}
    total_stages: dict[str, int] = {}
    covered: list[int] = []
    per_worker = []
    for w, (status, doc) in zip(workers, answers, strict=True):
        if status != 200 or not isinstance(doc, dict):
            error = doc.get("error") if isinstance(doc, dict) else None
            return _unavailable(
                web,
                f"the worker at {w['url']} answered {status}: {error}; retry",
                worker=w["url"],
            )
        covered.extend(doc["partitions"])
        for name, n in doc["tiers"].items():
            total_tiers[name] = total_tiers.get(name, 0) + int(n)
        for name, n in doc["stages"].items():
            total_stages[name] = total_stages.get(name, 0) + int(n)
        per_worker.append(
            {"url": w["url"], "partitions": doc["partitions"], "customers": doc["customers"]}
        )
    if sorted(covered) != list(range(partitions)):
        return _unavailable(
            web,
            "the workers did not cover every partition once (a rebalance?); retry",
            covered=sorted(covered),
        )
    return web.json(
        {
            "customers": sum(total_tiers.values()),
            "tiers": dict(sorted(total_tiers.items())),
            "stages": dict(sorted(total_stages.items())),
            "partitions": partitions,
            "workers": per_worker,
            "policy": tapp.batch.policy.key,
        }
    )


async def _explain(
    tapp: TierstreamApp,
    node: Node,
    partitions: int,
    web: Any,
    request: Any,
    customer_id: str,
    render: Callable[[Policy, CustomerState], dict[str, Any]] | None = None,
) -> Any:
    """The customer's explain (or ``render`` of the state), from the partition's owner."""
    from app.service.explain import explain

    partition = partition_of(customer_id, partitions)
    owner = node.owner(partition)
    if owner is None:
        return _unavailable(web, "no worker owns the partition yet", partition=partition)
    if not same_worker(owner, node.url):
        if request.headers.get(FORWARDED) is not None:  # never a second hop
            return _unavailable(
                web, "partition ownership is changing (rebalance); retry", partition=partition
            )
        return await _forward(tapp, web, request, owner, partition)
    if not node.serving() or partition not in tapp.active_partitions():
        return _unavailable(
            web, "the partition's owner is rebalancing or recovering; retry", partition=partition
        )
    headers = {WORKER: node.url, PARTITION: str(partition)}
    state = tapp.lookup(customer_id)
    if state is None:
        return web.json(
            {"error": "unknown customer", "customer_id": customer_id},
            status=404,
            headers=headers,
        )
    return web.json((render or explain)(tapp.batch.policy, state), headers=headers)


async def _forward(tapp: TierstreamApp, web: Any, request: Any, owner: str, partition: int) -> Any:
    """Ask ``owner`` the same request; its answer (status, body, who answered) as is."""
    import aiohttp

    url = URL(owner.rstrip("/") + request.raw_path, encoded=True)
    client: Any = tapp.faust.http_client
    try:
        async with client.request(
            request.method,
            url,
            headers={FORWARDED: str(tapp.faust.conf.canonical_url)},
            timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S),
        ) as resp:
            body = await resp.read()
            headers = {k: resp.headers[k] for k in (WORKER, PARTITION) if k in resp.headers}
            if "Retry-After" in resp.headers:
                headers["Retry-After"] = resp.headers["Retry-After"]
            return web.bytes(
                body, content_type=resp.content_type, status=resp.status, headers=headers
            )
    except (TimeoutError, aiohttp.ClientError) as exc:
        return _unavailable(
            web,
            f"the partition's owner does not answer ({type(exc).__name__})",
            partition=partition,
            worker=owner,
        )


async def _policy_diff(tapp: TierstreamApp, node: Node, web: Any, request: Any) -> Any:
    from app.adapters.policy_files import parse_policy
    from app.domain.errors import PolicyError

    try:
        text = (await web.read_request_content(request)).decode("utf-8")
    except UnicodeDecodeError as exc:
        return web.json({"error": f"the policy is not UTF-8 text: {exc.reason}"}, status=400)
    try:
        new = parse_policy(text, "<request body>")
    except PolicyError as exc:
        problems = [{"path": where, "problem": what} for where, what in exc.problems]
        return web.json({"error": "invalid policy", "problems": problems}, status=400)
    try:
        examples = int(request.query.get("examples", "3"))
        as_of = request.query.get("as_of")
        at = int(as_of) if as_of not in (None, "") else None
        if examples < 0:
            raise ValueError
    except ValueError:
        return web.json(
            {"error": "examples must be a whole number >= 0 and as_of epoch milliseconds"},
            status=400,
        )
    if not node.serving():
        return _unavailable(web, "this worker is rebalancing or recovering; retry")
    generation, partitions = node.generation(), tapp.active_partitions()
    try:
        diff = await worker_diff(tapp, new, partitions, at, examples)
    except Exception:
        if node.generation() == generation:
            raise
        diff = None  # a revoked partition's store went away under the diff
    if diff is None or node.generation() != generation or tapp.active_partitions() != partitions:
        return _unavailable(web, "a rebalance happened during the diff; retry")
    body = diff.to_dict()
    body["worker"] = {"url": node.url, "partitions": sorted(partitions)}
    return web.json(body)


def _states(tapp: TierstreamApp, partitions: set[int]) -> Iterator[CustomerState]:
    """The newest state of every customer of ``partitions``: the ones touched since the
    last flush (some are in no store yet), then the stored ones, decoded only when not in
    memory (as :meth:`TierstreamApp.lookup`)."""
    from app.service.processor import decode_state

    fresh = {s.customer_id: s for p, s in tapp.batch.unflushed_states() if p in partitions}
    yield from fresh.values()
    peek = tapp.batch.peek
    for _, key, raw in tapp.store.stored_items(partitions):
        customer_id = key.decode("utf-8")
        if customer_id not in fresh:
            yield peek(customer_id) or decode_state(raw)


async def worker_diff(
    tapp: TierstreamApp, new: Policy, partitions: set[int], at: int | None, examples: int
) -> PolicyDiff:
    """The diff of the policy in force against ``new`` over the customers of
    ``partitions``, a chunk at a time so that the worker keeps processing meanwhile.
    A new policy with percentile conditions decides with the cut-offs in force."""
    from app.service.shadow import PolicyDiff, diff_states

    old = tapp.batch.policy
    if new.ranked:
        new = new.with_cutoffs(old.cutoffs)
    diff = PolicyDiff.between(old, new, examples, at)
    states = _states(tapp, partitions)
    while chunk := list(itertools.islice(states, DIFF_CHUNK)):
        diff = diff.merge(diff_states(chunk, old, new, at, examples))
        await asyncio.sleep(0)
    return diff
