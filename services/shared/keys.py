"""Every Redis key and channel name Parley uses, built in one place.

Each function takes the key prefix (REDIS_PREFIX, e.g. `parley`). On a Redis Cluster the prefix
comes hash-tagged, `{parley}` (`cluster_prefix`, chosen by `redis_client.key_prefix`): the keys
built from it as it is share one slot, which the Lua scripts need (the routing script reads
route sets and node liveness keys together, presence's read node keys, counts and liveness, the
call scripts calls, busy markers, route sets and liveness). Channels and the keys no script
touches take the prefix without its braces (`_spread`), so they hash by their whole name and
spread over the shards: above all each node's channel, where the fan-out goes. On one Redis the
names are the same as they always were.
"""


def cluster_prefix(prefix: str) -> str:
    """The prefix on a Redis Cluster: every scripted key built from it carries the hash tag."""
    return "{" + prefix + "}"


def _spread(prefix: str) -> str:
    """The prefix without its hash tag, for names that need not share the scripts' slot."""
    return prefix[1:-1] if prefix.startswith("{") and prefix.endswith("}") else prefix


def sio_channel(prefix: str) -> str:
    """The Socket.IO pub/sub channel that gateways, history and presence share."""
    return f"{_spread(prefix)}:socketio"


def user_room(user_id: str) -> str:
    """The Socket.IO room holding every socket (tab, device, node) of one user."""
    return f"user:{user_id}"


def presence_room(user_id: str) -> str:
    """The room of sockets that asked, with `watchPresence`, to hear about this user."""
    return f"presence:{user_id}"


def node_alive_key(prefix: str, node_id: str) -> str:
    """A gateway node's one liveness record: the node refreshes it every HEARTBEAT_SECONDS with a
    TTL of NODE_TTL_SECONDS (routed_manager); once it lapses, routed emits skip the node and
    presence's sweeper forgets its sockets. Its value: the routing formats the node reads
    (route_format). The node id comes last: the routing script appends it to
    `node_alive_key(prefix, "")`."""
    return f"{prefix}:node-alive:{node_id}"


def node_sockets_key(prefix: str, node_id: str) -> str:
    """Hash of the node's sockets: sid -> user id."""
    return f"{prefix}:presence:node:{node_id}:sockets"


def known_nodes_key(prefix: str) -> str:
    """Set of the nodes that hold (or held) sockets, which the sweeper checks for liveness."""
    return f"{prefix}:presence:nodes"


def socket_counts_key(prefix: str) -> str:
    """Hash user id -> number of that user's sockets on live nodes; present while > 0."""
    return f"{prefix}:presence:sockets-per-user"


def node_channel(prefix: str, node_id: str) -> str:
    """The pub/sub channel only one gateway node listens on: emits for its users."""
    return f"{_spread(prefix)}:socketio:node:{node_id}"


def user_nodes_key(prefix: str, user_id: str) -> str:
    """Set: the gateway nodes holding this user's sockets."""
    return f"{prefix}:route:nodes-of:{user_id}"


def presence_watchers_key(prefix: str, user_id: str) -> str:
    """Set: the gateway nodes holding sockets that watch this user's presence (`presence_room`)."""
    return f"{prefix}:route:nodes-watching:{user_id}"


def room_nodes_key(prefix: str, room: str) -> str:
    """The route set of a routed room (`user_room` or `presence_room`): the nodes holding its sockets."""
    kind, _, user_id = room.partition(":")
    if kind == "user":
        return user_nodes_key(prefix, user_id)
    if kind == "presence":
        return presence_watchers_key(prefix, user_id)
    raise ValueError(f"not a routed room: {room!r}")


def visible_sockets_key(prefix: str, user_id: str) -> str:
    """Sorted set of the user's sockets whose page reported itself visible (issue 18): sid ->
    the time (Unix seconds) its entry lapses unless its node refreshes it (services/gateway/visibility.py)."""
    return f"{_spread(prefix)}:visible:{user_id}"


def push_stream_key(prefix: str) -> str:
    """The Redis Stream of notification jobs: history's relay appends, notifiers consume."""
    return f"{_spread(prefix)}:push:jobs"


def push_epoch_key(prefix: str) -> str:
    """The relay's token: gone after Redis lost its data, which tells the relay to append again."""
    return f"{_spread(prefix)}:push:epoch"


# The notifiers' consumer group on the job stream.
PUSH_CONSUMER_GROUP = "notifiers"


def call_key(prefix: str, call_id: str) -> str:
    """Hash of one call (issue 17): its parties, kind, state and each party's socket and node."""
    return f"{prefix}:call:{call_id}"


def call_busy_key(prefix: str, user_id: str) -> str:
    """The call a user is in (ringing or active), with the call's TTL: `busy` to other callers."""
    return f"{prefix}:call-busy:{user_id}"


def calls_due_key(prefix: str) -> str:
    """Sorted set of what every gateway's call sweeper watches: `<callId>|ring` scored by the ring
    deadline, `<callId>|caller` and `<callId>|callee` by when that party's lease lapses."""
    return f"{prefix}:calls:due"
