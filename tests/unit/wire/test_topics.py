from __future__ import annotations

import pytest

from wire import Reason, WireError, topics
from wire.topics import Channel, Topic


@pytest.mark.parametrize(
    "topic",
    [
        Topic(Channel.READING, "s1", "gw-1", "gas-1"),
        Topic(Channel.STATUS, "s1", "gw-1", "gas-1"),
        Topic(Channel.CMD, "s1", "gw-1", "gas-1"),
        Topic(Channel.DEVICE_RECEIPT, "s1", "gw-1", "spk-1"),
        Topic(Channel.ALERT, "s1", "gw-1"),
        Topic(Channel.ACK, "s1", "gw-1"),
        Topic(Channel.HEARTBEAT, "s1", "gw-1"),
        Topic(Channel.RECEIPT, "s1", "gw-1"),
        Topic(Channel.DEADLETTER, "s1", "gw-1"),
        Topic(Channel.BROADCAST, "s1"),
    ],
)
def test_build_and_parse_round_trip(topic: Topic) -> None:
    text = topics.build(topic)
    assert text.startswith("anmin/v1/s1/")
    assert topics.parse(text) == topic


def test_the_tree_matches_the_design() -> None:
    assert topics.reading("s", "g", "d") == "anmin/v1/s/g/dev/d/reading"
    assert topics.command("s", "g", "d") == "anmin/v1/s/g/dev/d/cmd"
    assert topics.gateway_topic(Channel.ALERT, "s", "g") == "anmin/v1/s/g/alert"
    assert topics.broadcast("s") == "anmin/v1/s/broadcast"
    assert topics.hub_filter(Channel.ALERT, shared=True) == "$share/anmin-hub/anmin/v1/+/+/alert"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "anmin",
        "other/v1/s/g/alert",
        "anmin/v2/s/g/alert",
        "anmin/v1/s/g/nonsense",
        "anmin/v1/s/g/dev/d/unknown",
        "anmin/v1/s/g/dev/d",
        "anmin/v1/s/g/dev/d/reading/extra",
        "anmin/v1/s/+/alert",
        "anmin/v1/s/g/dev/#/reading",
        "anmin/v1//g/alert",
    ],
)
def test_parse_rejects_topics_outside_the_tree(bad: str) -> None:
    with pytest.raises(WireError) as caught:
        topics.parse(bad)
    assert caught.value.reason is Reason.BAD_TOPIC


def test_builders_refuse_ids_that_would_break_the_tree() -> None:
    for bad_id in ("a/b", "+", "#", "", "x" * 65, "中文"):
        with pytest.raises(WireError):
            topics.reading("s", "g", bad_id)
    with pytest.raises(WireError):
        topics.gateway_topic(Channel.READING, "s", "g")


def test_a_long_junk_value_does_not_push_the_explanation_out_of_a_letter() -> None:
    """A dead letter keeps 256 characters of a detail: the junk is cut, the reason kept."""
    for junk, ends in (
        ("anmin/v1/s1/gw-1/dev/" + "x" * 1000 + "/reading/extra", "does not fit the anmin/v1 tree"),
        ("elsewhere/" + "y" * 1000, "is not under anmin/v1/"),
    ):
        with pytest.raises(WireError) as caught:
            topics.parse(junk)
        assert caught.value.detail.endswith(ends) and len(caught.value.detail) < 160
