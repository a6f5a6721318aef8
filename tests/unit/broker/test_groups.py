"""The coordinator's rules, driven with a fake clock (no threads, no sleeps)."""

from __future__ import annotations

from headwater.broker import GroupCoordinator, GroupState, OffsetAndMetadata
from headwater.broker.offsets import OffsetStore
from headwater.errors import ErrorCode
from headwater.log import Storage


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(tmp_path) -> tuple[GroupCoordinator, Clock]:
    clock = Clock()
    return GroupCoordinator(OffsetStore(str(tmp_path), Storage()), clock=clock), clock


def join(coord, member="", group="g", *, instance=None, known=False, session=10_000, protos=None):
    results = []
    coord.join(
        group,
        member,
        protocol_type="consumer",
        protocols=protos or [("range", b"meta-" + member.encode())],
        callback=results.append,
        session_timeout_ms=session,
        rebalance_timeout_ms=5_000,
        client_id="c",
        group_instance_id=instance,
        require_known_member_id=known,
    )
    return results


def sync(coord, member, generation, assignments=None, group="g"):
    results = []
    coord.sync(group, generation, member, assignments=assignments or {}, callback=results.append)
    return results


def test_member_id_required_then_join_and_sync(tmp_path) -> None:
    coord, _ = make(tmp_path)
    first = join(coord, known=True)
    assert first[0].error is ErrorCode.MEMBER_ID_REQUIRED
    member = first[0].member_id
    joined = join(coord, member, known=True)[0]
    assert joined.error is ErrorCode.NONE
    assert (joined.generation_id, joined.leader_id) == (1, member)
    assert [m for m, _, _ in joined.members] == [member]
    synced = sync(coord, member, 1, {member: b"plan"})[0]
    assert (synced.error, synced.assignment) == (ErrorCode.NONE, b"plan")
    assert coord.describe("g").state is GroupState.STABLE


def test_a_second_member_triggers_a_rebalance_and_the_leader_relays_assignments(tmp_path) -> None:
    coord, _ = make(tmp_path)
    a = join(coord)[0].member_id
    sync(coord, a, 1, {a: b"all"})
    pending_b = join(coord)
    assert pending_b == []  # waits for the existing member to rejoin
    assert coord.heartbeat("g", 1, a) is ErrorCode.REBALANCE_IN_PROGRESS
    a_again = join(coord, a)[0]
    b_result = pending_b[0]
    assert a_again.generation_id == b_result.generation_id == 2
    assert a_again.leader_id == a
    assert len(a_again.members) == 2
    assert b_result.members == []
    b = b_result.member_id
    follower = sync(coord, b, 2)
    assert follower == []  # waits for the leader
    sync(coord, a, 2, {a: b"left", b: b"right"})
    assert follower[0].assignment == b"right"


def test_silent_members_expire_and_missing_rejoins_are_dropped(tmp_path) -> None:
    coord, clock = make(tmp_path)
    a = join(coord, session=6_000)[0].member_id
    sync(coord, a, 1, {a: b"x"})
    pending = join(coord, session=6_000)
    clock.now += 5.5  # rebalance timeout (5 s) passes without a rejoining
    coord.tick()
    assert pending[0].error is ErrorCode.NONE
    assert [m for m, _, _ in pending[0].members] == [pending[0].member_id]
    b = pending[0].member_id
    sync(coord, b, pending[0].generation_id, {b: b"y"})
    clock.now += 7  # b's session (6 s) expires
    coord.tick()
    assert coord.describe("g").state is GroupState.EMPTY
    assert coord.heartbeat("g", 3, b) is ErrorCode.UNKNOWN_MEMBER_ID


def test_static_member_rejoins_without_a_rebalance_and_fences_its_old_id(tmp_path) -> None:
    coord, _ = make(tmp_path)
    leader = join(coord, instance="i-leader")[0].member_id
    follower_join = join(coord, instance="i-follower")
    join(coord, leader, instance="i-leader")
    old = follower_join[0].member_id
    generation = follower_join[0].generation_id
    sync(coord, old, generation)
    sync(coord, leader, generation, {leader: b"L", old: b"F"})
    # The follower restarts: same instance id, no member id.
    back = join(coord, instance="i-follower")[0]
    assert back.error is ErrorCode.NONE
    assert back.generation_id == generation  # no rebalance
    assert back.member_id != old
    assert sync(coord, back.member_id, generation)[0].assignment == b"F"
    assert coord.heartbeat("g", generation, old, "i-follower") is ErrorCode.FENCED_INSTANCE_ID
    assert join(coord, old, instance="i-follower")[0].error is ErrorCode.FENCED_INSTANCE_ID


def test_offset_commit_rules(tmp_path) -> None:
    coord, _ = make(tmp_path)
    offsets = {("t", 0): OffsetAndMetadata(5, "meta")}
    assert coord.commit_offsets("g", -1, "", offsets) is ErrorCode.NONE  # simple commit
    a = join(coord)[0].member_id
    assert coord.commit_offsets("g", 1, a, offsets) is ErrorCode.REBALANCE_IN_PROGRESS
    sync(coord, a, 1, {a: b""})
    assert coord.commit_offsets("g", 1, a, offsets) is ErrorCode.NONE
    assert coord.commit_offsets("g", 0, a, offsets) is ErrorCode.ILLEGAL_GENERATION
    assert coord.commit_offsets("g", 1, "stranger", offsets) is ErrorCode.UNKNOWN_MEMBER_ID
    assert coord.commit_offsets("g", -1, "", offsets) is ErrorCode.UNKNOWN_MEMBER_ID
    assert coord.fetch_offsets("g")[("t", 0)].metadata == "meta"
    assert coord.delete_group("g") is ErrorCode.NON_EMPTY_GROUP
    coord.leave("g", a)
    assert coord.delete_group("g") is ErrorCode.NONE
    assert coord.delete_group("g") is ErrorCode.GROUP_ID_NOT_FOUND


def test_inconsistent_protocols_are_refused(tmp_path) -> None:
    coord, _ = make(tmp_path)
    join(coord, protos=[("range", b"")])
    refused = join(coord, protos=[("roundrobin", b"")])
    assert refused[0].error is ErrorCode.INCONSISTENT_GROUP_PROTOCOL
