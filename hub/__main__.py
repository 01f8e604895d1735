"""``python -m hub``: one hub process, configured by ANMIN_* environment variables
(see ``HubSettings.from_env``); stops on SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os

from hub.app import serve
from hub.settings import HubSettings


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("ANMIN_LOG_LEVEL", "WARNING").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(serve(HubSettings.from_env()))


if __name__ == "__main__":
    main()
