"""Web Push: a family member's browser subscription is stored through the console; when an
incident about their relative opens, the hub sends an encrypted (RFC 8291), VAPID-signed
(RFC 8292) push to the push service, here a local HTTP receiver, which decrypts it with the
subscription's keys. Another family gets nothing of it; a subscription the push service says
is gone (410) is deleted."""

from __future__ import annotations

import base64
import json
import os
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import http_ece  # type: ignore[import-untyped]  # (pywebpush's own dependency)
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hub import push
from hub.store import Store
from tests.browser.conftest import PASSWORD, Hub, _wait, alert
from wire import Severity

pytestmark = pytest.mark.integration


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PushService:
    """A push service on loopback: records each POST; ``/gone/...`` answers 410."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                outer.received.append((self.path, headers, body))
                self.send_response(410 if self.path.startswith("/gone/") else 201)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def to(self, path: str) -> list[tuple[dict[str, str], bytes]]:
        return [(headers, body) for p, headers, body in self.received if p == path]


@pytest.fixture
def push_service() -> Iterator[PushService]:
    service = PushService()
    service.thread.start()
    try:
        yield service
    finally:
        service.server.shutdown()
        service.server.server_close()


class Browser:
    """What a browser keeps for one subscription: its ECDH key pair and auth secret."""

    def __init__(self, endpoint: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.auth = os.urandom(16)
        public = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self.subscription = {
            "endpoint": endpoint,
            "keys": {"p256dh": b64(public), "auth": b64(self.auth)},
        }

    def decrypt(self, body: bytes) -> dict[str, Any]:
        plain = http_ece.decrypt(body, private_key=self.key, auth_secret=self.auth)
        data: dict[str, Any] = json.loads(plain)
        return data


def subscribe(hub: Hub, username: str, browser: Browser) -> None:
    with httpx.Client(base_url=hub.url, headers={"Origin": hub.url}) as client:
        login = client.post("/console/login", data={"username": username, "password": PASSWORD})
        assert login.status_code == 303
        page = client.get("/console/family")
        assert f'data-key="{hub.vapid_public_key}"' in page.text  # the page offers push
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
        assert csrf
        refused = client.post("/console/push/subscriptions", json=browser.subscription)
        assert refused.status_code == 403  # no CSRF header
        response = client.post(
            "/console/push/subscriptions",
            json=browser.subscription,
            headers={"X-CSRF-Token": csrf.group(1)},
        )
        assert response.status_code == 201, response.text


def test_a_family_gets_a_push_when_their_relative_has_an_incident(
    hub: Hub, push_service: PushService
) -> None:
    li = Browser(f"{push_service.url}/push/li")
    wang = Browser(f"{push_service.url}/gone/wang")
    subscribe(hub, "li-daughter", li)
    subscribe(hub, "wang-son", wang)

    fall = alert("fall", "3", "301", severity=Severity.SEVERE)
    hub.publish_alert(fall)
    _wait(lambda: push_service.to("/push/li"), "the push to the Li family's phone")
    [(headers, body)] = push_service.to("/push/li")
    notice = li.decrypt(body)
    assert notice["kind"] == "fall" and (notice["building"], notice["unit"]) == ("3", "301")
    assert notice["title"] == "严重：跌倒" and notice["url"].startswith("/console/incidents/")
    assert headers["content-encoding"] == "aes128gcm" and headers["urgency"] == "high"
    # VAPID: a JWT for this push service, signed with the hub's key, and that key.
    token, key = re.fullmatch(r"vapid t=([^,]+), ?k=(\S+)", headers["authorization"]).groups()  # type: ignore[union-attr]
    assert key == hub.vapid_public_key
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64(key))
    claims = jwt.decode(token, public, algorithms=["ES256"], audience=push_service.url)
    assert claims["sub"] == "mailto:ops@anmin.test"
    assert push_service.to("/gone/wang") == []  # nothing of another family's relative

    # The Wang family's push service says the subscription is gone: the hub forgets it.
    sos = alert("sos", "4", "402", severity=Severity.EXTREME)
    hub.publish_alert(sos)
    _wait(lambda: push_service.to("/gone/wang"), "the push to the Wang family's old phone")
    store = Store(hub.database_url)
    try:
        wang_id = hub.ids["wang-son"]
        _wait(lambda: push.subscriptions_of(store, wang_id) == [], "the gone subscription to go")
        assert push.subscriptions_of(store, hub.ids["li-daughter"]) == [li.subscription["endpoint"]]
    finally:
        store.close()
    assert len(push_service.to("/push/li")) == 1  # the SOS is not the Li family's
