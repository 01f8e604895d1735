"""A resident's learned routine: how long they usually go without activity, per hour of week.

For each hour of the week the routine keeps the longest quiet gap that started in that hour
(slowly forgetting old weeks). Once an hour has been seen in 3 weeks, "inactive for too long"
means longer than twice that gap plus an hour (at least 2 h); until then it means the default window
(Tunstall's default inactivity period is 12-14 h, configurable from 30 min to 50 h; see
STANDARDS.md). A gap that was itself alarming is not learned, so an incident does not become
the new normal.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

HOURS_OF_WEEK = 168
MIN_WEEKS = 3
MARGIN = 2.0
SLACK_S = 3600.0
LOWEST_S = 2 * 3600.0  # never tighter than this: a resident may go out for an errand
HIGHEST_S = 50 * 3600.0  # ... and its longest
FORGET = 0.95  # each new sample lowers the remembered longest gap this much first


def hour_of_week(at: float, utc_offset_s: float) -> int:
    local = datetime.fromtimestamp(at + utc_offset_s, UTC)
    return local.weekday() * 24 + local.hour


class Routine(msgspec.Struct):
    last_activity: float | None = None
    longest: list[float] = msgspec.field(default_factory=lambda: [0.0] * HOURS_OF_WEEK)
    weeks: list[int] = msgspec.field(default_factory=lambda: [0] * HOURS_OF_WEEK)
    last_week: list[int] = msgspec.field(default_factory=lambda: [-1] * HOURS_OF_WEEK)

    def limit(self, since: float, default_s: float, utc_offset_s: float) -> float:
        """How long a quiet spell starting at ``since`` may last before it is inactivity."""
        hour = hour_of_week(since, utc_offset_s)
        if self.weeks[hour] < MIN_WEEKS:
            return default_s
        learned = self.longest[hour] * MARGIN + SLACK_S
        return min(max(learned, LOWEST_S), HIGHEST_S)

    def activity(self, at: float, default_s: float, utc_offset_s: float) -> None:
        previous = self.last_activity
        if previous is not None and at > previous:
            gap = at - previous
            if gap <= self.limit(previous, default_s, utc_offset_s):
                hour = hour_of_week(previous, utc_offset_s)
                self.longest[hour] = max(gap, self.longest[hour] * FORGET)
                week = int((previous + utc_offset_s) // (7 * 86400))
                if week != self.last_week[hour]:
                    self.last_week[hour] = week
                    self.weeks[hour] += 1
        if previous is None or at > previous:
            self.last_activity = at
