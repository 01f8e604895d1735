"""The hub: takes the gateways' alerts, stores them, acks them, and tells people.

Imports ``wire``, ``bus``, FastAPI, SQLAlchemy and uvicorn; never ``edge``, ``rules``,
``firmware_sim`` or ``anmin``.
"""

from hub.app import create_app, serve
from hub.clock import Clock, utc_now
from hub.errors import HubError, ServeError, StoreError
from hub.intake import Intake
from hub.policy import broadcast_for
from hub.settings import HubSettings
from hub.store import Store

__all__ = [
    "Clock",
    "HubError",
    "HubSettings",
    "Intake",
    "ServeError",
    "Store",
    "StoreError",
    "broadcast_for",
    "create_app",
    "serve",
    "utc_now",
]
