"""Routing policies: which incidents go to whom, through which channels, and when.

Written by people in YAML, so read strictly: an unknown key, a wrong type, an unknown role,
channel or severity is an error naming the file and line. Example (docs/hub.md has more)::

    version: 1
    timezone: Asia/Shanghai
    quiet_hours: {start: "22:00", end: "07:00"}
    life_safety: [gas, fire, smoke, co, sos, fall]
    channels:
      email: {type: smtp, host: 127.0.0.1, port: 25, sender: hub@anmin.local}
      ops: {type: webhook, url: "http://127.0.0.1:9000/hook"}
    routes:
      - name: gas
        kinds: [gas]
        severities: [Extreme, Severe]
        tiers:
          - {after_minutes: 0, roles: [family, committee], channels: [email], fallback: ops}
          - {after_minutes: 5, roles: [staff], channels: [email, ops]}

The first route whose kinds and severities match an incident is its route. Tier 0 is told at
once; each later tier when the incident is still unacknowledged ``after_minutes`` after it
opened. Quiet hours hold back notices of incidents that are not life safety (a kind listed in
``life_safety``, or severity Extreme) until the quiet hours end; life safety is never held.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from hub.directory import ROLES
from hub.errors import HubError
from wire import Severity

CHANNEL_TYPES = ("smtp", "webhook", "apprise")
DEFAULT_LIFE_SAFETY = ("gas", "fire", "smoke", "co", "sos", "fall")
SEVERITIES = tuple(s.value for s in Severity)


class PolicyError(HubError):
    """The routing policy file is wrong; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    name: str
    type: str
    # smtp
    host: str = "127.0.0.1"
    port: int = 25
    sender: str = "anmin-hub@localhost"
    starttls: bool = False
    username: str | None = None
    password_env: str | None = None
    # webhook and apprise
    url: str = ""
    timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class Tier:
    after: timedelta
    roles: tuple[str, ...]
    people: tuple[str, ...]
    channels: tuple[str, ...]
    fallback: str | None


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    kinds: frozenset[str] | None  # None: every kind
    severities: frozenset[str] | None
    tiers: tuple[Tier, ...]

    def matches(self, kind: str, severity: str) -> bool:
        return (self.kinds is None or kind in self.kinds) and (
            self.severities is None or severity in self.severities
        )


@dataclass(frozen=True, slots=True)
class QuietHours:
    start: time
    end: time

    def contains(self, local: time) -> bool:
        if self.start <= self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end  # across midnight


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    channels: dict[str, ChannelConfig]
    routes: tuple[Route, ...]
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    quiet_hours: QuietHours | None = None
    life_safety: frozenset[str] = frozenset(DEFAULT_LIFE_SAFETY)
    retries: int = 3
    retry_after: timedelta = timedelta(seconds=30)

    def route_for(self, kind: str, severity: str) -> Route | None:
        return next((r for r in self.routes if r.matches(kind, severity)), None)

    def is_life_safety(self, kind: str, severity: str) -> bool:
        return kind in self.life_safety or severity == Severity.EXTREME.value

    def hold_until(self, kind: str, severity: str, now: datetime) -> datetime:
        """When a notice may go out: now, or the end of quiet hours (never for life safety)."""
        if self.quiet_hours is None or self.is_life_safety(kind, severity):
            return now
        local = now.astimezone(self.timezone)
        if not self.quiet_hours.contains(local.time()):
            return now
        end = datetime.combine(local.date(), self.quiet_hours.end, tzinfo=self.timezone)
        if end <= local:
            end += timedelta(days=1)
        return end.astimezone(now.tzinfo)


EMPTY_POLICY = RoutingPolicy(channels={}, routes=())


