"""The gateway's part of the OpenAPI document: its own route, and the history routes it forwards
(which history's fragment documents), and media's attachment routes it streams (media's fragment)."""

from ..shared.openapi import ONLINE, USER_IDS_QUERY, Fragment, json_answer, public_operation
from .media_forward import MEDIA_ROUTES
from .models import AnswerCall, CallEnded, CallRef, CallUser, IceCandidate
from .rest import FORWARDED_ROUTES

ICE_SERVERS = json_answer({"type": "object", "properties": {"iceServers": {"type": "array", "items": {
    "type": "object", "properties": {"urls": {"type": "array", "items": {"type": "string"}},
                                     "username": {"type": "string"}, "credential": {"type": "string"}},
    "required": ["urls"]}}}, "required": ["iceServers"]})

PUBLIC_PATHS = {
    "/api/calls/ice-servers": {
        "get": public_operation("STUN and TURN servers for a call, with TURN credentials of mine that expire",
                                {"200": ICE_SERVERS})
    },
    "/api/presence": {
        "get": public_operation("Which of these users are online now", {"200": ONLINE}, [USER_IDS_QUERY])
    },
}

# The call events' payloads (issue 17: Socket.IO, not REST; README's protocol table), for clients.
FRAGMENT = Fragment("gateway", public=PUBLIC_PATHS, internal={}, forwarded=FORWARDED_ROUTES + MEDIA_ROUTES,
                    models=(CallUser, AnswerCall, IceCandidate, CallRef, CallEnded))
