"""Run a script of ../shared/anchors (peer systems) and return its RESULT line as a dict."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from typing import Any

ANCHORS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "anchors")


def venv_python(name: str) -> str:
    """The interpreter of the anchors' venv `name` (see the anchors README)."""
    root = os.environ.get("ANCHOR_VENV_ROOT", tempfile.gettempdir())
    return os.path.join(root, f"anchors-venv-{name}", "bin", "python")


def run_anchor(
    script: str, args: list[str], python: str, anchors: str = ANCHORS, timeout: float = 1200
) -> dict[str, Any] | None:
    """Run `script` in a scratch copy of the anchors folder (it is read-only here)."""
    if not os.path.exists(python):
        print(f"peer {script}: {python} missing (see {anchors}/README.md to install)")
        return None
    scratch = tempfile.mkdtemp(prefix="hw-anchor-")
    try:
        for name in os.listdir(anchors):
            if name.endswith(".py"):
                shutil.copy(os.path.join(anchors, name), scratch)
        out = subprocess.run(
            [python, script, *args],
            cwd=scratch,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        for line in out.stdout.splitlines():
            if line.startswith("RESULT "):
                result: dict[str, Any] = json.loads(line[len("RESULT ") :])
                return result
        print(f"peer {script} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
        return None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
