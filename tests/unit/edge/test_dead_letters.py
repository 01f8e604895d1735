"""Dead letters under a flood: the first of each kind at once, then one per interval that says
how many were withheld, so a device gone wrong cannot flood the hub's intake (which also
carries the alarms). The counters still count every message."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bus import Broker
from edge import EdgeAgent, parse
from edge.agent import DEADLETTER_EVERY_S
from edge.ingest import Rejection
from tests.integration.edge_support import edge_config_yaml
from wire import Codec, DeadLetter, Reason

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
TOPIC = "anmin/v1/s1/gw-1/dev/gas-b1-101/reading"


@pytest.fixture
def agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[EdgeAgent, list[DeadLetter]]:
    agent = EdgeAgent(parse(edge_config_yaml(Broker("127.0.0.1", 9), tmp_path)), clock=lambda: T0)
    sent: list[DeadLetter] = []
    codec = Codec()

    def publish_nowait(topic: str, payload: bytes, *, retain: bool = False) -> None:
        sent.append(codec.decode(payload, DeadLetter, T0, check_time=False))

    monkeypatch.setattr(agent.upstream, "publish_nowait", publish_nowait)
    return agent, sent


def reject(agent: EdgeAgent, at: float, reason: Reason = Reason.OUT_OF_ORDER) -> None:
    agent._dead_letter(Rejection(reason, "seq 1 arrived after seq 40", TOPIC, b"{}"), at_(at))


def at_(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_flood_is_summarised_and_every_rejection_is_accounted_for(
    agent: tuple[EdgeAgent, list[DeadLetter]],
) -> None:
    edge, sent = agent
    for n in range(1000):  # 100 a second for 10 s
        reject(edge, n / 100)
    reject(edge, 0.5, Reason.DUPLICATE)  # another reason has its own first letter
    assert [(s.reason, s.repeats) for s in sent] == [("out_of_order", 0), ("duplicate", 0)]
    edge._flush_dead_letters(at_(DEADLETTER_EVERY_S - 0.1))
    assert len(sent) == 2  # not yet
    edge._flush_dead_letters(at_(DEADLETTER_EVERY_S))
    assert [(s.reason, s.repeats) for s in sent[2:]] == [("out_of_order", 998)]
    assert sum(1 + s.repeats for s in sent if s.reason == "out_of_order") == 1000
    assert edge.counters["deadletters.withheld"] == 999
    edge._flush_dead_letters(at_(60))  # nothing withheld: nothing more
    reject(edge, 61)  # a new one after a quiet spell goes at once
    assert [(s.reason, s.repeats) for s in sent[3:]] == [("out_of_order", 0)]
    edge.close()
