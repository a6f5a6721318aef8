"""Embedded-only admin behaviour: the data directory's lock and its recovery.

The backend-agnostic admin tests run on both backends in test_client_api.py.
"""

import os
import subprocess
import sys
import textwrap

import pytest

import headwater
from headwater.errors import DataDirLockedError


def test_a_second_open_in_this_process_is_refused(tmp_path) -> None:
    path = str(tmp_path / "d")
    with headwater.open(path):
        with pytest.raises(DataDirLockedError) as info:
            headwater.open(path)
        assert str(os.getpid()) in str(info.value)
    headwater.open(path).close()  # released on close


def test_a_directory_locked_by_another_process_names_its_pid(tmp_path) -> None:
    path = str(tmp_path / "d")
    script = textwrap.dedent(
        f"""
        import sys, headwater
        hw = headwater.open({path!r})
        print("ready", flush=True)
        sys.stdin.read()
        """
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline().strip() == "ready"
        with pytest.raises(DataDirLockedError) as info:
            headwater.open(path)
        message = str(info.value)
        assert str(owner.pid) in message
        assert "connect to that process's server" in message.lower()
    finally:
        owner.communicate("")
    # The lock dies with its owner.
    headwater.open(path).close()


def test_a_killed_owner_s_forked_child_does_not_keep_the_lock(tmp_path) -> None:
    """A stream app forks its checkpoint writer; SIGKILL of the app frees the directory."""
    path = str(tmp_path / "d")
    script = textwrap.dedent(
        f"""
        import os, signal, time, headwater
        hw = headwater.open({path!r})
        if os.fork() == 0:  # the child outlives its parent by a while
            os.close(1)
            os.close(2)
            time.sleep(20)
            os._exit(0)
        print("forked", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.stdout.strip() == "forked"
    headwater.open(path).close()  # at once, while the child still sleeps


def test_an_interrupted_delete_leaves_no_orphans(tmp_path) -> None:
    path = str(tmp_path / "d")
    with headwater.open(path) as hw:
        hw.create_topic("t")
    os.makedirs(os.path.join(path, "ghost-0"))
    with headwater.open(path) as hw:
        assert hw.list_topics() == ["t"]
    assert not os.path.exists(os.path.join(path, "ghost-0"))
