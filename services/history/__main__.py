"""`python -m services.history` serves; `python -m services.history migrate` migrates and exits."""

import asyncio
import sys

from ..shared.logs import configure_logging
from ..shared.web import run_service
from .app import create_app, create_pool
from .migrations import apply_migrations
from .settings import HistorySettings


async def migrate(settings: HistorySettings) -> None:
    pool = await create_pool(settings)
    try:
        async with pool.acquire() as connection:
            await apply_migrations(connection)
    finally:
        await pool.close()


def main() -> None:
    settings = HistorySettings()
    configure_logging("history", settings.node_id, settings.log_level)
    if sys.argv[1:] == ["migrate"]:
        asyncio.run(migrate(settings))
        return
    run_service(create_app(settings), settings.host, settings.port, settings.shutdown_grace_seconds)


if __name__ == "__main__":
    main()
