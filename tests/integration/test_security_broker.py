"""The generated broker security against a real Mosquitto: who may log in, publish and read.

Mosquitto does not tell a client that a publish was refused (MQTT 3.1.1 has no way to), it
drops it. So a refusal is proven with a sentinel: after the forbidden messages the same
connection publishes an allowed one; MQTT keeps one connection's messages in order, so once an
observer (a test-only user that may read everything) has the sentinel, anything the broker
had accepted before it would have arrived too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import msgspec
import pytest

from anmin.security import Credentials, Inventory, acl_file, issue, password_file
from anmin.security.credentials import HUB_USER, device_user, gateway_user
from anmin.security.pki import issue_client, issue_server, make_ca
from bus.broker import Mosquitto, Security, TlsListener
from bus.mqtt import Broker, Incoming, MqttLink, Tls
from edge import EdgeAgent, parse
from hub import HubSettings, create_app
from tests.conftest import wait_for
from tests.integration.edge_support import Recorder, running
from wire import Ack, AlertEvent, Codec, Phase, Reading, Severity, topics, uuid7
from wire.topics import Channel

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

SITE, OTHER_SITE = "s1", "s2"
GW, GW2, GW_OTHER = "gw-1", "gw-2", "gw-9"
GAS, GAS2, SPK = "gas-1", "gas-2", "spk-1"
OBSERVER, OBSERVER_SECRET = "test-observer", "observer-secret"


@dataclass
class Site:
    """The generated files and secrets, and helpers to log in as someone."""

    dir: Path
    credentials: Credentials
    mosquitto: Mosquitto | None = None

    def broker(self, username: str | None, password: str | None = None) -> Broker:
        assert self.mosquitto is not None
        base = self.mosquitto.broker
        if username is not None and password is None:
            password = self.credentials[username]
        return Broker(base.host, base.port, username, password, base.tls)

    def link(self, username: str, *filters: str) -> Recorder:
        recorder = Recorder(self.broker(username), *filters, client_id=f"test-{username}")
        return recorder

    def observer(self) -> Recorder:
        return Recorder(
            self.broker(OBSERVER, OBSERVER_SECRET), topics.everything_filter(), client_id="obs"
        )


def generate(root: Path) -> Site:
    """Two sites: s1 with gateways gw-1 (gas-1, gas-2, spk-1) and gw-2, s2 with gw-9."""
    principals = [
        *Inventory(SITE, {GW: (GAS, GAS2, SPK), GW2: ()}).principals(),
        *Inventory(OTHER_SITE, {GW_OTHER: ("gas-9",)}, hub=False).principals(),
    ]
    credentials = issue(principals)
    root.mkdir(parents=True, exist_ok=True)
    everything = topics.everything_filter()
    observer = Credentials({OBSERVER: OBSERVER_SECRET})
    (root / "passwd").write_text(password_file(credentials) + password_file(observer))
    (root / "acl").write_text(
        acl_file(principals) + f"\nuser {OBSERVER}\ntopic read {everything}\n"
    )
    return Site(root, credentials)


def security(site: Site, tls: TlsListener | None = None) -> Security:
    return Security(password_file=site.dir / "passwd", acl_file=site.dir / "acl", tls=tls)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    generated = generate(tmp_path / "security")
    broker = Mosquitto(data_dir=tmp_path / "mosquitto", security=security(generated))
    broker.start()
    generated.mosquitto = broker
    try:
        yield generated
    finally:
        broker.close()


def reading(device: str, seq: int, value: float = 1.0) -> bytes:
    return msgspec.json.encode(
        Reading(device=device, seq=seq, ts=datetime.now(UTC), values={"gas_lel": value})
    )


async def refused(site: Site, username: str, forbidden: list[str], sentinel: str) -> list[str]:
    """Publish to each forbidden topic, then to the allowed ``sentinel``; return the forbidden
    topics the observer received (none, if the ACL holds)."""
    observer = site.observer()
    sender = site.link(username)
    async with running(observer.link.run(), sender.link.run()):
        assert await observer.link.wait_connected(10) and await sender.link.wait_connected(10)
        for number, topic in enumerate(forbidden):
            await sender.link.publish(topic, reading(GAS, number), qos=1)
        await sender.link.publish(sentinel, reading(GAS, 99), qos=1)
        await wait_for(lambda: bool(observer.on(sentinel)), what="the allowed sentinel")
    return [m.topic for m in observer.messages if m.topic in forbidden]


async def connect_error(broker: Broker) -> aiomqtt.MqttError | None:
    """Try one plain connection; return how it failed (None: it was let in)."""
    tls_context = None if broker.tls is None else broker.tls.context()
    client = aiomqtt.Client(
        broker.host,
        broker.port,
        username=broker.username,
        password=broker.password,
        identifier="test-intruder",
        tls_context=tls_context,
        timeout=5,
    )
    try:
        async with client:
            return None
    except aiomqtt.MqttError as exc:
        return exc


# -- logins --------------------------------------------------------------------------------


async def test_the_generated_password_file_lets_every_principal_in(site: Site) -> None:
    for username in (HUB_USER, gateway_user(SITE, GW), device_user(SITE, GW, GAS)):
        assert await connect_error(site.broker(username)) is None, username


async def test_anonymous_and_wrong_passwords_are_refused(site: Site) -> None:
    assert await connect_error(site.broker(None)) is not None
    assert await connect_error(site.broker(device_user(SITE, GW, GAS), "guess")) is not None
    # One device's secret is not another's.
    assert (
        await connect_error(
            site.broker(device_user(SITE, GW, GAS2), site.credentials[device_user(SITE, GW, GAS)])
        )
        is not None
    )


# -- what each may publish ---------------------------------------------------------------


async def test_a_device_cannot_publish_as_another_device_or_as_its_gateway(site: Site) -> None:
    forbidden = [
        topics.reading(SITE, GW, GAS2),
        topics.status(SITE, GW, GAS2),
        topics.command(SITE, GW, GAS2),
        topics.command(SITE, GW, GAS),  # nor command itself (or its neighbours)
        topics.gateway_topic(Channel.ALERT, SITE, GW),
        topics.gateway_topic(Channel.HEARTBEAT, SITE, GW),
        topics.reading(SITE, GW2, GAS),  # the same device id under another gateway
        topics.broadcast(SITE),
    ]
    sentinel = topics.reading(SITE, GW, GAS)
    assert await refused(site, device_user(SITE, GW, GAS), forbidden, sentinel) == []


async def test_a_gateway_cannot_publish_for_another_site_or_gateway(site: Site) -> None:
    forbidden = [
        topics.gateway_topic(Channel.ALERT, OTHER_SITE, GW_OTHER),
        topics.gateway_topic(Channel.ALERT, OTHER_SITE, GW),  # its own id, another site
        topics.gateway_topic(Channel.ALERT, SITE, GW2),  # its neighbour in its own site
        topics.gateway_topic(Channel.RECEIPT, SITE, GW2),
        topics.gateway_topic(Channel.ACK, SITE, GW),  # acks come from the hub only
        topics.broadcast(SITE),  # so do broadcasts
        topics.hub_online(),
        topics.reading(SITE, GW, GAS),  # and readings from the devices
        topics.command(SITE, GW2, "gas-x"),  # another gateway's devices
    ]
    sentinel = topics.gateway_topic(Channel.HEARTBEAT, SITE, GW)
    assert await refused(site, gateway_user(SITE, GW), forbidden, sentinel) == []


async def test_the_hub_cannot_forge_device_or_gateway_messages(site: Site) -> None:
    forbidden = [
        topics.reading(SITE, GW, GAS),
        topics.command(SITE, GW, GAS),
        topics.gateway_topic(Channel.ALERT, SITE, GW),
    ]
    sentinel = topics.gateway_topic(Channel.ACK, SITE, GW)
    assert await refused(site, HUB_USER, forbidden, sentinel) == []


# -- what each may read ------------------------------------------------------------------


async def test_a_device_reads_only_its_own_commands(site: Site) -> None:
    device = site.link(device_user(SITE, GW, GAS), topics.device_commands_filter(SITE, GW, GAS2))
    device.link.subscriptions.append((topics.device_commands_filter(SITE, GW, GAS), 1))
    gateway = site.link(gateway_user(SITE, GW))
    mine, theirs = topics.command(SITE, GW, GAS), topics.command(SITE, GW, GAS2)
    async with running(device.link.run(), gateway.link.run()):
        assert await device.link.wait_connected(10) and await gateway.link.wait_connected(10)
        await gateway.link.publish(theirs, b"{}", qos=1)
        await gateway.link.publish(mine, b"{}", qos=1)
        await wait_for(lambda: bool(device.on(mine)), what="the device's own command")
    assert device.on(theirs) == []


async def test_a_gateway_reads_only_its_own_acks_and_its_sites_broadcasts(site: Site) -> None:
    everything = topics.everything_filter()
    gateway = site.link(gateway_user(SITE, GW), everything)
    hub = site.link(HUB_USER)
    mine = topics.gateway_topic(Channel.ACK, SITE, GW)
    others = [
        topics.gateway_topic(Channel.ACK, SITE, GW2),
        topics.gateway_topic(Channel.ACK, OTHER_SITE, GW_OTHER),
        topics.broadcast(OTHER_SITE),
    ]
    async with running(gateway.link.run(), hub.link.run()):
        assert await gateway.link.wait_connected(10) and await hub.link.wait_connected(10)
        for topic in [*others, topics.broadcast(SITE), mine]:
            await hub.link.publish(topic, b"{}", qos=1)
        await wait_for(lambda: bool(gateway.on(mine)), what="the gateway's own ack")
    assert gateway.on(topics.broadcast(SITE)), "its own site's broadcast arrives"
    assert [m.topic for m in gateway.messages if m.topic in others] == []


async def test_hub_workers_get_every_gateways_alerts_through_the_shared_subscription(
    site: Site,
) -> None:
    hub = site.link(HUB_USER, topics.hub_filter(Channel.ALERT, shared=True))
    senders = [site.link(gateway_user(SITE, GW)), site.link(gateway_user(OTHER_SITE, GW_OTHER))]
    alerts = [
        topics.gateway_topic(Channel.ALERT, SITE, GW),
        topics.gateway_topic(Channel.ALERT, OTHER_SITE, GW_OTHER),
    ]
    async with running(hub.link.run(), *(s.link.run() for s in senders)):
        assert await hub.link.wait_connected(10)
        for sender, topic in zip(senders, alerts, strict=True):
            assert await sender.link.wait_connected(10)
            await sender.link.publish(topic, b"{}", qos=1)
        await wait_for(lambda: all(hub.on(t) for t in alerts), what="both sites' alerts")


async def test_an_edge_agent_works_with_only_its_gateways_rights(
    site: Site, tmp_path: Path
) -> None:
    """The ACL allows everything the agent really does: read its devices, command a siren,
    send the alert, get the ack, and announce itself with a heartbeat."""
    username = gateway_user(SITE, GW)
    broker = site.broker(username)
    config = parse(
        f"""\
