"""The rebalance listener (`on_assign`, `on_revoke`) on both backends, with one set of tests.

Every test runs on `headwater.open(dir)` (embedded) and on `headwater.connect(...)` to a
real `headwater serve` process (kafka). Two members of one group share a 4-partition
topic through the eager range assignor; each records what its callbacks saw, and the
records it read, on one timeline.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import headwater
from headwater import TopicPartition
from headwater.errors import ClosedError, ConfigError, GroupError

TOPIC = "t"
ALL = [TopicPartition(TOPIC, p) for p in range(4)]
# The server's smallest session (group.min.session.timeout.ms); embedded members
# heartbeat at every poll, so a short session only matters to the kafka backend.
GROUP = {"session_timeout_ms": 6000, "enable_auto_commit": False}


@pytest.fixture(params=["embedded", "kafka"])
def cluster(request: pytest.FixtureRequest, tmp_path) -> Iterator[Any]:
    if request.param == "embedded":
        handle = headwater.open(str(tmp_path / "data"))
    else:
        server = request.getfixturevalue("make_server")()
        handle = headwater.connect("kafka://" + server.bootstrap)
    handle.create_topic(TOPIC, partitions=4)
    yield handle
    handle.close()


def fill(cluster: Any, per_partition: int) -> None:
    with cluster.producer() as producer:
        for p in range(4):
            for i in range(per_partition):
                producer.send(TOPIC, b"%d" % i, partition=p)


class Member:
    """A group member whose callbacks and records land on `timeline` in order."""

    def __init__(
        self,
        cluster: Any,
        name: str,
        timeline: list[tuple[Any, ...]],
        *,
        revoke: Callable[[Member, list[TopicPartition]], None] | None = None,
        assign: Callable[[Member, list[TopicPartition]], None] | None = None,
        **config: Any,
    ) -> None:
        self.name = name
        self.timeline = timeline
        self._revoke = revoke
        self._assign = assign
        self.consumer = cluster.consumer(
            TOPIC,
            group="g",
            auto_offset_reset="earliest",
            on_assign=self.on_assign,
            on_revoke=self.on_revoke,
            **{**GROUP, **config},
        )

    def on_assign(self, partitions: list[TopicPartition]) -> None:
        self.timeline.append((self.name, "assign", sorted(partitions)))
        if self._assign is not None:
            self._assign(self, partitions)

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        self.timeline.append((self.name, "revoke", sorted(partitions)))
        if self._revoke is not None:
            self._revoke(self, partitions)

    def poll(self) -> None:
        for r in self.consumer.poll(0.05):
            self.timeline.append(
                (self.name, "record", TopicPartition(r.topic, r.partition), r.offset)
            )

    def events(self) -> list[tuple[str, list[TopicPartition]]]:
        return [(e[1], e[2]) for e in self.timeline if e[0] == self.name and e[1] != "record"]

    def first_offsets_after_last_assign(self) -> dict[TopicPartition, int]:
        """The first offset read from each partition since the latest on_assign."""
        mine = [e for e in self.timeline if e[0] == self.name]
        last = max((i for i, e in enumerate(mine) if e[1] == "assign"), default=len(mine))
        first: dict[TopicPartition, int] = {}
        for e in mine[last + 1 :]:
            first.setdefault(e[2], e[3])
        return first


def poll_until(members: list[Member], done: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out; timeline: {members[0].timeline[-20:]}"
        for m in members:
            m.poll()


def split_evenly(a: Member, b: Member) -> bool:
    owned = [a.consumer.assignment(), b.consumer.assignment()]
    return sorted(len(o) for o in owned) == [2, 2] and set(owned[0]).isdisjoint(owned[1])


def test_revoke_comes_first_and_its_commit_is_where_both_members_restart(cluster) -> None:
    fill(cluster, 10)
    timeline: list[tuple[Any, ...]] = []
    seen: dict[TopicPartition, int] = {}

    def commit_three_back(member: Member, partitions: list[TopicPartition]) -> None:
        positions = {tp: member.consumer.position(tp) for tp in partitions}
        seen.update(positions)
        member.consumer.commit({tp: offset - 3 for tp, offset in positions.items()})

    a = Member(cluster, "a", timeline, revoke=commit_three_back)
    poll_until([a], lambda: sum(e[1] == "record" for e in timeline) == 40)
    assert a.events() == [("assign", ALL)]

    b = Member(cluster, "b", timeline)
    poll_until([a, b], lambda: split_evenly(a, b) and len(b.first_offsets_after_last_assign()) == 2)
    poll_until([a, b], lambda: len(a.first_offsets_after_last_assign()) == 2)
    assert seen == dict.fromkeys(ALL, 10)  # positions were readable inside on_revoke
    assert a.events() == [("assign", ALL), ("revoke", ALL), ("assign", a.consumer.assignment())]
    assert b.events() == [("assign", b.consumer.assignment())]
    # Eager: every partition, kept or moved, restarts at the offset committed in on_revoke.
    assert a.first_offsets_after_last_assign() == dict.fromkeys(a.consumer.assignment(), 7)
    assert b.first_offsets_after_last_assign() == dict.fromkeys(b.consumer.assignment(), 7)
    # Nothing was read between a's revoke and its new assignment.
    kinds = [e[1] for e in timeline if e[0] == "a"]
    assert kinds[kinds.index("revoke") + 1] == "assign"
    a.consumer.close()
    b.consumer.close()


def test_a_seek_in_on_assign_decides_the_first_record_even_over_fetched_ones(cluster) -> None:
    fill(cluster, 50)
    timeline: list[tuple[Any, ...]] = []
    starts = iter([4, 40, 40])

    def seek(member: Member, partitions: list[TopicPartition]) -> None:
        start = next(starts)
        for tp in partitions:
            member.consumer.seek(tp, start)

    # One record per poll, so a still has fetched records of its old assignment
    # when the rebalance comes.
    a = Member(cluster, "a", timeline, assign=seek, max_poll_records=1)
    poll_until([a], lambda: len(a.first_offsets_after_last_assign()) == 4)
    assert a.first_offsets_after_last_assign() == dict.fromkeys(ALL, 4)

    b = Member(cluster, "b", timeline, assign=seek, max_poll_records=1)
    poll_until(
        [a, b],
        lambda: (
            split_evenly(a, b)
            and len(a.first_offsets_after_last_assign()) == 2
            and len(b.first_offsets_after_last_assign()) == 2
        ),
    )
    assert [kind for kind, _ in a.events()] == ["assign", "revoke", "assign"]
    assert a.first_offsets_after_last_assign() == dict.fromkeys(a.consumer.assignment(), 40)
    assert b.first_offsets_after_last_assign() == dict.fromkeys(b.consumer.assignment(), 40)
    a.consumer.close()
    b.consumer.close()


def test_closing_one_member_revokes_its_partitions_and_gives_all_to_the_other(cluster) -> None:
    timeline: list[tuple[Any, ...]] = []
    a = Member(cluster, "a", timeline)
    b = Member(cluster, "b", timeline)
    poll_until([a, b], lambda: split_evenly(a, b))
    owned_by_b = b.consumer.assignment()
    del timeline[:]
    b.consumer.close()
    assert b.events() == [("revoke", owned_by_b)]  # called by close(), before leaving
    poll_until([a], lambda: len(a.consumer.assignment()) == 4)
    assert a.events()[-2:] == [("revoke", sorted(set(ALL) - set(owned_by_b))), ("assign", ALL)]
    a.consumer.close()
    assert a.events()[-1] == ("revoke", ALL)


def test_an_error_in_on_assign_propagates_from_poll_and_the_assignment_stands(cluster) -> None:
    fill(cluster, 3)
    timeline: list[tuple[Any, ...]] = []

    def fail(member: Member, partitions: list[TopicPartition]) -> None:
        raise RuntimeError(f"restore of {member.name} failed")

    a = Member(cluster, "a", timeline, assign=fail)
    with pytest.raises(RuntimeError, match="restore of a failed"):
        poll_until([a], lambda: False)
    assert timeline == [("a", "assign", ALL)]
    assert a.consumer.assignment() == ALL
    poll_until([a], lambda: len(timeline) == 13)
    assert sorted(e[2:] for e in timeline[1:]) == [(tp, o) for tp in ALL for o in range(3)]
    a.consumer.close()


def test_an_error_in_on_revoke_propagates_and_the_partitions_are_still_given_up(cluster) -> None:
    timeline: list[tuple[Any, ...]] = []

    def fail(member: Member, partitions: list[TopicPartition]) -> None:
        raise RuntimeError(f"flush of {member.name} failed")

    a = Member(cluster, "a", timeline, revoke=fail)
    poll_until([a], lambda: len(a.consumer.assignment()) == 4)
    b = Member(cluster, "b", timeline)
    with pytest.raises(RuntimeError, match="flush of a failed"):
        poll_until([a, b], lambda: False)
    assert a.consumer.assignment() == []
    poll_until([a, b], lambda: split_evenly(a, b))
    # close() still closes (and leaves) when on_revoke raises there.
    with pytest.raises(RuntimeError, match="flush of a failed"):
        a.consumer.close()
    with pytest.raises(ClosedError):
        a.consumer.poll(0)
    poll_until([b], lambda: len(b.consumer.assignment()) == 4)
    b.consumer.close()


def test_a_lost_membership_still_calls_on_revoke_and_its_commit_is_refused(
    cluster, request: pytest.FixtureRequest
) -> None:
    if "kafka" in request.node.callspec.id:
        # librdkafka heartbeats on its own threads: only max.poll.interval.ms loses it.
        config = {"max_poll_interval_ms": 6000}
        silence = 8.0
    else:
        config = {"session_timeout_ms": 500}
        silence = 1.5
    timeline: list[tuple[Any, ...]] = []
    commits: list[str] = []

    def commit(member: Member, partitions: list[TopicPartition]) -> None:
        try:
            member.consumer.commit(dict.fromkeys(partitions, 0))
        except GroupError:
            commits.append("refused")
        else:
            commits.append("stored")

    a = Member(cluster, "a", timeline, revoke=commit, **config)
    poll_until([a], lambda: len(a.consumer.assignment()) == 4)
    time.sleep(silence)
    poll_until([a], lambda: len(a.events()) == 3)
    assert a.events() == [("assign", ALL), ("revoke", ALL), ("assign", ALL)]
    assert commits == ["refused"]
    a.consumer.close()  # a member again: its commit in on_revoke is accepted
    assert commits == ["refused", "stored"]


def test_a_listener_needs_a_group_subscription(cluster) -> None:
    def noop(partitions: list[TopicPartition]) -> None:
        pass

    with pytest.raises(ConfigError, match="on_assign"):
        cluster.consumer(TOPIC, on_assign=noop)
    with pytest.raises(ConfigError, match="on_revoke"):
        cluster.consumer(group="g", on_revoke=noop)
