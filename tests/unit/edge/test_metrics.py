"""/metrics: the rule latency histogram and the agent's counters, as Prometheus reads them."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from bus import Broker, Incoming
from edge import EdgeAgent, parse
from edge.latency import BUCKETS_S, Latency
from edge.metrics import AgentCollector
from tests.integration.edge_support import edge_config_yaml, gas_reading
from wire import topics


def test_observations_land_in_the_first_bucket_that_holds_them() -> None:
    latency = Latency()
    for seconds in (0.00001, 0.00005, 0.0003, 0.0003, 2.0):
        latency.observe(seconds)
    cumulative = dict(latency.cumulative())
    assert cumulative["5e-05"] == 2  # "le": a value on a bound counts in that bound
    assert cumulative["0.0005"] == 4
    assert cumulative["1"] == 4
    assert cumulative["+Inf"] == 5 == latency.count
    assert latency.sum == pytest.approx(2.00066)
    assert latency.quantile(0.5) == 0.0005
    assert latency.quantile(0.99) == float("inf")
    assert len(latency.cumulative()) == len(BUCKETS_S) + 1


def test_an_empty_histogram_has_no_quantile() -> None:
    assert Latency().quantile(0.99) is None


@pytest.mark.anyio
async def test_the_agent_exports_its_rule_latency_and_counters(tmp_path: Path) -> None:
    # No broker is needed: the reading is handed to the agent as the link would hand it.
    agent = EdgeAgent(parse(edge_config_yaml(Broker("127.0.0.1", 1), tmp_path)))
    try:
        topic = topics.reading("s1", "gw-1", "gas-b1-101")
        for seq in (1, 2, 3):
            await agent._on_message(Incoming(topic, gas_reading(seq, 1.0), 1, False))
        registry = CollectorRegistry()
        registry.register(AgentCollector(agent))
        text = generate_latest(registry).decode()
    finally:
        agent.close()
    where = 'gateway="gw-1",site="s1"'
    assert f"anmin_edge_rule_seconds_count{{{where}}} 3.0" in text
    assert 'anmin_edge_rule_seconds_bucket{gateway="gw-1",le="+Inf",site="s1"} 3.0' in text
    assert f"anmin_edge_readings_total{{{where}}} 3.0" in text
    assert f"anmin_edge_rule_failures_total{{{where}}} 0.0" in text  # a rule that raised


@pytest.mark.anyio
async def test_a_scrape_from_the_server_thread_reads_the_figures_on_the_agents_loop(
    tmp_path: Path,
) -> None:
    """prometheus_client scrapes on its own thread while the loop changes the counters: the
    figures are read on the loop (a counter dict growing while copied raises)."""
    agent = EdgeAgent(parse(edge_config_yaml(Broker("127.0.0.1", 1), tmp_path)))
    try:
        topic = topics.reading("s1", "gw-1", "gas-b1-101")
        await agent._on_message(Incoming(topic, gas_reading(1, 1.0), 1, False))
        read_on: list[int] = []
        stats = agent.stats

        def spy() -> dict[str, float]:
            read_on.append(threading.get_ident())
            return stats()

        agent.stats = spy  # type: ignore[method-assign]
        registry = CollectorRegistry()
        registry.register(AgentCollector(agent, asyncio.get_running_loop()))
        text = (await asyncio.to_thread(generate_latest, registry)).decode()
    finally:
        agent.close()
    assert read_on == [threading.get_ident()], "read on the scrape's thread, not the loop's"
    assert 'anmin_edge_readings_total{gateway="gw-1",site="s1"} 1.0' in text
