"""Everything the history service reads from its environment."""

from ..shared.settings import JwtSettings, ServiceSettings


class HistorySettings(ServiceSettings, JwtSettings):
    port: int = 8100
    database_url: str = "postgresql://postgres@127.0.0.1:5432/parley"
    db_pool_max_size: int = 20
    # Seconds a query may run before the caller gets `store_unavailable`.
    db_command_timeout_seconds: float = 5.0
