"""Entry point of the `headwater` command."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "--version":
        from headwater import __version__

        print(__version__)
        return 0
    print("usage: headwater --version", file=sys.stderr)
    return 2
