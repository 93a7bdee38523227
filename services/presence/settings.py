"""Everything the presence service reads from its environment."""

from ..shared.settings import DEV_INTERNAL_TOKENS, HeartbeatSettings, ServiceSettings


class PresenceSettings(ServiceSettings, HeartbeatSettings):
    port: int = 8200
    internal_port: int = 8201
    # History's internal listener (conversation partners, for announcements).
    history_url: str = "http://127.0.0.1:8101"
    # Presence's own token for history's internal API.
    internal_token: str = DEV_INTERNAL_TOKENS["presence"]
    # The gateways' token: the only callers admitted to presence's internal API.
    gateway_internal_token: str = DEV_INTERNAL_TOKENS["gateway"]
    internal_timeout_seconds: float = 5.0

    def caller_tokens(self) -> dict[str, str]:
        return {"gateway": self.gateway_internal_token}

    def secret_settings(self) -> dict[str, str]:
        return {"INTERNAL_TOKEN": self.internal_token, "GATEWAY_INTERNAL_TOKEN": self.gateway_internal_token}
