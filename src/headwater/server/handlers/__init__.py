"""One handler per Kafka API key: a decoded request in, a response body out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from headwater.protocol import Body, RequestReceived
from headwater.server.context import ServerContext
from headwater.server.handlers import admin, cluster, fetch, groups, produce, transactions
from headwater.server.handlers.versions import SUPPORTED_VERSIONS

__all__ = ["HANDLERS", "SUPPORTED_VERSIONS", "Handler"]

Handler = Callable[[ServerContext, RequestReceived], Awaitable[Body]]

HANDLERS: dict[int, Handler] = {
    0: produce.produce,
    1: fetch.fetch,
    2: fetch.list_offsets,
    3: cluster.metadata,
    8: groups.offset_commit,
    9: groups.offset_fetch,
    10: cluster.find_coordinator,
    11: groups.join_group,
    12: groups.heartbeat,
    13: groups.leave_group,
    14: groups.sync_group,
    15: groups.describe_groups,
    16: groups.list_groups,
    18: cluster.api_versions,
    19: admin.create_topics,
    20: admin.delete_topics,
    22: transactions.init_producer_id,
    23: fetch.offset_for_leader_epoch,
    24: transactions.add_partitions_to_txn,
    25: transactions.add_offsets_to_txn,
    26: transactions.end_txn,
    28: transactions.txn_offset_commit,
    32: admin.describe_configs,
    42: groups.delete_groups,
    60: cluster.describe_cluster,
}

if set(HANDLERS) != set(SUPPORTED_VERSIONS):  # pragma: no cover - a programming error
    msg = "every advertised API needs a handler, and only those"
    raise RuntimeError(msg)
