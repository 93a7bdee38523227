"""Everything the history service reads from its environment."""

from ..shared.errors import ParleyError
from ..shared.push import p256_point
from ..shared.settings import DEV_INTERNAL_TOKENS, JwtSettings, PostgresSettings, PushSettings, ServiceSettings


class HistorySettings(ServiceSettings, PostgresSettings, JwtSettings, PushSettings):
    port: int = 8100
    internal_port: int = 8101
    # Members a group may hold, its creator included. Each group message costs one row update
    # whatever the size, but its delivery fans out to every member, and the gateway keeps a
    # group's member list per node for typing: 1,000 is issue 15's size, measured in bench/.
    max_group_members: int = 1000
    # Seconds after sending during which the sender may edit a message (issue 16: 15 minutes, as
    # chat apps allow: long enough to fix a typo, short enough that a conversation's past holds).
    edit_window_seconds: float = 900.0
    # The notification relay (issue 18, push_relay.py): the job stream keeps at most this many
    # jobs (older ones are trimmed even if no notifier took them: the backlog a notifier outage
    # may build); it looks for new messages this often when no send woke it; at most this many
    # messages per pass.
    push_stream_max_jobs: int = 1_000_000
    push_relay_poll_seconds: float = 1.0
    push_relay_batch: int = 1000
    # A streaming replica for the read routes (read_replica.py); empty: the primary serves them.
    # A read waits at most this long for the replica to replay what committed before it began,
    # then goes to the primary. Run the replica with hot_standby_feedback=on, so that its
    # queries are not cancelled by the cleanup it replays.
    database_read_url: str = ""
    read_replica_max_wait_seconds: float = 0.05
    # Receipts, reactions and group changes stay in the change feed this long, then are pruned
    # (feed_events.py): keep it well past the gateways' RECOVERY_WINDOW_SECONDS (one day), or
    # recoveries within the window turn into normal connections. Looked at every interval.
    feed_events_retention_seconds: float = 30 * 86400.0
    feed_prune_interval_seconds: float = 3600.0
    # Messages are partitioned by ranges of this many ids (partitions.py; migration 0013): about
    # as many messages (ids are also drawn by deletions, edits and feed events), tens of GB a
    # partition. History keeps one partition's worth of ids ahead of the sequence, checked this
    # often (and at start).
    message_partition_ids: int = 100_000_000
    message_partition_check_seconds: float = 60.0
    # The tokens of the services admitted to the internal API (each to its own routes): the
    # gateways, presence, and the social app's profile sync / operators ("admin").
    gateway_internal_token: str = DEV_INTERNAL_TOKENS["gateway"]
    presence_internal_token: str = DEV_INTERNAL_TOKENS["presence"]
    admin_internal_token: str = DEV_INTERNAL_TOKENS["admin"]

    def caller_tokens(self) -> dict[str, str]:
        return {
            "gateway": self.gateway_internal_token,
            "presence": self.presence_internal_token,
            "admin": self.admin_internal_token,
        }

    def invalid_settings(self) -> list[str]:
        if self.vapid_public_key:
            try:
                p256_point(self.vapid_public_key, "VAPID_PUBLIC_KEY")
            except ParleyError:
                return ["VAPID_PUBLIC_KEY is not base64url of an uncompressed P-256 public key"]
        return []

    def secret_settings(self) -> dict[str, str]:
        return {
            "JWT_SECRET": self.jwt_secret,
            "GATEWAY_INTERNAL_TOKEN": self.gateway_internal_token,
            "PRESENCE_INTERNAL_TOKEN": self.presence_internal_token,
            "ADMIN_INTERNAL_TOKEN": self.admin_internal_token,
        }
