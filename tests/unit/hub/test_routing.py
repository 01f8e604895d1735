"""Routing policies: strict YAML with file:line errors; quiet hours never hold life safety."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hub.routing import PolicyError, load_policy, parse_policy

GOOD = """\
version: 1
timezone: Asia/Shanghai
quiet_hours: {start: "22:00", end: "07:00"}
life_safety: [gas, fire, fall]
delivery: {retries: 2, retry_after_s: 10}
channels:
  email: {type: smtp, host: 127.0.0.1, port: 2525, sender: hub@anmin.local}
  ops: {type: webhook, url: "http://127.0.0.1:9/hook"}
  wecom: {type: apprise, url: "json://127.0.0.1:9/{username}"}
routes:
  - name: life safety
    kinds: [gas, fire, fall]
    tiers:
      - {after_minutes: 0, roles: [family, committee], channels: [email], fallback: ops}
      - {after_minutes: 5, roles: [staff], people: [duty-officer], channels: [email, ops]}
  - name: everything else
    severities: [Moderate, Minor]
    tiers:
      - {roles: [committee], channels: [wecom]}
"""


def test_a_good_policy_reads() -> None:
    policy = parse_policy(GOOD)
    route = policy.route_for("gas", "Severe")
    assert route is not None and route.name == "life safety"
    assert [t.after for t in route.tiers] == [timedelta(0), timedelta(minutes=5)]
    assert route.tiers[0].fallback == "ops" and route.tiers[1].people == ("duty-officer",)
    assert policy.route_for("door", "Moderate") is not None
    assert policy.route_for("door", "Severe") is None
    assert policy.channels["email"].port == 2525 and policy.retries == 2


def test_quiet_hours_hold_routine_notices_but_never_life_safety() -> None:
    policy = parse_policy(GOOD)
    # 23:30 in Shanghai is 15:30 UTC; quiet hours end at 07:00 Shanghai = 23:00 UTC.
    night = datetime(2026, 3, 1, 15, 30, tzinfo=UTC)
    assert policy.hold_until("door", "Moderate", night) == datetime(2026, 3, 1, 23, 0, tzinfo=UTC)
    assert policy.hold_until("gas", "Minor", night) == night  # a life-safety kind
    assert policy.hold_until("door", "Extreme", night) == night  # Extreme is always life safety
    day = datetime(2026, 3, 1, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai
    assert policy.hold_until("door", "Moderate", day) == day
    early = datetime(2026, 3, 1, 22, 0, tzinfo=UTC)  # 06:00 next morning in Shanghai
    assert policy.hold_until("door", "Moderate", early) == datetime(2026, 3, 1, 23, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("change", "line", "message"),
    [
        (("version: 1", "version: 2"), 1, "version 1"),
        (("timezone: Asia/Shanghai", "timezone: Mars/Olympus"), 2, "unknown time zone"),
        (('end: "07:00"', 'end: "7 am"'), 3, "a time like"),
        (("delivery: {retries: 2", "delivery: {retrys: 2"), 5, "unknown key 'retrys'"),
        (("type: smtp", "type: pigeon"), 7, "unknown type 'pigeon'"),
        (("port: 2525", "port: lots"), 7, "whole number"),
        (("roles: [staff]", "roles: [staf]"), 15, "unknown 'staf'"),
        (("channels: [wecom]", "channels: [sms]"), 19, "unknown 'sms'"),
        (("fallback: ops", "fallback: fax"), 14, "unknown fallback channel 'fax'"),
        (("after_minutes: 5", "after_minutes: -5"), 15, "between 0 and"),
        (("severities: [Moderate, Minor]", "severities: [Moderate, Low]"), 17, "unknown 'Low'"),
        (("  - name: everything else", "  - nome: everything else"), 16, "unknown key 'nome'"),
    ],
)
def test_mistakes_name_the_file_and_line(change: tuple[str, str], line: int, message: str) -> None:
    text = GOOD.replace(*change)
    assert text != GOOD
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "routing.yaml")
    assert f"routing.yaml:{line}:" in str(caught.value)
    assert message in str(caught.value)


def test_a_tier_needs_someone_and_a_channel() -> None:
    with pytest.raises(PolicyError, match="names no roles and no people"):
        parse_policy(GOOD.replace("roles: [committee], channels: [wecom]", "channels: [wecom]"))
    with pytest.raises(PolicyError, match=r"<policy>:1: the routing policy is empty"):
        parse_policy("")
    with pytest.raises(PolicyError, match="not valid YAML"):
        parse_policy("version: [1")


def test_load_policy_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(GOOD, encoding="utf-8")
    assert len(load_policy(path).routes) == 2
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "missing.yaml")
