"""A latency histogram cheap enough to update on every reading, exported as Prometheus buckets.

prometheus_client's own Histogram takes a lock per observation and lives in the global registry;
the agent's metrics are read from ``EdgeAgent.stats()`` at scrape time instead, and a gateway
without the ``edge`` extra's prometheus_client still keeps these figures for its heartbeat.
"""

from __future__ import annotations

from bisect import bisect_left

# Upper bounds in seconds ("le"), from what a rule costs (tens of µs) to a stalled loop.
BUCKETS_S = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0)
# An alarm's way through the agent: around the 1 ms, finer.
ALARM_BUCKETS_S = (
    0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.025, 0.1, 1.0
)  # fmt: skip


class Latency:
    """Counts per bucket, with the sum and count (Prometheus' histogram shape)."""

    __slots__ = ("buckets", "count", "counts", "sum")

    def __init__(self, buckets: tuple[float, ...] = BUCKETS_S) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.buckets, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def merged(self, others: list[tuple[list[int], float]]) -> Latency:
        """This one with other processes' counts and sums (a part's of the same buckets)."""
        out = Latency(self.buckets)
        out.counts, out.sum, out.count = list(self.counts), self.sum, self.count
        for counts, total in others:
            if len(counts) == len(out.counts):
                out.counts = [a + b for a, b in zip(out.counts, counts, strict=True)]
                out.sum += total
                out.count += sum(counts)
        return out

    def cumulative(self) -> list[tuple[str, float]]:
        """(le, observations at or below it), ending with +Inf: what Prometheus expects."""
        out: list[tuple[str, float]] = []
        running = 0
        bounds = (*(f"{b:g}" for b in self.buckets), "+Inf")
        for bound, n in zip(bounds, self.counts, strict=True):
            running += n
            out.append((bound, float(running)))
        return out

    def quantile(self, q: float) -> float | None:
        """The upper bound of the bucket holding quantile ``q`` (None before any observation)."""
        if not self.count:
            return None
        rank = q * self.count
        running = 0
        for bound, n in zip((*self.buckets, float("inf")), self.counts, strict=True):
            running += n
            if running >= rank:
                return bound
        return float("inf")
