"""Channels: how a notice reaches a person. SMTP, a JSON webhook, and apprise (WeCom,
DingTalk, Feishu, Telegram, ntfy, SMS gateways... any apprise URL).

A channel's ``send`` either returns (the far side accepted the notice) or raises
``ChannelError`` with a reason short enough to store; retries and fallbacks are the caller's.
"""

from __future__ import annotations

import asyncio
import os
import smtplib
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Protocol

import httpx

from hub.directory import PersonRecord
from hub.errors import HubError
from hub.routing import ChannelConfig


class ChannelError(HubError):
    """The notice was not accepted; ``str()`` says why."""


@dataclass(frozen=True, slots=True)
class Notice:
    """What a person is told about an incident."""

    delivery_id: int
    incident_id: str
    notice: str  # tier:0, tier:1, ..., with ">fallback" when it is a fallback
    subject: str
    body: str
    incident: dict[str, Any]


class Channel(Protocol):
    name: str

    async def send(self, notice: Notice, person: PersonRecord) -> None: ...

    async def aclose(self) -> None: ...


class SmtpChannel:
    def __init__(self, config: ChannelConfig) -> None:
        self.name = config.name
        self.config = config

    async def send(self, notice: Notice, person: PersonRecord) -> None:
        if not person.email:
            raise ChannelError(f"{person.username} has no e-mail address")
        message = EmailMessage()
        message["From"] = self.config.sender
        message["To"] = person.email
        message["Subject"] = notice.subject
        message["X-Anmin-Delivery"] = str(notice.delivery_id)
        message["X-Anmin-Incident"] = notice.incident_id
        message.set_content(notice.body)
        await asyncio.to_thread(self._send, message)

    def _send(self, message: EmailMessage) -> None:
        config = self.config
        try:
            with smtplib.SMTP(config.host, config.port, timeout=config.timeout_s) as smtp:
                if config.starttls:
                    smtp.starttls()
                if config.username:
                    password = os.environ.get(config.password_env or "", "")
                    smtp.login(config.username, password)
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise ChannelError(f"smtp {config.host}:{config.port}: {exc}") from exc

    async def aclose(self) -> None:
        return None


class WebhookChannel:
    """POSTs the notice as JSON; any 2xx is accepted."""

    def __init__(self, config: ChannelConfig, client: httpx.AsyncClient | None = None) -> None:
        self.name = config.name
        self.config = config
        self._client = client or httpx.AsyncClient(timeout=config.timeout_s)

    async def send(self, notice: Notice, person: PersonRecord) -> None:
        payload = {
            "delivery_id": notice.delivery_id,
            "notice": notice.notice,
            "subject": notice.subject,
            "body": notice.body,
            "incident": notice.incident,
            "person": {
                "id": person.id,
                "username": person.username,
                "name": person.name,
                "role": person.role,
                "phone": person.phone,
                "email": person.email,
            },
        }
        try:
            response = await self._client.post(self.config.url, json=payload)
        except httpx.HTTPError as exc:
            raise ChannelError(f"webhook: {exc!r}") from exc
        if not response.is_success:
            raise ChannelError(f"webhook answered {response.status_code}")

    async def aclose(self) -> None:
        await self._client.aclose()


class AppriseChannel:
    """Any apprise URL; ``{email}``, ``{phone}`` and ``{username}`` are filled per person."""

    def __init__(self, config: ChannelConfig) -> None:
        self.name = config.name
        self.config = config

    async def send(self, notice: Notice, person: PersonRecord) -> None:
        import apprise  # a large import; only hubs that use it pay for it

        try:
            url = self.config.url.format(
                email=person.email or "", phone=person.phone or "", username=person.username
            )
        except (KeyError, IndexError) as exc:
            raise ChannelError(f"apprise url has an unknown placeholder: {exc}") from exc
        target = apprise.Apprise()
        if not target.add(url):
            raise ChannelError("apprise does not understand the channel's url")
        ok = await target.async_notify(body=notice.body, title=notice.subject)
        if not ok:
            raise ChannelError("apprise could not deliver the notice")

    async def aclose(self) -> None:
        return None


def make_channel(config: ChannelConfig) -> Channel:
    if config.type == "smtp":
        return SmtpChannel(config)
    if config.type == "webhook":
        return WebhookChannel(config)
    if config.type == "apprise":
        return AppriseChannel(config)
    raise ChannelError(f"unknown channel type {config.type!r}")
