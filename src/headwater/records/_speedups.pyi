"""Optional C accelerator for :mod:`headwater.records.batch` (see ``_speedups.c``)."""

from typing import ClassVar, final

@final
class Record:
    """One decoded record, placed in its topic-partition (the C implementation)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    __hash__: ClassVar[None]  # type: ignore[assignment]

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        timestamp: int,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes | None]],
    ) -> None: ...
    def __eq__(self, other: object) -> bool: ...
    def __reduce__(
        self,
    ) -> tuple[
        type[Record],
        tuple[str, int, int, int, bytes | None, bytes | None, list[tuple[str, bytes | None]]],
    ]: ...

def decode_records(
    data: bytes | bytearray | memoryview,
    start: int,
    end: int,
    count: int,
    base_offset: int,
    base_timestamp: int,
    append_time: int | None,
    topic: str,
    partition: int,
) -> list[Record]:
    """Decode the uncompressed records section ``data[start:end]`` of one batch."""