# Reading YAML strictly, with lines.


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, node: Node, message: str) -> PolicyError:
        return PolicyError(f"{self.source}:{node.start_mark.line + 1}: {message}")

    def mapping(self, node: Node, what: str, allowed: set[str]) -> dict[str, Node]:
        if not isinstance(node, MappingNode):
            raise self.fail(node, f"{what} must be a mapping")
        out: dict[str, Node] = {}
        for key, value in node.value:
            if not isinstance(key, ScalarNode):
                raise self.fail(key, f"{what}: keys must be plain names")
            if key.value not in allowed:
                raise self.fail(
                    key, f"{what}: unknown key {key.value!r} (known: {', '.join(sorted(allowed))})"
                )
            if key.value in out:
                raise self.fail(key, f"{what}: {key.value!r} is given twice")
            out[key.value] = value
        return out

    def scalar(self, node: Node, what: str) -> str:
        if not isinstance(node, ScalarNode):
            raise self.fail(node, f"{what} must be a single value")
        return str(node.value)

    def integer(self, node: Node, what: str, low: int = 0, high: int = 10**6) -> int:
        text = self.scalar(node, what)
        try:
            value = int(text)
        except ValueError:
            raise self.fail(node, f"{what} must be a whole number, not {text!r}") from None
        if not low <= value <= high:
            raise self.fail(node, f"{what} must be between {low} and {high}")
        return value

    def number(self, node: Node, what: str) -> float:
        text = self.scalar(node, what)
        try:
            value = float(text)
        except ValueError:
            raise self.fail(node, f"{what} must be a number, not {text!r}") from None
        if not 0 <= value <= 10**6:
            raise self.fail(node, f"{what} must be between 0 and 1000000")
        return value

    def boolean(self, node: Node, what: str) -> bool:
        text = self.scalar(node, what).lower()
        if text in ("true", "yes", "on"):
            return True
        if text in ("false", "no", "off"):
            return False
        raise self.fail(node, f"{what} must be true or false")

    def names(self, node: Node, what: str, known: set[str] | None = None) -> list[tuple[str, Node]]:
        if not isinstance(node, SequenceNode):
            raise self.fail(node, f"{what} must be a list")
        out = []
        for item in node.value:
            name = self.scalar(item, f"an entry of {what}")
            if known is not None and name not in known:
                raise self.fail(
                    item, f"{what}: unknown {name!r} (known: {', '.join(sorted(known))})"
                )
            out.append((name, item))
        return out

    def clock_time(self, node: Node, what: str) -> time:
        text = self.scalar(node, what)
        try:
            return time.fromisoformat(text)
        except ValueError:
            raise self.fail(node, f'{what} must be a time like "22:00", not {text!r}') from None


def load_policy(path: Path) -> RoutingPolicy:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the routing policy: {exc}") from exc
    return parse_policy(text, str(path))


def parse_policy(text: str, source: str = "<policy>") -> RoutingPolicy:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"{mark.line + 1}" if mark is not None else "?"
        raise PolicyError(f"{source}:{line}: not valid YAML: {exc}") from exc
    if root is None:
        raise PolicyError(f"{source}:1: the routing policy is empty")
    r = _Reader(source)
    top = r.mapping(
        root,
        "the policy",
        {"version", "timezone", "quiet_hours", "life_safety", "channels", "routes", "delivery"},
    )
    if "version" not in top:
        raise r.fail(root, "the policy needs `version: 1`")
    if r.integer(top["version"], "version", 1, 1000) != 1:
        raise r.fail(top["version"], "this hub reads routing policy version 1")
    kwargs: dict[str, Any] = {}
    if "timezone" in top:
        zone = r.scalar(top["timezone"], "timezone")
        try:
            kwargs["timezone"] = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise r.fail(top["timezone"], f"unknown time zone {zone!r}") from None
    if "quiet_hours" in top:
        quiet = r.mapping(top["quiet_hours"], "quiet_hours", {"start", "end"})
        for key in ("start", "end"):
            if key not in quiet:
                raise r.fail(top["quiet_hours"], f"quiet_hours needs {key}")
        kwargs["quiet_hours"] = QuietHours(
            r.clock_time(quiet["start"], "quiet_hours.start"),
            r.clock_time(quiet["end"], "quiet_hours.end"),
        )
    if "life_safety" in top:
        kwargs["life_safety"] = frozenset(n for n, _ in r.names(top["life_safety"], "life_safety"))
    if "delivery" in top:
        delivery = r.mapping(top["delivery"], "delivery", {"retries", "retry_after_s"})
        if "retries" in delivery:
            kwargs["retries"] = r.integer(delivery["retries"], "delivery.retries", 0, 20)
        if "retry_after_s" in delivery:
            seconds = r.number(delivery["retry_after_s"], "delivery.retry_after_s")
            kwargs["retry_after"] = timedelta(seconds=seconds)
    channels = _channels(r, top["channels"]) if "channels" in top else {}
    routes = _routes(r, top["routes"], set(channels)) if "routes" in top else ()
    return RoutingPolicy(channels=channels, routes=routes, **kwargs)


_CHANNEL_KEYS = {
    "smtp": {"type", "host", "port", "sender", "starttls", "username", "password_env", "timeout_s"},
    "webhook": {"type", "url", "timeout_s"},
    "apprise": {"type", "url", "timeout_s"},
}


