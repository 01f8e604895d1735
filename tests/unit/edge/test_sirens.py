"""While an alarm stands, a siren its device reports off is commanded again (one lost command
must not leave a leak silent), at most every SIREN_RETRY_S, and a clock set back does not
make it wait out the jump. No broker: the agent is handed messages as the link would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from bus import Broker, Incoming
from edge import EdgeAgent, parse
from edge.agent import SIREN_RETRY_S
from tests.integration.edge_support import edge_config_yaml
from wire import DeviceStatus, Reading, topics

T0 = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
GAS = "gas-b1-101"

pytestmark = pytest.mark.anyio


async def test_a_siren_reported_off_is_commanded_again_even_after_the_clock_goes_back(
    tmp_path: Path,
) -> None:
    now = [T0]
    agent = EdgeAgent(
        parse(edge_config_yaml(Broker("127.0.0.1", 1), tmp_path)), clock=lambda: now[0]
    )
    seq = 0

    async def reading(at_s: float, lel: float) -> None:
        nonlocal seq
        seq += 1
        now[0] = T0 + timedelta(seconds=at_s)
        body = Reading(device=GAS, seq=seq, ts=now[0], values={"gas_lel": lel})
        topic = topics.reading("s1", "gw-1", GAS)
        await agent._on_message(Incoming(topic, msgspec.json.encode(body), 1, False))

    try:
        await reading(0.0, 12.0)
        await reading(1.5, 12.0)  # held 1 s: raised, and the siren commanded
        assert agent.counters["alerts.raised"] == 1
        off = DeviceStatus(device=GAS, state="online", ts=now[0], actuators={"siren": "off"})
        topic = topics.status("s1", "gw-1", GAS)
        await agent._on_message(Incoming(topic, msgspec.json.encode(off), 1, True))
        await reading(3.0, 12.0)
        assert agent.counters["commands.reasserted"] == 0, "not again within SIREN_RETRY_S"
        await reading(1.5 + SIREN_RETRY_S, 12.0)
        assert agent.counters["commands.reasserted"] == 1
        await reading(-3600.0, 12.0)  # NTP sets the clock back an hour; the leak goes on
        assert agent.counters["commands.reasserted"] == 2, "not after an hour's wait"
        await reading(-3599.0, 12.0)
        assert agent.counters["commands.reasserted"] == 2
    finally:
        agent.close()
