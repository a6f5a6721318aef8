"""The exit codes scripts can rely on, and which error gets which.

```
0    ok
1    a HeadwaterError (the message is printed as "error: <message>")
2    a usage error (argparse prints the usage)
3    something named on the command line does not exist (topic, group)
130  interrupted (Ctrl-C)
143  terminated (SIGTERM); cleaned up like Ctrl-C
```
"""

from __future__ import annotations

from headwater.errors import HeadwaterError, UnknownTopicError

__all__ = [
    "ERROR",
    "INTERRUPTED",
    "NOT_FOUND",
    "OK",
    "TERMINATED",
    "USAGE",
    "Terminated",
    "UnknownGroupError",
    "for_error",
]

OK = 0
ERROR = 1
USAGE = 2
NOT_FOUND = 3
INTERRUPTED = 130
TERMINATED = 143


class UnknownGroupError(HeadwaterError):
    """The consumer group has no members and no committed offsets."""

    def __init__(self, group: str) -> None:
        self.group = group
        super().__init__(
            f"unknown group {group!r}; `headwater groups list` shows the groups that exist"
        )


class Terminated(BaseException):
    """SIGTERM arrived; raised in the main thread so cleanup runs as for Ctrl-C."""


def for_error(exc: HeadwaterError) -> int:
    """The exit code of a command that failed with `exc`."""
    if isinstance(exc, UnknownTopicError | UnknownGroupError):
        return NOT_FOUND
    return ERROR
