"""The consumer-group coordinator: Kafka's classic rebalance protocol, once.

Theory of operation
-------------------
Embedded consumers call this module directly; the Kafka protocol handlers translate
JoinGroup/SyncGroup/Heartbeat/LeaveGroup/OffsetCommit/OffsetFetch onto the same calls.
Calls that wait (join, sync) take a callback instead of blocking, so a thread (embedded)
or an event loop (server) can wait in its own way. Callbacks run with the coordinator's
lock held and must only hand the result over (set an event, schedule a task).

Rule 1: a group is EMPTY, PREPARING_REBALANCE, COMPLETING_REBALANCE or STABLE.
Rule 2: a rebalance starts when a member joins, leaves or is expired; it completes when
        every known member has sent a join, or when the longest rebalance timeout has
        passed (members that did not rejoin are removed). Completion bumps the
        generation, picks a protocol every member supports, keeps the leader if it is
        still a member, and answers every pending join (the leader also gets the members).
Rule 3: the leader's sync carries the assignment; it is relayed unchanged to every
        member, and the group becomes STABLE.
Rule 4: a member that sends nothing for its session timeout is removed.
Rule 5: offsets are accepted from current members of the current generation (not
        while COMPLETING_REBALANCE), and as "simple" commits (generation -1, no member)
        while the group has no members.
"""

from __future__ import annotations

import dataclasses
import enum
import threading
import time
import uuid
from collections.abc import Callable, Sequence

from headwater.broker.offsets import OffsetAndMetadata, OffsetStore
from headwater.errors import ErrorCode

__all__ = [
    "GroupCoordinator",
    "GroupDescription",
    "GroupState",
    "JoinResult",
    "MemberDescription",
    "SyncResult",
]


class GroupState(enum.Enum):
    """Rule 1's states, with Kafka's names as values."""

    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


@dataclasses.dataclass(frozen=True, slots=True)
class JoinResult:
    """The answer to a join."""

    error: ErrorCode
    generation_id: int = -1
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader_id: str = ""
    member_id: str = ""
    members: list[tuple[str, str | None, bytes]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True, slots=True)
class SyncResult:
    """The answer to a sync: this member's assignment."""

    error: ErrorCode
    assignment: bytes = b""
    protocol_type: str | None = None
    protocol_name: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class MemberDescription:
    """A member as DescribeGroups shows it."""

    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    metadata: bytes
    assignment: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class GroupDescription:
    """A group as DescribeGroups shows it."""

    group_id: str
    state: GroupState
    protocol_type: str
    protocol: str
    generation_id: int
    members: list[MemberDescription]


JoinCallback = Callable[[JoinResult], None]
SyncCallback = Callable[[SyncResult], None]


@dataclasses.dataclass(slots=True)
class _Member:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocols: list[tuple[str, bytes]]
    last_seen: float
    assignment: bytes = b""
    join_callback: JoinCallback | None = None
    sync_callback: SyncCallback | None = None

    def metadata_for(self, protocol: str) -> bytes:
        for name, metadata in self.protocols:
            if name == protocol:
                return metadata
        return b""


@dataclasses.dataclass(slots=True)
class _Group:
    group_id: str
    state: GroupState = GroupState.EMPTY
    generation: int = 0
    protocol_type: str = ""
    protocol: str = ""
    leader: str = ""
    members: dict[str, _Member] = dataclasses.field(default_factory=dict)
    pending_ids: dict[str, float] = dataclasses.field(default_factory=dict)
    static: dict[str, str] = dataclasses.field(default_factory=dict)
    rebalance_deadline: float = 0.0