site: {SITE}
gateway: {GW}
building: b1
data_dir: {tmp_path / "edge"}
broker: {{host: {broker.host}, port: {broker.port}, username: "{username}",
          password: "{broker.password}"}}
devices:
  - {{id: {GAS}, kind: gas, unit: "101"}}
rules:
  gas: {{low: 10, high: 25, hold_low_s: 0, hold_high_s: 0, clear_below: 5, hold_clear_s: 5}}
heartbeat_s: 1
"""
    )
    agent = EdgeAgent(config)
    device = site.link(device_user(SITE, GW, GAS), topics.device_commands_filter(SITE, GW, GAS))
    alert = topics.gateway_topic(Channel.ALERT, SITE, GW)
    acked: list[Incoming] = []
    hub_link: MqttLink | None = None

    async def on_hub(message: Incoming) -> None:
        event = msgspec.json.decode(message.payload)
        assert hub_link is not None
        ack = topics.gateway_topic(Channel.ACK, SITE, GW)
        payload = Codec().encode(Ack(ids=[event["id"]], ts=datetime.now(UTC)))
        await hub_link.publish(ack, payload, qos=1)
        acked.append(message)

    hub_link = MqttLink(
        site.broker(HUB_USER),
        client_id="test-hub",
        subscriptions=[(topics.hub_filter(Channel.ALERT, shared=True), 1)],
        handler=on_hub,
    )
    observer = site.observer()
    async with running(agent.run(), device.link.run(), hub_link.run(), observer.link.run()):
        for link in (agent.local, device.link, hub_link, observer.link):
            assert await link.wait_connected(10)
        await device.link.publish(topics.reading(SITE, GW, GAS), reading(GAS, 1, 40.0), qos=1)
        await wait_for(lambda: bool(device.messages), what="the siren command at the device")
        await wait_for(lambda: bool(acked), what="the alert at the hub")
        await wait_for(lambda: agent.outbox.depth() == 0, what="the hub's ack at the gateway")
        heartbeat = topics.gateway_topic(Channel.HEARTBEAT, SITE, GW)
        await wait_for(lambda: bool(observer.on(heartbeat)), what="the gateway's heartbeat")
    assert acked[0].topic == alert
    agent.close()


# -- TLS ---------------------------------------------------------------------------------


@dataclass
class TlsSite:
    site: Site
    ca: Path


def tls_site(tmp_path: Path, *, hosts: tuple[str, ...], require_certificate: bool) -> TlsSite:
    generated = generate(tmp_path / "security")
    pki = tmp_path / "pki"
    ca = make_ca(SITE, pki)
    server = issue_server(pki, pki, hosts)
    listener = TlsListener(
        cert_file=server.cert,
        key_file=server.key,
        ca_file=ca.cert,
        require_certificate=require_certificate,
    )
    generated.mosquitto = Mosquitto(
        data_dir=tmp_path / "mosquitto", security=security(generated, listener)
    )
    generated.mosquitto.start()
    return TlsSite(generated, ca.cert)


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[TlsSite]:
    made = tls_site(tmp_path, hosts=("localhost", "127.0.0.1"), require_certificate=False)
    try:
        yield made
    finally:
        assert made.site.mosquitto is not None
        made.site.mosquitto.close()


def arrived(recorder: Recorder, topic: str) -> Callable[[], bool]:
    return lambda: bool(recorder.on(topic))


async def test_mqtt_link_works_over_tls_with_the_site_ca(tls: TlsSite) -> None:
    site = tls.site
    assert site.mosquitto is not None and site.mosquitto.broker.tls is not None
    username = device_user(SITE, GW, GAS)
    topic = topics.reading(SITE, GW, GAS)
    # Through the host name too: the server certificate names both.
    for host in ("127.0.0.1", "localhost"):
        broker = site.mosquitto.tls_broker(
            username=username, password=site.credentials[username], host=host
        )
        device = Recorder(broker, client_id=f"test-tls-{host}")
        observer = site.observer()
        async with running(device.link.run(), observer.link.run()):
            assert await device.link.wait_connected(10) and await observer.link.wait_connected(10)
            await device.link.publish(topic, reading(GAS, 1), qos=1)
            await wait_for(arrived(observer, topic), what="a reading sent over TLS")


async def test_plaintext_is_refused_where_tls_is_required(tls: TlsSite) -> None:
    site = tls.site
    broker = site.broker(device_user(SITE, GW, GAS))
    assert broker.tls is not None, "the broker's only listener is the TLS one"
    plain = Broker(broker.host, broker.port, broker.username, broker.password)
    assert await connect_error(plain) is not None
    # TLS without trusting the site's CA (the system store only) is refused as well.
    untrusted = Broker(broker.host, broker.port, broker.username, broker.password, Tls())
    assert await connect_error(untrusted) is not None
    # And TLS does not replace the password: anonymous is still refused.
    assert await connect_error(site.broker(None)) is not None


async def test_a_certificate_for_another_host_is_refused(tmp_path: Path) -> None:
    made = tls_site(tmp_path, hosts=("broker.example.org",), require_certificate=False)
    try:
        site = made.site
        assert await connect_error(site.broker(HUB_USER)) is not None
    finally:
        assert made.site.mosquitto is not None
        made.site.mosquitto.close()


async def test_a_broker_can_require_client_certificates(tmp_path: Path) -> None:
    made = tls_site(tmp_path, hosts=("127.0.0.1",), require_certificate=True)
    try:
        site = made.site
        username = gateway_user(SITE, GW)
        without = site.broker(username)
        assert await connect_error(without) is not None
        client = issue_client(tmp_path / "pki", tmp_path / "pki", username)
        with_cert = Broker(
            without.host,
            without.port,
            username,
            without.password,
            Tls(str(made.ca), str(client.cert), str(client.key)),
        )
        assert await connect_error(with_cert) is None
    finally:
        assert made.site.mosquitto is not None
        made.site.mosquitto.close()


async def test_the_hub_connects_as_anmin_hub_over_tls_from_its_settings(tmp_path: Path) -> None:
    """HubSettings.from_env: the site CA, a client certificate, the anmin-hub user and its
    password file; the hub then takes a gateway's alert through the secured broker."""
    made = tls_site(tmp_path, hosts=("127.0.0.1",), require_certificate=True)
    try:
        site = made.site
        assert site.mosquitto is not None and site.mosquitto.tls_port is not None
        pki = tmp_path / "pki"
        hub_cert = issue_client(pki, pki, HUB_USER)
        password_file = tmp_path / "hub-broker-password"
        password_file.write_text(site.credentials[HUB_USER] + "\n")
        settings = HubSettings.from_env(
            {
                "ANMIN_BROKER_HOST": "127.0.0.1",
                "ANMIN_BROKER_PORT": str(site.mosquitto.tls_port),
                "ANMIN_BROKER_CA_FILE": str(made.ca),
                "ANMIN_BROKER_CERT_FILE": str(hub_cert.cert),
                "ANMIN_BROKER_KEY_FILE": str(hub_cert.key),
                "ANMIN_BROKER_USERNAME": HUB_USER,
                "ANMIN_BROKER_PASSWORD_FILE": str(password_file),
                "ANMIN_HUB_DB": f"sqlite:///{tmp_path / 'hub.sqlite3'}",
            }
        )
        assert settings.broker.tls is not None and settings.broker.username == HUB_USER
        assert settings.broker.password == site.credentials[HUB_USER]
        app = create_app(settings)
        gateway_user_name = gateway_user(SITE, GW)
        client = issue_client(pki, pki, gateway_user_name)
        gateway = Recorder(
            Broker(
                "127.0.0.1",
                site.mosquitto.tls_port,
                gateway_user_name,
                site.credentials[gateway_user_name],
                Tls(str(made.ca), str(client.cert), str(client.key)),
            ),
            client_id="test-tls-gateway",
        )
        async with app.router.lifespan_context(app), running(gateway.link.run()):
            await wait_for(app.state.link.connected.is_set, what="the hub's TLS connection")
            assert await gateway.link.wait_connected(10)
            alert = AlertEvent(
                id=uuid7(),
                key="gas:301",
                phase=Phase.RAISED,
                severity=Severity.SEVERE,
                kind="gas",
                rule="gas",
                site=SITE,
                gateway=GW,
                device=GAS,
                building="3",
                unit="301",
                ts=datetime.now(UTC),
                evidence={"gas_lel": 30.0},
                message="gas",
            )
            topic = topics.gateway_topic(Channel.ALERT, SITE, GW)
            await gateway.link.publish(topic, Codec().encode(alert), qos=1)
            store = app.state.store
            await wait_for(
                lambda: [a.id for a in store.alerts()] == [alert.id],
                timeout=20,
                what="the alert at the hub, over TLS",
            )
    finally:
        assert made.site.mosquitto is not None
        made.site.mosquitto.close()


def test_the_hub_broker_settings_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"ANMIN_BROKER_CA_FILE.*no such file"):
        HubSettings.from_env({"ANMIN_BROKER_CA_FILE": str(tmp_path / "missing.pem")})
    with pytest.raises(ValueError, match=r"ANMIN_BROKER_PASSWORD_FILE.*cannot read"):
        HubSettings.from_env({"ANMIN_BROKER_PASSWORD_FILE": str(tmp_path / "missing")})
    with pytest.raises(ValueError, match="without ANMIN_BROKER_CERT_FILE"):
        HubSettings.from_env({"ANMIN_BROKER_KEY_FILE": str(tmp_path / "key.pem")})
    plain = HubSettings.from_env({})
    assert plain.broker.tls is None and plain.broker.port == 1883
