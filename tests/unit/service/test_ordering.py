"""Event-time order across a partition's input topics (app.service.ordering.EventTimeOrder)."""

from __future__ import annotations

import random

from app.service.ordering import EventTimeOrder

TOPICS = ("purchases", "interactions", "profiles")


def order(wait: float = 5.0, max_held: int = 1000) -> EventTimeOrder[str]:
    return EventTimeOrder(TOPICS, max_wait_s=wait, max_held=max_held)


def caught_up_except(*behind: tuple[str, int]) -> object:
    return lambda tp: tp not in behind


def test_a_backlog_is_released_in_event_time_order_across_topics() -> None:
    o = order()
    # a fetch returned weeks of purchases and a few interactions, all of partition 0
    for t in (10, 20, 30, 40, 50):
        o.add("purchases", 0, t, f"p{t}")
    for t in (15, 25):
        o.add("interactions", 0, t, f"i{t}")
    # interactions still has unread records: release only what cannot be overtaken
    got = o.release(caught_up_except(("interactions", 0)), now=0.0)  # type: ignore[arg-type]
    assert got == ["p10", "i15", "p20", "i25"]
    assert o.held == 3
    o.add("interactions", 0, 45, "i45")
    o.add("interactions", 0, 60, "i60")
    # now purchases has unread records (a new fetch is due), interactions not
    got = o.release(caught_up_except(("purchases", 0)), now=1.0)  # type: ignore[arg-type]
    assert got == ["p30", "p40", "i45", "p50"]  # i60 waits: purchases may bring earlier
    got = o.release(lambda tp: True, now=1.0)
    assert got == ["i60"] and o.held == 0


def test_partitions_do_not_wait_for_each_other() -> None:
    o = order()
    o.add("purchases", 0, 50, "p0@50")
    o.add("purchases", 1, 10, "p1@10")
    got = o.release(caught_up_except(("interactions", 0)), now=0.0)  # type: ignore[arg-type]
    assert got == ["p1@10"]  # partition 0 waits for its interactions, 1 does not
    assert o.held == 1


def test_a_topic_that_delivers_nothing_holds_the_others_for_at_most_the_wait() -> None:
    o = order(wait=5.0)
    o.add("purchases", 0, 10, "p10")
    behind = caught_up_except(("profiles", 0))
    assert o.release(behind, now=100.0) == []  # type: ignore[arg-type]
    assert o.next_deadline() == 105.0
    assert o.release(behind, now=104.9) == []  # type: ignore[arg-type]
    assert o.release(behind, now=105.0) == ["p10"]  # type: ignore[arg-type]
    assert o.forced == 1 and o.next_deadline() is None


def test_the_wait_starts_again_once_the_topic_that_was_behind_delivered() -> None:
    o = order(wait=5.0)
    o.add("purchases", 0, 10, "p10")
    o.add("purchases", 0, 30, "p30")
    behind = caught_up_except(("interactions", 0))
    assert o.release(behind, now=0.0) == []  # type: ignore[arg-type]
    o.add("interactions", 0, 20, "i20")
    assert o.release(behind, now=4.0) == ["p10", "i20"]  # type: ignore[arg-type]
    # interactions is empty and behind again: a new wait from now, not from 0
    assert o.release(behind, now=6.0) == []  # type: ignore[arg-type]
    assert o.release(behind, now=9.0) == ["p30"]  # type: ignore[arg-type]
    assert o.forced == 1


def test_too_many_held_records_go_on_regardless() -> None:
    o = order(wait=60.0, max_held=3)
    for t in (1, 2, 3, 4):
        o.add("purchases", 0, t, f"p{t}")
    got = o.release(caught_up_except(("interactions", 0)), now=0.0)  # type: ignore[arg-type]
    assert got == ["p1", "p2"]  # down to below the bound, then waiting again
    assert o.held == 2 and o.forced == 2


def test_records_without_event_time_pass_at_the_head_of_their_queue() -> None:
    o = order()
    o.add("purchases", 0, None, "bad1")
    o.add("purchases", 0, 50, "p50")
    o.add("purchases", 0, None, "bad2")  # behind p50 in its topic-partition: waits with it
    got = o.release(caught_up_except(("interactions", 0)), now=0.0)  # type: ignore[arg-type]
    assert got == ["bad1"]
    assert o.release(lambda tp: True, now=0.0) == ["p50", "bad2"]


def test_offset_order_within_a_topic_partition_is_kept() -> None:
    o = order()
    for t in (30, 10, 20):  # late events within one topic stay where they are
        o.add("purchases", 0, t, f"p{t}")
    o.add("interactions", 0, 15, "i15")
    assert o.release(lambda tp: True, now=0.0) == ["i15", "p30", "p10", "p20"]


def test_equal_times_follow_the_topic_order() -> None:
    o = order()
    o.add("profiles", 0, 5, "f5")
    o.add("interactions", 0, 5, "i5")
    o.add("purchases", 0, 5, "p5")
    assert o.release(lambda tp: True, now=0.0) == ["p5", "i5", "f5"]


def test_drop_forgets_everything() -> None:
    o = order()
    o.add("purchases", 0, 1, "a")
    o.add("interactions", 2, 2, "b")
    assert sorted(o.drop()) == ["a", "b"]
    assert o.held == 0 and o.next_deadline() is None
    assert o.release(lambda tp: True, now=0.0) == []


def test_any_arrival_pattern_gives_the_merged_event_time_order() -> None:
    """Records of three topics, each in event-time order, arriving in random chunks per
    topic: released in global event-time order, whatever the chunks."""
    rng = random.Random(13)
    for _ in range(200):
        lanes = {t: sorted(rng.sample(range(10_000), rng.randrange(0, 30))) for t in TOPICS}
        pending = {t: list(ts) for t, ts in lanes.items()}
        o = order()
        out: list[str] = []
        while any(pending.values()):
            topic = rng.choice([t for t in TOPICS if pending[t]])
            n = rng.randrange(1, 6)
            for t in pending[topic][:n]:
                o.add(topic, 0, t, f"{t:05d}{topic}")
            pending[topic] = pending[topic][n:]
            out += o.release(lambda tp, p=pending: not p[tp[0]], now=0.0)
        assert o.held == 0 and o.forced == 0
        assert out == sorted(out, key=lambda s: (int(s[:5]), TOPICS.index(s[5:])))
