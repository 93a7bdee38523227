"""The gateway's client for history's public listener, where the public REST API is forwarded."""

import aiohttp


class HistoryApi:
    """A keep-alive client for history's PUBLIC listener, which checks the user's token itself."""

    def __init__(self, base_url: str, timeout_seconds: float):
        self.base_url = base_url.rstrip("/")
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_seconds))

    async def close(self) -> None:
        await self.session.close()
