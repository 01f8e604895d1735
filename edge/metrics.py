"""Prometheus /metrics for the gateway: the agent's counters and gauges, read at scrape time."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import start_http_server
from prometheus_client.core import (
    REGISTRY,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from edge.agent import EdgeAgent

GAUGES = {
    "outbox_depth",
    "uplink_lag_s",
    "devices_online",
    "devices_offline",
    "uptime_s",
    "telemetry_buffered_batches",
}


class AgentCollector(Collector):
    """Turns ``EdgeAgent.stats()`` into metrics; rejects become one family labelled by reason."""

    def __init__(self, agent: EdgeAgent) -> None:
        self.agent = agent

    def collect(
        self,
    ) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        stats = self.agent.stats()
        labels = ["site", "gateway"]
        where = [self.agent.config.site, self.agent.config.gateway]
        rejects = CounterMetricFamily(
            "anmin_edge_rejected", "Input rejected, by reason", labels=[*labels, "reason"]
        )
        for name, value in sorted(stats.items()):
            if name.startswith("rejected."):
                rejects.add_metric([*where, name.removeprefix("rejected.")], value)
                continue
            metric = "anmin_edge_" + re.sub(r"[^a-zA-Z0-9_]", "_", name)
            family: CounterMetricFamily | GaugeMetricFamily
            if name in GAUGES:
                family = GaugeMetricFamily(metric, name, labels=labels)
            else:
                family = CounterMetricFamily(metric, name, labels=labels)
            family.add_metric(where, value)
            yield family
        yield rejects
        latency = self.agent.rule_latency
        rules = HistogramMetricFamily(
            "anmin_edge_rule_seconds",
            "Time to decide on one reading: every rule that concerns it, with their detectors",
            labels=labels,
        )
        rules.add_metric(where, latency.cumulative(), latency.sum)
        yield rules


def serve_metrics(agent: EdgeAgent, port: int, host: str = "127.0.0.1") -> None:
    """Serve /metrics from a daemon thread (prometheus_client's own server)."""
    REGISTRY.register(AgentCollector(agent))
    start_http_server(port, addr=host)
