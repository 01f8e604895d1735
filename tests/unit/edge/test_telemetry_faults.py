"""The dashboards' series must never cost an alarm nor the agent: telemetry that raises (a
reading's series, or a flush) is counted and logged, and the rest runs on."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bus import Broker
from edge import EdgeAgent, parse
from tests.conftest import wait_for
from tests.integration.edge_support import edge_config_yaml
from wire import Phase, Reading

# Port 9: nothing listens; the writes fail as InfluxDB being down would, and are buffered.
TELEMETRY = "telemetry: {url: 'http://127.0.0.1:9', flush_s: 0.1, retention_days: 0}\n"


def _agent(tmp_path: Path) -> EdgeAgent:
    # No broker is needed: judging a reading and flushing telemetry publish nothing.
    return EdgeAgent(parse(edge_config_yaml(Broker("127.0.0.1", 1), tmp_path, extra=TELEMETRY)))


def test_a_reading_whose_series_fails_is_still_judged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = _agent(tmp_path)
    try:
        assert agent.telemetry is not None

        def broken(*args: object) -> None:
            raise ValueError("a series the downsampler cannot take")

        monkeypatch.setattr(agent.telemetry, "reading", broken)
        start = datetime.now(UTC)
        transitions = []
        for seq, after in enumerate((0.0, 2.0), 1):  # the rule's hold: 1 s
            now = start + timedelta(seconds=after)
            leak = Reading(device="gas-b1-101", seq=seq, ts=now, values={"gas_lel": 60.0})
            # Before, the series came first: its exception left the reading unjudged
            # (counted only as an internal error) and the leak with no alarm.
            transitions += agent._judge(leak, now)
        assert [x.phase for x in transitions] == [Phase.RAISED]
        assert agent.counters["telemetry_errors"] == 2
        assert agent.engine.state.devices["gas-b1-101"].metrics["gas_lel"].last == 60.0
    finally:
        agent.close()


@pytest.mark.anyio
async def test_a_flush_that_fails_is_counted_and_the_next_one_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = _agent(tmp_path)
    assert agent.telemetry is not None
    calls = 0

    def broken(*args: object) -> None:
        nonlocal calls
        calls += 1
        raise OverflowError("a counter no float can hold")

    monkeypatch.setattr(agent.telemetry, "gateway_point", broken)
    flushes = asyncio.create_task(agent._telemetry_loop(agent.telemetry))
    try:
        await wait_for(
            lambda: agent.counters["telemetry_errors"] >= 2 or flushes.done(),
            what="two failed flushes",
        )
        # Before, the first one ended the task, and its TaskGroup the agent with it.
        assert not flushes.done()
        assert agent.counters["telemetry_errors"] in (calls, calls - 1)
    finally:
        flushes.cancel()
        with pytest.raises(asyncio.CancelledError):
            await flushes
        agent.close()


@pytest.mark.anyio
async def test_an_alert_whose_point_fails_keeps_its_local_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The alert's point came before the local warning's timer (the gateway's own warning when
    the hub does not answer): raising, it left a life-safety alarm without one."""
    agent = _agent(tmp_path)
    try:
        assert agent.telemetry is not None

        def broken(*args: object) -> None:
            raise ValueError("a message InfluxDB's Point cannot take")

        monkeypatch.setattr(agent.telemetry, "alert", broken)
        start = datetime.now(UTC)
        for seq, after in enumerate((0.0, 3.0), 1):  # 60 %LEL held: Extreme
            now = start + timedelta(seconds=after)
            leak = Reading(device="gas-b1-101", seq=seq, ts=now, values={"gas_lel": 60.0})
            await agent._act(leak, agent._judge(leak, now), now)
        assert sorted(agent._local_warnings) == ["gas-lel:gas-b1-101"]
        assert agent.counters["telemetry_errors"] == 1
    finally:
        for task in agent._local_warnings.values():
            task.cancel()
        agent.close()
