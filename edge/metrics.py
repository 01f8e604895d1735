"""Prometheus /metrics for the gateway: the agent's counters and gauges, read at scrape time."""

from __future__ import annotations

import asyncio
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

SCRAPE_TIMEOUT_S = 5.0

GAUGES = {
    "outbox_depth",
    "uplink_lag_s",
    "devices_online",
    "devices_offline",
    "uptime_s",
    "telemetry_buffered_batches",
    "parts",
    "parts_reporting",
}

# The histograms, in the order EdgeAgent gives them (latency(), then alarm_latencies()).
HISTOGRAMS = [
    (
        "anmin_edge_rule_seconds",
        "Time to decide on one reading: every rule that concerns it, with their detectors",
    ),
    (
        "anmin_edge_alarm_seconds",
        "An alarm sent to the hub by its own task: from its reading read off the socket to its"
        " event written to the hub's (queueing, rules, the durable commit, the publish)",
    ),
    (
        "anmin_edge_alarm_commit_seconds",
        "Of anmin_edge_alarm_seconds: the wait for the event's durable commit, from queueing it"
        " on the outbox's thread to the loop resuming",
    ),
]


class AgentCollector(Collector):
    """Turns ``EdgeAgent.stats()`` into metrics; rejects become one family labelled by reason.

    A scrape runs on prometheus_client's server thread, while the agent's loop changes its
    counters: given that ``loop``, the figures are read on it (a counter dict that grows while
    another thread copies it raises "dictionary changed size during iteration"), and a loop
    that does not answer within SCRAPE_TIMEOUT_S fails the scrape rather than hang it."""

    def __init__(self, agent: EdgeAgent, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.agent = agent
        self.loop = loop

    def _read(self) -> tuple[dict[str, float], list[tuple[list[tuple[str, float]], float]]]:
        """The figures, copied (on the loop, where they change): buckets and sum of each
        histogram agree."""
        histograms = [self.agent.latency(), *self.agent.alarm_latencies()]
        return self.agent.stats(), [(h.cumulative(), h.sum) for h in histograms]

    async def _read_on_loop(
        self,
    ) -> tuple[dict[str, float], list[tuple[list[tuple[str, float]], float]]]:
        return self._read()

    def collect(
        self,
    ) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        loop = self.loop
        if loop is None or not loop.is_running() or _on(loop):
            stats, histograms = self._read()
        else:
            future = asyncio.run_coroutine_threadsafe(self._read_on_loop(), loop)
            try:
                stats, histograms = future.result(timeout=SCRAPE_TIMEOUT_S)
            except TimeoutError:
                future.cancel()  # not read later, for no one
                raise
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
        for (name, text), (buckets, total) in zip(HISTOGRAMS, histograms, strict=True):
            histogram = HistogramMetricFamily(name, text, labels=labels)
            histogram.add_metric(where, buckets, total)
            yield histogram


def _on(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether this thread is running ``loop``."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def serve_metrics(agent: EdgeAgent, port: int, host: str = "127.0.0.1") -> None:
    """Serve /metrics from a daemon thread (prometheus_client's own server); called on the
    agent's loop, which the scrapes then read the figures on."""
    REGISTRY.register(AgentCollector(agent, asyncio.get_running_loop()))
    start_http_server(port, addr=host)
