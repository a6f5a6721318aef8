"""`headwater run app.py`: the CLI runs an app file, shows status, stops on signals."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import orjson

import headwater

HEADWATER = os.path.join(os.path.dirname(sys.executable), "headwater")

APP = textwrap.dedent(
    """
    from headwater.stream import App, Count

    app = App("cli-app", broker="ignored-by-data-flag", state_dir={state!r},
              checkpoint_interval="200ms")
    app.stream("in").key_by(lambda v: v["k"]).aggregate(n=Count(), name="counts").to("out")
    """
)


def _setup(tmp_path: pathlib.Path, n: int) -> tuple[pathlib.Path, pathlib.Path]:
    data = tmp_path / "data"
    with headwater.open(data) as hw:
        hw.create_topic("in", partitions=2)
        with hw.producer() as producer:
            for i in range(n):
                producer.send("in", orjson.dumps({"k": i % 3}))
    app_file = tmp_path / "app.py"
    app_file.write_text(APP.format(state=str(tmp_path / "state")))
    return data, app_file


def _latest_counts(data: pathlib.Path) -> dict[int, int]:
    with headwater.open(data) as hw:
        consumer = hw.consumer("out", auto_offset_reset="earliest")
        latest: dict[int, int] = {}
        while batch := consumer.poll(0.2):
            for r in batch:
                row = orjson.loads(r.value)
                latest[row["key"]] = row["n"]
        return latest


def test_run_until_idle_prints_final_metrics(tmp_path: pathlib.Path) -> None:
    data, app_file = _setup(tmp_path, 300)
    out = subprocess.run(
        [HEADWATER, "--data", str(data), "--json", "run", str(app_file), "--until-idle"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    final = json.loads(out.stdout)
    assert final["events"] == 300
    assert final["operators"]["counts"]["events_in"] == 300
    assert _latest_counts(data) == {0: 100, 1: 100, 2: 100}


def test_sigterm_stops_after_a_final_checkpoint(tmp_path: pathlib.Path) -> None:
    data, app_file = _setup(tmp_path, 50)
    proc = subprocess.Popen(
        [HEADWATER, "--data", str(data), "run", str(app_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not list((tmp_path / "state").glob("checkpoint-*.hwc")):
        assert time.monotonic() < deadline, "no checkpoint appeared"
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "cli-app: 50 events" in err
    assert _latest_counts(data) == {0: 17, 1: 17, 2: 16}
    # Restarted, it resumes from the checkpoint: nothing is counted twice.
    again = subprocess.run(
        [HEADWATER, "--data", str(data), "run", str(app_file), "--until-idle"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    assert "cli-app: 0 events" in again.stderr


def test_file_without_an_app_is_an_error(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "nothing.py"
    bad.write_text("x = 1\n")
    out = subprocess.run(
        [HEADWATER, "--data", str(tmp_path / "d"), "run", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1
    assert "defines no `app = headwater.App(...)`" in out.stderr
    missing = subprocess.run(
        [HEADWATER, "run", str(tmp_path / "gone.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 1
    assert "gone.py: no such file" in missing.stderr
