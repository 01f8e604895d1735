"""A resident's learned routine: how long they usually go without activity, per hour of week.

For each hour of the week the routine keeps the longest quiet gap that started in that hour
(slowly forgetting old weeks). Once an hour has been seen in 3 weeks, "inactive for too long"
means longer than twice that gap plus an hour (at least 2 h); until then it means the default window
(Tunstall's default inactivity period is 12-14 h, configurable from 30 min to 50 h; see
STANDARDS.md). A gap that was itself alarming is not learned, so an incident does not become
the new normal.

A "not up by" check (``UpBy``: the usual local wake time, weekdays and weekends, plus a
margin) tightens the limit in the morning, as elder-care services do: a quiet spell that
began before the usual wake time may last only until that wake time plus the margin. So at
wake + margin the resident must have shown some activity since the usual wake time (night-
time visits to the bathroom before it do not count); otherwise it is inactivity.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec

HOURS_OF_WEEK = 168
MIN_WEEKS = 3
MARGIN = 2.0
SLACK_S = 3600.0
LOWEST_S = 2 * 3600.0  # never tighter than this: a resident may go out for an errand
HIGHEST_S = 50 * 3600.0  # ... and its longest
FORGET = 0.95  # each new sample lowers the remembered longest gap this much first
DAY_S = 86400.0


def hour_of_week(at: float, utc_offset_s: float) -> int:
    local = datetime.fromtimestamp(at + utc_offset_s, UTC)
    return local.weekday() * 24 + local.hour


@dataclass(frozen=True, slots=True)
class UpBy:
    """Up by ``margin_s`` after the usual wake time (minutes after local midnight)."""

    wake_min: int
    weekend_min: int
    margin_s: float

    def wake_after(self, since: float, utc_offset_s: float) -> float:
        """The first usual wake time strictly after ``since`` (epoch seconds)."""
        local = since + utc_offset_s
        day = int(local // DAY_S)
        for d in (day, day + 1, day + 2):
            weekday = (d + 3) % 7  # 1970-01-01 was a Thursday; Saturday is 5
            minute = self.weekend_min if weekday >= 5 else self.wake_min
            wake = d * DAY_S + minute * 60.0
            if wake > local:
                return wake - utc_offset_s
        raise AssertionError("a wake time comes within two days")  # pragma: no cover

    def deadline(self, since: float, utc_offset_s: float) -> float:
        """When a quiet spell starting at ``since`` becomes "not up": the next usual wake
        time after it, plus the margin."""
        return self.wake_after(since, utc_offset_s) + self.margin_s


class Routine(msgspec.Struct):
    last_activity: float | None = None
    longest: list[float] = msgspec.field(default_factory=lambda: [0.0] * HOURS_OF_WEEK)
    weeks: list[int] = msgspec.field(default_factory=lambda: [0] * HOURS_OF_WEEK)
    last_week: list[int] = msgspec.field(default_factory=lambda: [-1] * HOURS_OF_WEEK)

    def limit(
        self, since: float, default_s: float, utc_offset_s: float, up_by: UpBy | None = None
    ) -> float:
        """How long a quiet spell starting at ``since`` may last before it is inactivity:
        the learned (or default) limit, cut short by a "not up by" deadline."""
        hour = hour_of_week(since, utc_offset_s)
        if self.weeks[hour] < MIN_WEEKS:
            limit = default_s
        else:
            learned = self.longest[hour] * MARGIN + SLACK_S
            limit = min(max(learned, LOWEST_S), HIGHEST_S)
        if up_by is not None:
            limit = min(limit, up_by.deadline(since, utc_offset_s) - since)
        return limit

    def activity(
        self, at: float, default_s: float, utc_offset_s: float, up_by: UpBy | None = None
    ) -> None:
        previous = self.last_activity
        if previous is not None and at > previous:
            gap = at - previous
            if gap <= self.limit(previous, default_s, utc_offset_s, up_by):
                hour = hour_of_week(previous, utc_offset_s)
                self.longest[hour] = max(gap, self.longest[hour] * FORGET)
                week = int((previous + utc_offset_s) // (7 * 86400))
                if week != self.last_week[hour]:
                    self.last_week[hour] = week
                    self.weeks[hour] += 1
        if previous is None or at > previous:
            self.last_activity = at
