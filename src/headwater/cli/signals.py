"""Signal handling for commands: SIGTERM as an exception, and holding signals briefly.

Python runs signal handlers in the main thread only, so both helpers do nothing when a
command runs in another thread (as `main(argv)` may in an embedding program).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType

from headwater.cli.exit_codes import Terminated

__all__ = ["LAUNCHER_ENV", "exit_with_launcher", "signals_held", "sigterm_raises"]

LAUNCHER_ENV = "HEADWATER_LAUNCHER_PID"
"""Set by `headwater run --workers` for the processes it starts (see exit_with_launcher)."""

_Handler = Callable[[int, FrameType | None], None]


@contextlib.contextmanager
def _handlers(handler: _Handler, *signums: signal.Signals) -> Iterator[None]:
    """Install `handler` for `signums` inside the block, then put the old ones back."""
    previous = {signum: signal.signal(signum, handler) for signum in signums}
    try:
        yield
    finally:
        for signum, old in previous.items():
            # None: a handler installed outside Python; the default is the closest match.
            signal.signal(signum, signal.SIG_DFL if old is None else old)


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Raise `Terminated` on SIGTERM inside the block.

    Commands clean up in `finally` blocks (consume commits what it printed, the demo
    stops its threads); this gives `kill` the same treatment as Ctrl-C.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(_signum: int, _frame: FrameType | None) -> None:
        raise Terminated

    with _handlers(terminate, signal.SIGTERM):
        yield


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then deliver the first one held.

    For short steps that must not be cut in two. A write blocked on a stalled pipe inside
    the block delays Ctrl-C until the pipe moves or breaks.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []

    def hold(signum: int, _frame: FrameType | None) -> None:
        held.append(signum)

    with _handlers(hold, signal.SIGINT, signal.SIGTERM):
        yield
    if held:
        signal.raise_signal(held[0])


def exit_with_launcher() -> None:
    """In a process `headwater run --workers` started: SIGTERM it once the launcher dies.

    Without this a killed launcher would leave its server and workers running on their
    own (the server holding the data directory). The variable is removed, so processes
    this one starts do not inherit the watch.
    """
    launcher = os.environ.pop(LAUNCHER_ENV, None)
    if launcher is None or not launcher.isdigit():
        return

    def watch() -> None:
        while os.getppid() == int(launcher):
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="headwater-launcher-watch", daemon=True).start()
