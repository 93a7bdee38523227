"""The routing format: what gateways, history and presence write to each other through Redis, versioned
so that gateways of two releases can run side by side during a rolling upgrade.

Format 1 (the release of 9f02a0c and this one):
- a node's channel (`keys.node_channel`) carries a JSON array of python-socketio `emit` messages
  (routed_manager's `_ROUTE_AND_PUBLISH` and `emit_to_socket`); the shared channel carries
  python-socketio's own messages (one JSON object each), or such an array when a routed publish
  fell back to it;
- the route registry: `keys.user_nodes_key`, a set of node ids; and since 2026-12-02 (after
  1d8b08b) `keys.presence_watchers_key`, the same for the sockets watching a user's presence,
  which presence's announcements are routed by. A presence of that release sends them only to
  the nodes registered there, so an upgrade from an earlier release upgrades the gateways first:
  an earlier presence still sends them on the shared channel, which every release reads;
- a node's liveness key (`keys.node_alive_key`): its value lists the formats the node reads,
  comma-separated. 9f02a0c writes "1" there meaning only "alive", which reads as "format 1".

A later format is a JSON object {"format": N, ...} on a node's channel (format 1 has no such key,
so 9f02a0c's payloads read as format 1). To roll one out: the release that introduces it reads it
and advertises it ("1,2") but still writes format 1; the release after writes it to the nodes that
advertise it and format 1 to the others (each node gets the newest format both know:
`newest_shared`). What exists today for that: the routing script publishes FORMAT only to the
nodes that read it and returns the others, and `emit_to_socket` checks its one node; with a
single format written, those others (a node of a release skipped in the upgrade) are only
logged. A change of the registry gets new key names, written beside the old ones for one
release. Readers of an unknown format count it and drop it (`decode`); they never stop
listening over it.
"""

import json

from . import fast_json

# The format this release writes on node channels.
FORMAT = 1
# The formats this release reads, and advertises in its liveness key.
READS: tuple[int, ...] = (1,)
# What a node reads when its liveness key lists nothing (it has none: the node is dead, or a
# later release dropped the key); 9f02a0c writes "1".
ASSUMED = frozenset({1})


def advertisement() -> str:
    """The value of this node's liveness key."""
    return ",".join(str(number) for number in READS)


def advertised(value: bytes | str | None) -> frozenset[int]:
    """The formats a node reads, from its liveness key's value."""
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if not value:
        return ASSUMED
    return frozenset(int(part) for part in value.split(",") if part.isdigit())


def newest_shared(node_reads: frozenset[int], writable: tuple[int, ...] = (FORMAT,)) -> int | None:
    """The newest format this release writes that a node reads; None: it reads none of them."""
    shared = node_reads.intersection(writable)
    return max(shared) if shared else None


class UnreadablePayload(ValueError):
    """A pub/sub payload of no format this node reads; `reason` is a metric label."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def decode(data: bytes | str) -> list:
    """The messages of one pub/sub payload (a batch of routed emits, or one message of
    python-socketio's), or UnreadablePayload: not JSON, or a format this node does not read."""
    try:
        decoded = fast_json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UnreadablePayload("malformed", f"not JSON: {exc}") from None
    if isinstance(decoded, list):
        return decoded
    if not isinstance(decoded, dict):
        raise UnreadablePayload("malformed", f"a JSON {type(decoded).__name__}, not an object or array")
    if "format" in decoded:  # a later format's envelope: none is read yet
        raise UnreadablePayload("format", f"format {str(decoded['format'])[:20]!r}, this node reads {READS}")
    return [decoded]