def _channels(r: _Reader, node: Node) -> dict[str, ChannelConfig]:
    if not isinstance(node, MappingNode):
        raise r.fail(node, "channels must be a mapping of name: {type: ...}")
    out: dict[str, ChannelConfig] = {}
    for key, value in node.value:
        name = r.scalar(key, "a channel name")
        if name in out:
            raise r.fail(key, f"channel {name!r} is given twice")
        if not isinstance(value, MappingNode):
            raise r.fail(value, f"channel {name!r} must be a mapping")
        type_node = next((v for k, v in value.value if getattr(k, "value", None) == "type"), None)
        if type_node is None:
            raise r.fail(value, f"channel {name!r} needs a type ({', '.join(CHANNEL_TYPES)})")
        kind = r.scalar(type_node, f"channel {name!r} type")
        if kind not in CHANNEL_TYPES:
            raise r.fail(type_node, f"channel {name!r}: unknown type {kind!r} "
                         f"(known: {', '.join(CHANNEL_TYPES)})")  # fmt: skip
        fields = r.mapping(value, f"channel {name!r}", _CHANNEL_KEYS[kind])
        kwargs: dict[str, Any] = {"name": name, "type": kind}
        for field_name, field_node in fields.items():
            what = f"channel {name!r} {field_name}"
            if field_name == "type":
                continue
            if field_name == "port":
                kwargs["port"] = r.integer(field_node, what, 1, 65535)
            elif field_name == "starttls":
                kwargs["starttls"] = r.boolean(field_node, what)
            elif field_name == "timeout_s":
                kwargs["timeout_s"] = r.number(field_node, what)
            else:
                kwargs[field_name] = r.scalar(field_node, what)
        if kind in ("webhook", "apprise") and not kwargs.get("url"):
            raise r.fail(value, f"channel {name!r} needs a url")
        out[name] = ChannelConfig(**kwargs)
    return out


def _routes(r: _Reader, node: Node, channels: set[str]) -> tuple[Route, ...]:
    if not isinstance(node, SequenceNode):
        raise r.fail(node, "routes must be a list")
    routes = []
    for item in node.value:
        fields = r.mapping(item, "a route", {"name", "kinds", "severities", "tiers"})
        if "name" not in fields or "tiers" not in fields:
            raise r.fail(item, "a route needs a name and tiers")
        name = r.scalar(fields["name"], "route name")
        kinds = (
            frozenset(n for n, _ in r.names(fields["kinds"], f"route {name!r} kinds"))
            if "kinds" in fields
            else None
        )
        severities = (
            frozenset(
                n
                for n, _ in r.names(
                    fields["severities"], f"route {name!r} severities", set(SEVERITIES)
                )
            )
            if "severities" in fields
            else None
        )
        tiers_node = fields["tiers"]
        if not isinstance(tiers_node, SequenceNode) or not tiers_node.value:
            raise r.fail(tiers_node, f"route {name!r}: tiers must be a non-empty list")
        tiers: list[Tier] = []
        for tier_node in tiers_node.value:
            t = r.mapping(
                tier_node,
                f"route {name!r} tier",
                {"after_minutes", "roles", "people", "channels", "fallback"},
            )
            what = f"route {name!r} tier {len(tiers)}"
            after = timedelta(minutes=r.number(t["after_minutes"], f"{what} after_minutes")) if (
                "after_minutes" in t
            ) else timedelta(0)  # fmt: skip
            if tiers and after < tiers[-1].after:
                raise r.fail(tier_node, f"{what}: after_minutes must not go down")
            roles = tuple(n for n, _ in r.names(t["roles"], f"{what} roles", set(ROLES))) if (
                "roles" in t
            ) else ()  # fmt: skip
            people = tuple(n for n, _ in r.names(t["people"], f"{what} people")) if (
                "people" in t
            ) else ()  # fmt: skip
            if not roles and not people:
                raise r.fail(tier_node, f"{what} names no roles and no people")
            if "channels" not in t:
                raise r.fail(tier_node, f"{what} needs channels")
            tier_channels = tuple(
                n for n, _ in r.names(t["channels"], f"{what} channels", channels)
            )
            if not tier_channels:
                raise r.fail(t["channels"], f"{what} needs at least one channel")
            fallback = None
            if "fallback" in t:
                fallback = r.scalar(t["fallback"], f"{what} fallback")
                if fallback not in channels:
                    raise r.fail(t["fallback"], f"{what}: unknown fallback channel {fallback!r}")
            tiers.append(Tier(after, roles, people, tier_channels, fallback))
        routes.append(Route(name, kinds, severities, tuple(tiers)))
    return tuple(routes)
