"""`python -m services.history` serves; `python -m services.history migrate` migrates and exits."""

import asyncio
import sys

from ..shared.entrypoint import serve
from ..shared.logs import configure_logging
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
    if sys.argv[1:] == ["migrate"]:  # a deployment job: it needs the database, no secrets
        settings = HistorySettings()
        configure_logging("history", settings.node_id, settings.log_level)
        asyncio.run(migrate(settings))
        return
    serve("history", HistorySettings, create_app)


if __name__ == "__main__":
    main()
