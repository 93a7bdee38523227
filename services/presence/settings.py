"""Everything the presence service reads from its environment."""

from ..shared.settings import ServiceSettings


class PresenceSettings(ServiceSettings):
    port: int = 8200
    history_url: str = "http://127.0.0.1:8100"
    # Gateways heartbeat every `heartbeat_seconds`; a node silent for `node_ttl_seconds` is dead.
    heartbeat_seconds: float = 5.0
    node_ttl_seconds: float = 15.0
    internal_timeout_seconds: float = 5.0
