"""Presence's part of the OpenAPI document: its internal routes (it has no public API) and payloads."""

from ..shared.models import Heartbeat, NodeSockets, PartnersQuery, PresenceEvents
from ..shared.openapi import ONLINE, USER_ID, USER_IDS_QUERY, Fragment, internal_operation, json_answer, param

# `accepted` false: the node's liveness key has lapsed, so its sockets were not taken (it resyncs).
TRANSITIONS = json_answer({"type": "object", "properties": {"online": {"type": "array", "items": USER_ID},
                                                           "offline": {"type": "array", "items": USER_ID},
                                                           "accepted": {"type": "boolean"}}})
NODE_ID = param("nodeId", "path", "The gateway node", USER_ID)

INTERNAL_PATHS = {
    "/internal/presence/events": {
        "post": internal_operation("A gateway's batch of sockets connected and disconnected", {"200": TRANSITIONS},
                                   PresenceEvents)
    },
    "/internal/presence/heartbeat": {
        "post": internal_operation("A gateway node is alive; `resync` asks it for its full socket list",
                                   {"200": json_answer({"type": "object", "properties": {"resync": {"type": "boolean"}}})},
                                   Heartbeat)
    },
    "/internal/presence/nodes/{nodeId}": {
        "put": internal_operation("Replace the node's sockets with its full list", {"200": TRANSITIONS}, NodeSockets,
                                  [NODE_ID]),
        "delete": internal_operation("The node left (drained): forget its sockets", {"200": TRANSITIONS},
                                     parameters=[NODE_ID]),
    },
    "/internal/presence/partners-online": {
        "post": internal_operation("Each user's partners who are online (the `onlineUsers` of sockets that connect together)",
                                   {"200": json_answer({"type": "object", "properties": {"online": {
                                       "type": "object", "additionalProperties": {"type": "array", "items": USER_ID}}}})},
                                   PartnersQuery)
    },
    "/internal/presence/online": {
        "get": internal_operation("Which of these users are online", {"200": ONLINE}, parameters=[USER_IDS_QUERY])
    },
    "/internal/presence/partners-online/{userId}": {
        "get": internal_operation("Which of the user's conversation partners are online", {"200": ONLINE},
                                  parameters=[param("userId", "path", "The user", USER_ID)])
    },
}

FRAGMENT = Fragment("presence", public={}, internal=INTERNAL_PATHS, models=(PresenceEvents, NodeSockets, Heartbeat))
