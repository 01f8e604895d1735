"""The web console: server-rendered pages for staff, the committee and families.

``install(app)`` adds the pages under ``/console``, their static files, the handlers that turn
"not logged in" into the login page, and, when a VAPID key is configured
(``ANMIN_HUB_VAPID_KEY``, see ``hub.push``), the Web Push sender. See docs/console.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, cast

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from bus.tasks import stop
from hub.push import Pusher, Vapid
from hub.web import broadcast_pages  # noqa: F401  (registers its routes on the router)
from hub.web.pages import (
    STATIC,
    PageError,
    describe,
    form_rejected,
    login_required,
    page_error,
    router,
)
from hub.web.session import PATH, FormRejected, LoginRequired


def install(app: FastAPI, *, env: Mapping[str, str] | None = None) -> None:
    app.include_router(router)
    app.mount(PATH + "/static", StaticFiles(directory=STATIC), name="console-static")
    app.add_exception_handler(LoginRequired, login_required)
    app.add_exception_handler(FormRejected, form_rejected)
    app.add_exception_handler(PageError, page_error)
    vapid = Vapid.from_env(env)  # a bad key stops the hub here, saying how to make one
    app.state.vapid = vapid
    if vapid is not None:
        _run_pusher(app, vapid)


def _run_pusher(app: FastAPI, vapid: Vapid) -> None:
    """Run the Web Push sender inside the hub's lifespan, after the store is open."""
    inner = cast("Any", app.router.lifespan_context)  # the hub's own lifespan (hub/app.py)

    @asynccontextmanager
    async def lifespan(app_: FastAPI) -> AsyncIterator[Any]:
        async with cast(AbstractAsyncContextManager[Any], inner(app_)) as state:
            pusher = Pusher(app_.state.store, vapid, clock=app_.state.clock, describe=describe)
            app_.state.pusher = pusher
            task = asyncio.create_task(pusher.run(), name="web push")
            try:
                yield state
            finally:
                await stop(task)

    app.router.lifespan_context = lifespan


__all__ = ["install", "router"]