class GroupCoordinator:
    """Every consumer group of one broker; see the module docstring for the rules."""

    def __init__(
        self,
        offsets: OffsetStore,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self._offsets = offsets
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.RLock()
        self._groups: dict[str, _Group] = {}

    # -- join / sync / heartbeat / leave ----------------------------------------------

    def join(
        self,
        group_id: str,
        member_id: str,
        *,
        protocol_type: str,
        protocols: Sequence[tuple[str, bytes]],
        callback: JoinCallback,
        session_timeout_ms: int = 45_000,
        rebalance_timeout_ms: int = 300_000,
        client_id: str = "",
        client_host: str = "",
        group_instance_id: str | None = None,
        require_known_member_id: bool = False,
    ) -> None:
        """Ask to (re)join a group; `callback` gets the JoinResult once the rebalance completes."""
        with self._lock:
            now = self._clock()
            if not group_id:
                callback(JoinResult(ErrorCode.INVALID_GROUP_ID, member_id=member_id))
                return
            if not protocols:
                callback(JoinResult(ErrorCode.INCONSISTENT_GROUP_PROTOCOL, member_id=member_id))
                return
            group = self._groups.setdefault(group_id, _Group(group_id))
            if group.members and protocol_type != group.protocol_type:
                callback(JoinResult(ErrorCode.INCONSISTENT_GROUP_PROTOCOL, member_id=member_id))
                return
            if group.members and not self._supported_by_all(group, protocols):
                callback(JoinResult(ErrorCode.INCONSISTENT_GROUP_PROTOCOL, member_id=member_id))
                return
            if group_instance_id is not None:
                known = group.static.get(group_instance_id)
                if known is not None and member_id and member_id != known:
                    callback(JoinResult(ErrorCode.FENCED_INSTANCE_ID, member_id=member_id))
                    return
                if known is not None and not member_id:
                    self._replace_static_member(group, known, group_instance_id, client_id, now)
                    member_id = group.static[group_instance_id]
            if not member_id:
                new_id = f"{client_id or 'member'}-{uuid.uuid4()}"
                if require_known_member_id and group_instance_id is None:
                    group.pending_ids[new_id] = now + session_timeout_ms / 1000
                    callback(JoinResult(ErrorCode.MEMBER_ID_REQUIRED, member_id=new_id))
                    return
                member_id = new_id
            elif member_id not in group.members and member_id not in group.pending_ids:
                callback(JoinResult(ErrorCode.UNKNOWN_MEMBER_ID, member_id=member_id))
                return
            group.pending_ids.pop(member_id, None)
            member = group.members.get(member_id)
            if (
                member is not None
                and group.state is GroupState.STABLE
                and member_id != group.leader
                and list(protocols) == member.protocols
            ):
                # Nothing changed: answer with the current generation (no rebalance).
                member.last_seen = now
                callback(self._join_result(group, member_id))
                return
            if member is None:
                member = _Member(
                    member_id,
                    group_instance_id,
                    client_id,
                    client_host,
                    session_timeout_ms,
                    rebalance_timeout_ms,
                    list(protocols),
                    now,
                )
                group.members[member_id] = member
                if group_instance_id is not None:
                    group.static[group_instance_id] = member_id
            else:
                member.protocols = list(protocols)
                member.session_timeout_ms = session_timeout_ms
                member.rebalance_timeout_ms = rebalance_timeout_ms
                member.last_seen = now
            group.protocol_type = protocol_type
            member.join_callback = callback
            if group.state is not GroupState.PREPARING_REBALANCE:
                self._prepare_rebalance(group, now)
            self._maybe_complete_join(group, now)

    def _replace_static_member(
        self, group: _Group, old_id: str, instance_id: str, client_id: str, now: float
    ) -> None:
        """A static member came back under a new member id (KIP-345); the old id is fenced.

        The member keeps its place and assignment, so a stable group does not rebalance
        (unless it was the leader, whose next join rebalances as usual).
        """
        old = group.members.pop(old_id, None)
        new_id = f"{client_id or 'member'}-{uuid.uuid4()}"
        group.static[instance_id] = new_id
        if old is None:
            return
        old.member_id = new_id
        old.last_seen = now
        if old.join_callback is not None:
            cb, old.join_callback = old.join_callback, None
            cb(JoinResult(ErrorCode.FENCED_INSTANCE_ID, member_id=old_id))
        if old.sync_callback is not None:
            cb2, old.sync_callback = old.sync_callback, None
            cb2(SyncResult(ErrorCode.FENCED_INSTANCE_ID))
        group.members[new_id] = old
        if group.leader == old_id:
            group.leader = new_id

    def sync(
        self,
        group_id: str,
        generation_id: int,
        member_id: str,
        *,
        assignments: dict[str, bytes],
        callback: SyncCallback,
    ) -> None:
        """Send the leader's assignment, or wait for it; `callback` gets this member's share."""
        with self._lock:
            group = self._groups.get(group_id)
            member = group.members.get(member_id) if group else None
            if group is None or member is None:
                callback(SyncResult(ErrorCode.UNKNOWN_MEMBER_ID))
                return
            if generation_id != group.generation:
                callback(SyncResult(ErrorCode.ILLEGAL_GENERATION))
                return
            member.last_seen = self._clock()
            if group.state is GroupState.PREPARING_REBALANCE:
                callback(SyncResult(ErrorCode.REBALANCE_IN_PROGRESS))
                return
            if group.state is GroupState.STABLE:
                callback(self._sync_result(group, member))
                return
            member.sync_callback = callback
            if member_id == group.leader:
                for mid, m in group.members.items():
                    m.assignment = assignments.get(mid, b"")
                group.state = GroupState.STABLE
                for m in group.members.values():
                    if m.sync_callback is not None:
                        cb, m.sync_callback = m.sync_callback, None
                        cb(self._sync_result(group, m))
                self._changed(group_id)

    def heartbeat(
        self,
        group_id: str,
        generation_id: int,
        member_id: str,
        group_instance_id: str | None = None,
    ) -> ErrorCode:
        """Keep a member alive; tells it to rejoin when a rebalance is under way."""
        with self._lock:
            group = self._groups.get(group_id)
            if group is not None and group_instance_id is not None:
                current = group.static.get(group_instance_id)
                if current is not None and current != member_id:
                    return ErrorCode.FENCED_INSTANCE_ID
            member = group.members.get(member_id) if group else None
            if group is None or member is None:
                return ErrorCode.UNKNOWN_MEMBER_ID
            member.last_seen = self._clock()
            if generation_id != group.generation:
                return ErrorCode.ILLEGAL_GENERATION
            if group.state is GroupState.PREPARING_REBALANCE:
                return ErrorCode.REBALANCE_IN_PROGRESS
            return ErrorCode.NONE

    def leave(self, group_id: str, member_id: str) -> ErrorCode:
        """Remove a member at its request; the others rebalance."""
        with self._lock:
            group = self._groups.get(group_id)
            if group is None or member_id not in group.members:
                return ErrorCode.UNKNOWN_MEMBER_ID
            self._remove_member(group, member_id, self._clock())
            return ErrorCode.NONE

    # -- offsets (Rule 5) -------------------------------------------------------------

    def commit_offsets(
        self,
        group_id: str,
        generation_id: int,
        member_id: str,
        offsets: dict[tuple[str, int], OffsetAndMetadata],
    ) -> ErrorCode:
        """Durably store offsets if the committer may commit (Rule 5)."""
        with self._lock:
            if not group_id:
                return ErrorCode.INVALID_GROUP_ID
            group = self._groups.setdefault(group_id, _Group(group_id))
            if generation_id < 0 and not member_id:
                if group.members:
                    return ErrorCode.UNKNOWN_MEMBER_ID
            else:
                code = self._check_member(group, generation_id, member_id)
                if code is not ErrorCode.NONE:
                    return code
        self._offsets.commit(group_id, offsets)
        return ErrorCode.NONE

    def check_member(self, group_id: str, generation_id: int, member_id: str) -> ErrorCode:
        """Whether `member_id` of `generation_id` is a current member (KIP-447).

        For a transactional offset commit: a member fenced by a rebalance (a zombie)
        must not commit offsets of partitions that moved on. A commit without member
        and generation (-1, "") is not checked, as in Kafka.
        """
        if generation_id < 0 and not member_id:
            return ErrorCode.NONE
        with self._lock:
            group = self._groups.get(group_id)
            if group is None:
                return ErrorCode.UNKNOWN_MEMBER_ID
            return self._check_member(group, generation_id, member_id)

    def _check_member(self, group: _Group, generation_id: int, member_id: str) -> ErrorCode:
        member = group.members.get(member_id)
        if member is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if generation_id != group.generation:
            return ErrorCode.ILLEGAL_GENERATION
        if group.state is GroupState.COMPLETING_REBALANCE:
            return ErrorCode.REBALANCE_IN_PROGRESS
        member.last_seen = self._clock()
        return ErrorCode.NONE

    def fetch_offsets(
        self, group_id: str, partitions: Sequence[tuple[str, int]] | None = None
    ) -> dict[tuple[str, int], OffsetAndMetadata]:
        """Committed offsets of a group (all of them, or those of `partitions`)."""
        committed = self._offsets.fetch(group_id)
        if partitions is None:
            return committed
        return {tp: committed[tp] for tp in partitions if tp in committed}

    def delete_group(self, group_id: str) -> ErrorCode:
        """Forget an empty group and its committed offsets."""
        with self._lock:
            group = self._groups.get(group_id)
            if group is not None and group.members:
                return ErrorCode.NON_EMPTY_GROUP
            if group is None and not self._offsets.fetch(group_id):
                return ErrorCode.GROUP_ID_NOT_FOUND
            self._groups.pop(group_id, None)
        self._offsets.delete_group(group_id)
        return ErrorCode.NONE

    # -- inspection -------------------------------------------------------------------

    def list_groups(self) -> list[tuple[str, str, GroupState]]:
        """(group id, protocol type, state) of every known group, with offset-only groups."""
        with self._lock:
            listed = {
                g.group_id: (g.group_id, g.protocol_type, g.state) for g in self._groups.values()
            }
        for group_id in self._offsets.groups():
            listed.setdefault(group_id, (group_id, "consumer", GroupState.EMPTY))
        return sorted(listed.values())

    def describe(self, group_id: str) -> GroupDescription:
        """State, protocol and members of a group (Dead when unknown)."""
        with self._lock:
            group = self._groups.get(group_id)
            if group is None:
                state = GroupState.EMPTY if self._offsets.fetch(group_id) else GroupState.DEAD
                return GroupDescription(group_id, state, "", "", 0, [])
            members = [
                MemberDescription(
                    m.member_id,
                    m.group_instance_id,
                    m.client_id,
                    m.client_host,
                    m.metadata_for(group.protocol),
                    m.assignment,
                )
                for m in group.members.values()
            ]
            return GroupDescription(
                group_id,
                group.state,
                group.protocol_type,
                group.protocol,
                group.generation,
                members,
            )

    # -- timers (Rules 2 and 4) -------------------------------------------------------

    def tick(self) -> None:
        """Expire silent members and finish overdue rebalances; call every ~100 ms."""
        with self._lock:
            now = self._clock()
            for group in list(self._groups.values()):
                for pending, deadline in list(group.pending_ids.items()):
                    if deadline < now:
                        del group.pending_ids[pending]
                for member in list(group.members.values()):
                    waiting = (
                        group.state is GroupState.PREPARING_REBALANCE
                        and member.join_callback is not None
                    )
                    if not waiting and now - member.last_seen > member.session_timeout_ms / 1000:
                        self._remove_member(group, member.member_id, now)
                if (
                    group.state is GroupState.PREPARING_REBALANCE
                    and now >= group.rebalance_deadline
                ):
                    for member in list(group.members.values()):
                        if member.join_callback is None:
                            del group.members[member.member_id]
                    self._complete_join(group)

    # -- internals --------------------------------------------------------------------

    def _supported_by_all(self, group: _Group, protocols: Sequence[tuple[str, bytes]]) -> bool:
        names = {name for name, _ in protocols}
        return any(
            all(any(n == name for n, _ in m.protocols) for m in group.members.values())
            for name in names
        )

    def _prepare_rebalance(self, group: _Group, now: float) -> None:
        if group.state is GroupState.COMPLETING_REBALANCE:
            for member in group.members.values():
                if member.sync_callback is not None:
                    cb, member.sync_callback = member.sync_callback, None
                    cb(SyncResult(ErrorCode.REBALANCE_IN_PROGRESS))
        group.state = GroupState.PREPARING_REBALANCE
        timeout = max((m.rebalance_timeout_ms for m in group.members.values()), default=0)
        group.rebalance_deadline = now + timeout / 1000
        self._changed(group.group_id)

    def _maybe_complete_join(self, group: _Group, now: float) -> None:
        if all(m.join_callback is not None for m in group.members.values()):
            self._complete_join(group)

    def _complete_join(self, group: _Group) -> None:
        group.generation += 1
        if not group.members:
            group.state = GroupState.EMPTY
            group.protocol = group.leader = ""
            self._changed(group.group_id)
            return
        first = next(iter(group.members.values()))
        group.protocol = next(
            name
            for name, _ in first.protocols
            if all(any(n == name for n, _ in m.protocols) for m in group.members.values())
        )
        if group.leader not in group.members:
            group.leader = first.member_id
        group.state = GroupState.COMPLETING_REBALANCE
        for member in group.members.values():
            member.assignment = b""
            cb, member.join_callback = member.join_callback, None
            if cb is not None:
                cb(self._join_result(group, member.member_id))
        self._changed(group.group_id)

    def _join_result(self, group: _Group, member_id: str) -> JoinResult:
        members = []
        if member_id == group.leader:
            members = [
                (m.member_id, m.group_instance_id, m.metadata_for(group.protocol))
                for m in group.members.values()
            ]
        return JoinResult(
            ErrorCode.NONE,
            group.generation,
            group.protocol_type,
            group.protocol,
            group.leader,
            member_id,
            members,
        )

    def _sync_result(self, group: _Group, member: _Member) -> SyncResult:
        return SyncResult(ErrorCode.NONE, member.assignment, group.protocol_type, group.protocol)

    def _remove_member(self, group: _Group, member_id: str, now: float) -> None:
        member = group.members.pop(member_id)
        if member.group_instance_id is not None:
            group.static.pop(member.group_instance_id, None)
        if member.join_callback is not None:
            member.join_callback(JoinResult(ErrorCode.UNKNOWN_MEMBER_ID, member_id=member_id))
        if member.sync_callback is not None:
            member.sync_callback(SyncResult(ErrorCode.UNKNOWN_MEMBER_ID))
        if group.state is GroupState.PREPARING_REBALANCE:
            self._maybe_complete_join(group, now)
        elif not group.members:
            group.generation += 1
            group.state = GroupState.EMPTY
            group.protocol = group.leader = ""
            self._changed(group.group_id)
        else:
            self._prepare_rebalance(group, now)

    def _changed(self, group_id: str) -> None:
        if self._on_change is not None:
            self._on_change(group_id)
