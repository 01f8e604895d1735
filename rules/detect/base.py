"""What every detector shares: the time key, the score scale, channel choice and the filter
that keeps anomalies out of learning (river's ``anomaly/filter.py`` idea).

Every score is ``r / (1 + r)`` of a ratio ``r`` that is 1 where the detector's own statistic
reaches its "clearly unusual" level, so 0.5 means the same thing for every detector and rules
can write ``score >= 0.5``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Protocol

# The engine adds the reading's local time (epoch seconds shifted by the rules' UTC offset)
# under this key, for detectors that need the time of day; the others ignore it.
TIME_KEY = "@t"
MAX_CHANNELS = 16


class Model(Protocol):
    """A detector's model. ``learned`` counts the readings it learned (its version)."""

    @property
    def warm_up(self) -> int: ...

    @property
    def learned(self) -> int: ...

    def learn_one(self, x: Mapping[str, float]) -> None: ...

    def score_one(self, x: Mapping[str, float]) -> float: ...


def squash(ratio: float) -> float:
    """A non-negative ratio (1 = the detector's "unusual" level) to 0..1, 0.5 at 1."""
    if not ratio > 0.0:  # also NaN
        return 0.0
    if ratio == float("inf"):
        return 1.0
    return ratio / (1.0 + ratio)


class Channels:
    """Which values of a reading a detector reads: the configured names (those present in the
    first reading it learns), or every value not starting with ``@``; fixed from then on."""

    def __init__(self, wanted: Sequence[str]) -> None:
        self.wanted = tuple(wanted)
        self.names: tuple[str, ...] | None = None

    def fix(self, x: Mapping[str, float]) -> tuple[str, ...]:
        if self.names is None:
            if self.wanted:
                names = [n for n in self.wanted if n in x]
            else:
                names = sorted(n for n in x if not n.startswith("@"))
            self.names = tuple(names[:MAX_CHANNELS])
        return self.names

    def row(self, x: Mapping[str, float]) -> list[float] | None:
        """The reading's channel values, or None if one is missing (or not yet fixed)."""
        if not self.names:
            return None
        try:
            return [float(x[n]) for n in self.names]
        except KeyError:
            return None


class Protected:
    """The filter between scores and learning: ``score_one`` is the model's; ``learn_one``
    skips a reading that scores ``protect`` or more, so an anomaly never becomes the normal.
    (The engine also stops learning while the rule's alert is raised.)

    ``delay``: a reading is learned only once ``delay`` later readings scored under
    ``protect`` too; a high score drops the readings waiting, so the slow onset of an anomaly
    (readings drifting but not yet unusual) is not learned either. Warm-up readings are
    learned at once. ``freeze``: nothing is learned after the warm-up."""

    def __init__(
        self, model: Model, protect: float, *, freeze: bool = False, delay: int = 0
    ) -> None:
        self.model = model
        self.protect = protect
        self.freeze = freeze
        self.delay = delay
        self.protected = 0  # readings kept out of learning
        self._pending: deque[dict[str, float]] = deque()  # at most ``delay`` readings
        # (the reading, the model's version, its score): held, so the identity test is sound
        self._last: tuple[Mapping[str, float], int, float] | None = None

    @property
    def warm_up(self) -> int:
        return self.model.warm_up

    def score_one(self, x: Mapping[str, float]) -> float:
        score = self.model.score_one(x)
        # A cache, not state: the engine scores then learns the same reading; no rescoring.
        self._last = (x, self.model.learned, score)
        return score

    def learn_one(self, x: Mapping[str, float]) -> None:
        warm = self.model.learned >= self.model.warm_up
        if self.freeze and warm:
            return
        last = self._last
        if last is not None and last[0] is x and last[1] == self.model.learned:
            score = last[2]
        else:
            score = self.model.score_one(x)
        self._last = None
        if score >= self.protect:
            self.protected += 1 + len(self._pending)
            self._pending.clear()
            return
        if not warm or self.delay == 0:
            self.model.learn_one(x)
            return
        self._pending.append(dict(x))
        if len(self._pending) > self.delay:
            self.model.learn_one(self._pending.popleft())
