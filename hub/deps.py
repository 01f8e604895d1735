"""Dependency aliases for the routes: what a request may use, taken from ``app.state``."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from bus import MqttLink
from hub.intake import Intake
from hub.store import Store


def get_store(request: Request) -> Store:
    return cast(Store, request.app.state.store)


def get_intake(request: Request) -> Intake:
    return cast(Intake, request.app.state.intake)


def get_link(request: Request) -> MqttLink:
    return cast(MqttLink, request.app.state.link)


StoreDep = Annotated[Store, Depends(get_store)]
IntakeDep = Annotated[Intake, Depends(get_intake)]
LinkDep = Annotated[MqttLink, Depends(get_link)]
