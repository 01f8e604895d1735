"""The README's demo, run as a user runs it: the alarm reaches the hub and a speaker within 60 s."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("broker", ["mosquitto", "embedded"])
def test_demo_shows_the_alarm_path_within_a_minute(tmp_path: Path, broker: str) -> None:
    command = [
        sys.executable,
        "-m",
        "anmin",
        "demo",
        "--data-dir",
        str(tmp_path / "demo"),
        "--port",
        "0" if broker == "embedded" else "8080",
        "--timeout",
        "60",
        "--exit-after-receipt",
        "0.5",
    ]
    if broker == "embedded":
        command.append("--embedded-broker")
    env = {**os.environ, "COLUMNS": "200", "TERM": "dumb"}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    for label in ("reading", "alert", "command", "hub ack", "broadcast", "speaker", "receipt"):
        assert re.search(rf"\s{label}\s", out), f"no {label!r} line in:\n{out}"
    assert "siren_on -> gas-b1-101" in out
    assert "http://127.0.0.1:" in out
    path = re.search(r"alarm path: (.*)", out)
    assert path and "receipt -" not in path.group(1), out
    assert "Traceback" not in out + done.stderr


@pytest.mark.timeout(540)
def test_the_community_demo_plays_the_sample_community(tmp_path: Path) -> None:
    """`anmin demo --community`: four gateways, ~300 devices; at 60x its two hours take two
    minutes."""
    command = [
        sys.executable, "-m", "anmin", "demo", "--community", "--speed", "60",
        "--data-dir", str(tmp_path / "demo"), "--port", "0",
    ]  # fmt: skip
    env = {**os.environ, "COLUMNS": "200", "TERM": "dumb"}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=480, env=env, stdin=subprocess.DEVNULL
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "306 devices on 4 gateways" in out
    raised = re.search(r"alerts raised: (.*)", out)
    assert raised, out
    # Alarms that need no time to build up are raised even at 60x.
    for kind in ("sos", "locker_forced", "gas"):
        assert f"'{kind}'" in raised.group(1), out
    assert "Traceback" not in out + done.stderr
