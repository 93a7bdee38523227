"""A gateway node's Prometheus metrics (low-cardinality labels only: never a user id or sid)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.sockets = Gauge(
            "parley_gateway_sockets_connected", "Sockets connected to this node now.", registry=registry
        )
        self.presence_in_sync = Gauge(
            "parley_gateway_presence_in_sync",
            "1 while presence holds this node's sockets as they are; 0 from start until the first "
            "resync, and after a failed call until the resync that follows it.",
            registry=registry,
        )
        self.messages_sent = Counter(
            "parley_gateway_messages_sent_total",
            "Messages stored and acknowledged through this node (retries of a stored message excluded).",
            registry=registry,
        )
        self.send_latency = Histogram(
            "parley_gateway_send_duration_seconds",
            "From a sendMessage event to its acknowledgement (stored and emitted).",
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.store_batch_size = Histogram(
            "parley_gateway_store_batch_messages",
            "Messages stored per call to history (sends that arrive together share one call and commit).",
            registry=registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )
        self.events = Counter(
            "parley_gateway_socket_events_total",
            "Socket events handled, by event and outcome (ok, or the error code).",
            ["event", "outcome"],
            registry=registry,
        )
        self._event_outcomes: dict[tuple[str, str], Counter] = {}
        self.pubsub_received = Counter(
            "parley_gateway_pubsub_messages_received_total",
            "Pub/sub messages this node received and decoded (its own users' emits, and broadcasts).",
            registry=registry,
        )
        self.pubsub_unreadable = Counter(
            "parley_gateway_pubsub_messages_unreadable_total",
            "Pub/sub payloads dropped because this node cannot read them, by reason: malformed (not JSON, "
            "or neither an array nor an object), or format (one this release does not read: "
            "services/shared/route_format.py).",
            ["reason"],
            registry=registry,
        )
        self.slow_clients = Counter(
            "parley_gateway_slow_clients_disconnected_total",
            "Websockets cut off because their client stopped reading (too many bytes waiting to be sent).",
            registry=registry,
        )
        self.connects_refused = Counter(
            "parley_gateway_connects_refused_total",
            "Handshakes refused (bad or missing token, too many sockets for the user, or draining).",
            registry=registry,
        )

        self.sessions_recovered = Counter(
            "parley_gateway_sessions_recovered_total",
            "Socket.IO reconnections whose missed events were replayed (connection-state recovery).",
            registry=registry,
        )
        self.events_replayed = Counter(
            "parley_gateway_events_replayed_total",
            "Events replayed to recovering sockets, from history's change feed.",
            registry=registry,
        )
        self.recoveries_refused = Counter(
            "parley_gateway_recoveries_refused_total",
            "Recoveries asked for and answered with a normal connection, by reason: pid (forged, another "
            "user's or expired), offset (not a feed position), too_many (past RECOVERY_MAX_EVENTS), "
            "unavailable (history could not replay).",
            ["reason"],
            registry=registry,
        )
        self.catch_ups = Counter(
            "parley_gateway_catch_ups_total",
            "Catch-ups of this node's sockets after a pub/sub outage (subscription lost, or a publish given up).",
            registry=registry,
        )
        self.events_caught_up = Counter(
            "parley_gateway_events_caught_up_total",
            "Feed events written to connected sockets by catch-ups, from history's change feed.",
            registry=registry,
        )
        self.calls_ended = Counter(
            "parley_gateway_calls_ended_total",
            "Calls this node ended and told both parties of (issue 17), by reason: ended, rejected, "
            "missed, busy, lost, offline. Each call is counted once, by one node, cluster-wide.",
            ["reason"],
            registry=registry,
        )

    def event_outcome(self, event: str, outcome: str) -> Counter:
        """`events` for one event and outcome (looked up once: `labels` costs a lock and checks)."""
        child = self._event_outcomes.get((event, outcome))
        if child is None:
            child = self._event_outcomes[event, outcome] = self.events.labels(event, outcome)
        return child
