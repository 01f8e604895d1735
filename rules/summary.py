"""Rules in words: what ``anmin rules check`` prints, so a person can read what will happen."""

from __future__ import annotations

from rules.durations import describe, seconds
from rules.language import Condition, Level, Rule


def condition(cond: Condition) -> str:
    if cond.all is not None or cond.any is not None:
        children = cond.all if cond.all is not None else cond.any or []
        joiner = " and " if cond.all is not None else " or "
        parts = [condition(child) for child in children]
        text = joiner.join(f"({p})" if (" and " in p or " or " in p) else p for p in parts)
        return text
    text = _leaf(cond)
    if cond.within is not None:
        text += f" (at any time in the last {describe(seconds(cond.within))})"
    return text


def _threshold(cond: Condition) -> str:
    unit = f" {cond.unit}" if cond.unit and cond.unit not in ("bool", "count") else ""
    return f"{cond.op} {cond.value:g}{unit}"


def _leaf(cond: Condition) -> str:
    if cond.metric is not None:
        what = cond.metric
        if cond.agg != "last" and cond.over is not None:
            what = f"{cond.agg} of {cond.metric} over {describe(seconds(cond.over))}"
        return f"{what} {_threshold(cond)}"
    if cond.rate is not None and cond.over is not None:
        return f"rise of {cond.rate} over {describe(seconds(cond.over))} {_threshold(cond)}"
    if cond.cohb is not None:
        return f"COHb modelled from {cond.cohb} (CFK, B={cond.work:g}) {_threshold(cond)}"
    if cond.score is not None:
        return f"score of detector {cond.score} {_threshold(cond)}"
    if cond.stuck is not None and cond.over is not None:
        which = "any analogue value" if cond.stuck == "*" else cond.stuck
        return f"{which} unchanged for {describe(seconds(cond.over))}"
    if cond.out_of_range is not None:
        which = "any value" if cond.out_of_range == "*" else cond.out_of_range
        return f"{which} outside its physical range"
    if cond.silent is not None:
        return f"no reading for {describe(seconds(cond.silent))}"
    if cond.silent_intervals is not None:
        return f"no reading for {cond.silent_intervals:g} reporting intervals"
    if cond.clock_skew is not None:
        return f"device clock off by more than {describe(seconds(cond.clock_skew))}"
    if cond.hours is not None:
        return f"local time in {cond.hours}"
    if cond.inactive is not None:
        text = (
            f"no {' or '.join(cond.inactive)} for longer than the learned routine "
            f"(default {describe(seconds(cond.default))})"
        )
        if cond.wake is not None:
            weekend = f", weekends {cond.weekend_wake}" if cond.weekend_wake else ""
            margin = describe(seconds(cond.margin or "1h"))
            text += (
                f", or none since the usual wake time ({cond.wake}{weekend}; a resident's own "
                f"under routines) by {margin} after it"
            )
        return text
    if cond.away is not None and cond.over is not None:
        return (
            f"out by the {cond.away} door, no {' or '.join(cond.presence)} since, "
            f"for {describe(seconds(cond.over))}"
        )
    return "?"


def level(lvl: Level) -> str:
    cond = lvl.condition
    text = "no create condition holds" if cond is None else condition(cond)
    hold = seconds(lvl.for_)
    if hold:
        text += f", held {describe(hold)}"
    if lvl.repeat is not None and lvl.within is not None:
        text += f", {lvl.repeat} times within {describe(seconds(lvl.within))}"
    return text


def rule(r: Rule) -> list[str]:
    """One line for the rule, then one per level, the clear condition and the actions."""
    where = f"per {r.scope}"
    if r.devices.kinds:
        where += f", devices: {', '.join(r.devices.kinds)}"
    if r.devices.rooms:
        where += f" in {', '.join(r.devices.rooms)}"
    if r.devices.not_kinds:
        where += f", not {', '.join(r.devices.not_kinds)}"
    head = f"{r.id} ({r.kind}{', life safety' if r.life_safety else ''}; {where})"
    lines = [head + (f": {r.description}" if r.description else "")]
    for severity, lvl in r.levels():
        lines.append(f"  {severity} when {level(lvl)}")
    if r.clear is not None:
        lines.append(f"  clears when {level(r.clear)} (and no create condition holds)")
    else:
        lines.append("  clears when no create condition holds")
    if r.actions:
        acts = []
        for a in r.actions:
            text = a.do + (f" to {', '.join(a.to)}" if a.to else "")
            acts.append(text + (f" from {a.at}" if a.at else ""))
        lines.append(f"  then: {'; '.join(acts)}")
    return lines
