"""Everything a gateway node reads from its environment."""

from typing import Literal

from pydantic import Field

from ..shared.limits import MAX_REPLAY_EVENTS
from ..shared.settings import DEV_INTERNAL_TOKENS, JwtSettings, NodeLivenessSettings, ServiceSettings


class GatewaySettings(ServiceSettings, JwtSettings, NodeLivenessSettings):
    port: int = 8000
    internal_port: int = 8090
    # History's and presence's internal listeners, for the gateway's own calls.
    history_url: str = "http://127.0.0.1:8101"
    presence_url: str = "http://127.0.0.1:8201"
    # History's public listener: the public REST API is forwarded there with the user's token.
    history_api_url: str = "http://127.0.0.1:8100"
    # Media's public listener: `/api/attachments*` is streamed there (services/gateway/media_forward.py).
    media_api_url: str = "http://127.0.0.1:8300"
    # The largest file one upload may carry; media enforces it too (the same MAX_ATTACHMENT_BYTES).
    max_attachment_bytes: int = 25 * 1024 * 1024
    # The gateway's own token for history's and presence's internal APIs.
    internal_token: str = DEV_INTERNAL_TOKENS["gateway"]
    # Comma-separated origins allowed to call with credentials; "*" allows any (development only).
    cors_origins: str = "http://localhost:8000,http://localhost:8001,http://localhost:5173"
    # Where `npm ci` put the web client's packages (socket.io-client); empty: next to the code.
    webclient_modules: str = ""
    # Seconds a node keeps a group's member list for typing (messages never use it: history
    # answers each with its recipients). A removed member may see typing for this long at most.
    group_members_cache_seconds: float = 2.0
    # A `typing` with no `stopTyping` is cleared by the server after this many seconds.
    typing_timeout_seconds: float = 5.0
    # After SIGTERM, seconds /readyz answers 503 before sockets are closed, so a load balancer
    # that polls readiness (haproxy) stops sending new clients here first. Kubernetes removes
    # the pod from its endpoints during the preStop pause instead.
    drain_delay_seconds: float = 0.0
    internal_timeout_seconds: float = 5.0
    # While sends keep coming, a node calls history to store them at most once per this many
    # seconds, and each call carries all of them (group commit); a send that finds no call under
    # way leaves at once. Fewer, fuller calls cost less CPU everywhere (bench/RESULTS.md); 0
    # spends that CPU to save a few milliseconds of latency while busy.
    store_call_interval_seconds: float = 0.015
    # engine.io pings every PING_INTERVAL_SECONDS; a client that has not answered within
    # PING_TIMEOUT_SECONDS more is disconnected (its sockets go offline).
    ping_interval_seconds: float = 25.0
    ping_timeout_seconds: float = 20.0
    # Largest Socket.IO/engine.io packet accepted, in bytes.
    max_payload_bytes: int = 64 * 1024
    # A websocket client with more than this many bytes of frames it has not read is disconnected
    # (it reconnects and syncs) instead of the node holding an ever-growing backlog for it.
    slow_client_buffer_bytes: int = 1024 * 1024
    # Per-user token buckets: sustained rate per second and burst size.
    send_rate_per_second: float = 10.0
    send_burst: int = 30
    typing_rate_per_second: float = 5.0
    typing_burst: int = 10
    rest_rate_per_second: float = 20.0
    rest_burst: int = 60
    # --- the socket handshake and presence privacy (issue 13) ---
    # An engine.io session that has not completed its Socket.IO CONNECT within this many seconds
    # is closed: a connection that never signs in holds a session and a socket for nothing. A real
    # client sends CONNECT right after the handshake; 10 s leaves a slow mobile link room.
    connect_timeout_seconds: float = 10.0
    # Sockets one user may hold ON THIS NODE (per node, not across the cluster: counting cluster-
    # wide would put a presence call in every connect). Beyond it the connect is refused with
    # "Too many connections". 20 is many tabs and devices; a client looping on connect is stopped.
    max_sockets_per_user: int = 20
    # Per-user token buckets (sustained rate per second, burst size), per node like the others.
    # `watchPresence` (and GET /api/presence) costs a history call (partners) and a presence query:
    # a client sends it once per page or contact-list change, so 1/s with a burst of 10 is ample.
    presence_rate_per_second: float = 1.0
    presence_burst: int = 10
    # `markRead` costs a history write. The web client sends one per conversation opened and per
    # message received while it is open; a partner sends at most SEND_RATE_PER_SECOND, so the same
    # 10/s with a burst of 30 never limits an honest reader.
    read_rate_per_second: float = 10.0
    read_burst: int = 30
    # `react` / `unreact` (issue 16): each is a history write and an emit to the conversation. A
    # person clicks a few reactions in a row, then reads: a burst of 20 (a whole reaction bar)
    # and 5/s sustained; a script flooding a group with reactions is held to that.
    reaction_rate_per_second: float = 5.0
    reaction_burst: int = 20
    # Who `watchPresence` and GET /api/presence reveal: "partners" (the default) only users who
    # share a conversation with the asker (and the asker); "everyone" any user (for apps whose
    # users are public anyway). Non-partners are reported offline and never subscribed.
    presence_visibility: Literal["partners", "everyone"] = "partners"
    # --- connection-state recovery (issue 20, services/gateway/recovery.py) ---
    # A reconnecting socket.io-client (4.6+) is replayed what it missed if its pid (given at its
    # last normal connection) is at most this many seconds old, and if it missed at most
    # RECOVERY_MAX_EVENTS changes; otherwise it gets a normal connection (and should sync).
    # 0 events turns recovery off. The bound keeps a reconnect from costing a long replay.
    recovery_window_seconds: float = Field(default=86400.0, ge=0)
    recovery_max_events: int = Field(default=1000, ge=0, le=MAX_REPLAY_EVENTS)

    # --- voice and video calls (issue 17, services/gateway/calls.py) ---
    # A call nobody answers ends as `missed` after this many seconds.
    call_ring_seconds: float = Field(default=30.0, gt=0, le=300)
    # A party whose socket left (or whose node died) and did not come back for this long is `lost`.
    call_lost_after_seconds: float = Field(default=10.0, gt=0, le=120)
    # Every gateway looks for missed rings and lost parties this often (any number may, at once).
    call_sweep_seconds: float = Field(default=1.0, gt=0, le=10)
    # `callUser`, `answerCall`, `rejectCall` and `endCall` share a bucket: a person places a few
    # calls a minute; a script ringing everyone is held to one a second.
    call_rate_per_second: float = 1.0
    call_burst: int = 10
    # `iceCandidate`: a call trickles 5 to 40 candidates in its first seconds (more with TURN,
    # and again on an ICE restart); each is one Redis read and one publish to one node.
    ice_rate_per_second: float = 20.0
    ice_burst: int = 100
    # STUN and TURN servers the clients are given (`GET /api/calls/ice-servers`), comma-separated
    # URLs. Without TURN_URLS, no TURN entry: peers on one network still meet through host
    # candidates (`make run`). TURN_SECRET is coturn's `static-auth-secret` (its TURN REST API,
    # `use-auth-secret`): the credentials are HMAC-SHA1(TURN_SECRET, "<expiry>:<userId>").
    stun_urls: str = ""
    turn_urls: str = ""
    turn_secret: str = ""
    turn_credential_seconds: int = Field(default=3600, ge=60, le=86400)

    def secret_settings(self) -> dict[str, str]:
        secrets = {"JWT_SECRET": self.jwt_secret, "INTERNAL_TOKEN": self.internal_token}
        if self.turn_url_list:  # TURN is optional; once configured, its secret must be strong
            secrets["TURN_SECRET"] = self.turn_secret
        return secrets

    @property
    def stun_url_list(self) -> list[str]:
        return [url.strip() for url in self.stun_urls.split(",") if url.strip()]

    @property
    def turn_url_list(self) -> list[str]:
        return [url.strip() for url in self.turn_urls.split(",") if url.strip()]

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]
