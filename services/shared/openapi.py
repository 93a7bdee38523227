"""The OpenAPI document of Parley's HTTP routes, public (through the gateway) and internal.

Kept true by tests/unit/test_openapi.py, which compares it with every service's router.
"""

from pydantic import BaseModel

from .models import (
    Heartbeat,
    InternalMarkRead,
    MessageOut,
    MessagesRead,
    NodeSockets,
    PartnersQuery,
    PresenceEvents,
    StoreMessage,
    StoreMessages,
    UserProfile,
)

ERROR = {"$ref": "#/components/schemas/Error"}
MESSAGE = {"$ref": "#/components/schemas/MessageOut"}
PROFILE = {"$ref": "#/components/schemas/UserProfile"}
USER_AUTH = [{"bearer": []}, {"cookie": []}]
INTERNAL_AUTH = [{"internalToken": []}]


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict:
    meaning = {
        400: "Bad input; `code` names the field (`invalid_<field>`)",
        401: "No or bad token",
        403: "Not yours",
        404: "Unknown",
        409: "Conflict",
        429: "Rate limited (`Retry-After`)",
        503: "A backing store or service is down",
    }
    return {str(status): _json(ERROR, meaning[status]) for status in statuses}


def _param(name: str, where: str, description: str, schema: dict | None = None, required: bool = False) -> dict:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "description": description,
        "schema": schema or {"type": "string"},
    }


CURSOR = {"type": "string", "pattern": "^[0-9]{1,19}$"}
USER_ID = {"type": "string", "minLength": 1, "maxLength": 64}
LINK = {"Link": {"description": 'Present while there is more: `<next page URL>; rel="next"`', "schema": {"type": "string"}}}


def _limit(default: int, high: int) -> dict:
    return _param("limit", "query", f"Page size (default {default})", {"type": "integer", "minimum": 1, "maximum": high})


def _public(summary: str, responses: dict, parameters: list | None = None, statuses=(400, 401, 429, 503)) -> dict:
    return {"summary": summary, "security": USER_AUTH, "parameters": parameters or [],
            "responses": {**responses, **_errors(*statuses)}}


def _internal(summary: str, responses: dict, body: type[BaseModel] | dict | None = None, parameters=None) -> dict:
    operation = {"summary": summary, "security": INTERNAL_AUTH, "parameters": parameters or [],
                 "responses": {**responses, **_errors(400, 401, 404, 503)}}
    if body is not None:
        schema = {"$ref": f"#/components/schemas/{body.__name__}"} if isinstance(body, type) else body
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
    return operation


CONVERSATION = {
    "type": "object",
    "properties": {"_id": PROFILE, "lastMessage": {"type": "object"}, "unreadCount": {"type": "integer"}},
}
SYNC = {
    "type": "object",
    "properties": {
        "messages": {"type": "array", "items": MESSAGE},
        "deleted": {"type": "array", "items": {"type": "object"}},
        "next": CURSOR,
        "hasMore": {"type": "boolean"},
    },
}
PROBE = {"type": "object", "properties": {"status": {"type": "string"}}}
METRICS_TEXT = {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}


def _healthz(service: str) -> dict:
    return {"/healthz": {"get": {"summary": f"{service}: the process is alive", "responses": {"200": _json(PROBE)}}}}


def _internal_probes(service: str) -> dict:
    return {
        **_healthz(service),
        "/readyz": {"get": {"summary": f"{service}: every dependency answers",
                            "responses": {"200": _json(PROBE), "503": _json(PROBE, "A dependency is down, or draining")}}},
        "/metrics": {"get": {"summary": f"{service}: Prometheus metrics", "responses": {"200": METRICS_TEXT}}},
    }


PUBLIC_PATHS = {
    "/api/messages/conversations": {
        "get": _public("My conversations, newest first, with the last message and unread count",
                       {"200": {**_json({"type": "array", "items": CONVERSATION}), "headers": LINK}},
                       [_limit(100, 500), _param("before", "query", "Last message id of the previous page", CURSOR)])
    },
    "/api/messages/sync": {
        "get": _public("Everything to or from me after a cursor, in order (messages and deletions)",
                       {"200": _json(SYNC)},
                       [_param("after", "query", "The id of the last message I have", CURSOR, required=True),
                        _limit(100, 500)])
    },
    "/api/messages/search": {
        "get": _public("Full-text search over my own messages, newest first",
                       {"200": {**_json({"type": "array", "items": MESSAGE}), "headers": LINK}},
                       [_param("q", "query", "Search words (web search syntax)",
                               {"type": "string", "minLength": 1, "maxLength": 256}, required=True),
                        _limit(20, 100), _param("before", "query", "Older than this message id", CURSOR)])
    },
    "/api/messages/read/{userId}": {
        "put": _public("Mark the partner's messages to me read; the partner gets `messagesRead`",
                       {"200": _json({"type": "object", "properties": {
                           "message": {"type": "string"}, "count": {"type": "integer"},
                           "upTo": {"type": ["string", "null"]}}})},
                       [_param("userId", "path", "The partner", USER_ID)])
    },
    "/api/messages/{messageId}": {
        "delete": _public("Delete my own message; both sides get `messageDeleted`",
                          {"200": _json({"type": "object"})},
                          [_param("messageId", "path", "The message id", CURSOR)],
                          statuses=(400, 401, 403, 404, 429, 503))
    },
    "/api/messages/{userId}": {
        "get": _public("The conversation with a user, oldest first: the newest page, or older with `before`",
                       {"200": {**_json({"type": "array", "items": MESSAGE}), "headers": LINK}},
                       [_param("userId", "path", "The partner", USER_ID), _limit(50, 200),
                        _param("before", "query", "Older than this message id", CURSOR)])
    },
    "/api/users/lookup": {
        "get": _public("A profile by user name (to start a chat)", {"200": _json(PROFILE)},
                       [_param("userName", "query", "The user name", required=True)],
                       statuses=(400, 401, 404, 429, 503))
    },
    "/api/users/{userId}": {
        "get": _public("A profile by id", {"200": _json(PROFILE)}, [_param("userId", "path", "The user", USER_ID)],
                       statuses=(400, 401, 404, 429, 503))
    },
}

HISTORY_INTERNAL_PATHS = {
    "/internal/messages": {
        "post": _internal("Store a message; answers it with both profiles, and whether it was created",
                          {"200": _json({"type": "object", "properties": {"message": MESSAGE,
                                                                          "created": {"type": "boolean"}}})},
                          StoreMessage)
    },
    "/internal/messages/batch": {
        "post": _internal("Store several messages in one commit; one result per message, in order",
                          {"200": _json({"type": "object", "properties": {"results": {"type": "array", "items": {
                              "type": "object",
                              "properties": {"message": MESSAGE, "created": {"type": "boolean"},
                                             "error": ERROR, "status": {"type": "integer"}}}}}})},
                          StoreMessages)
    },
    "/internal/read": {
        "post": _internal("Mark read on behalf of a socket event", {"200": _json({"type": "object"})}, InternalMarkRead)
    },
    "/internal/users": {
        "get": _internal("List profiles (development sign-in), or the one with `userName`",
                         {"200": _json({"type": "array", "items": PROFILE})},
                         parameters=[_limit(100, 1000), _param("userName", "query", "Exactly this user name")])
    },
    "/internal/users/{userId}": {
        "put": _internal("Create or update a profile (the social app's upsert)", {"200": _json(PROFILE)},
                         {"type": "object", "properties": {"userName": {"type": "string"}, "name": {"type": "string"},
                                                           "profileImage": {"type": "string"}},
                          "required": ["userName"]},
                         [_param("userId", "path", "The user", USER_ID)])
    },
    "/internal/partners": {
        "post": _internal("Partners of each of many users (presence's batched announcements)",
                          {"200": _json({"type": "object", "properties": {"partners": {"type": "object"}}})},
                          PartnersQuery)
    },
    "/internal/users/{userId}/partners": {
        "get": _internal("Ids of everyone the user has a conversation with",
                         {"200": _json({"type": "array", "items": {"type": "string"}})},
                         parameters=[_param("userId", "path", "The user", USER_ID)])
    },
}
OPENAPI_PATH = {"/openapi.json": {"get": {"summary": "This document", "responses": {"200": _json({"type": "object"})}}}}

ONLINE = _json({"type": "object", "properties": {"online": {"type": "array", "items": USER_ID}}})
TRANSITIONS = _json({"type": "object", "properties": {"online": {"type": "array", "items": USER_ID},
                                                      "offline": {"type": "array", "items": USER_ID}}})
IDS = _param("ids", "query", "Comma-separated user ids (at most 100)", required=True)
NODE_ID = _param("nodeId", "path", "The gateway node", USER_ID)

GATEWAY_PATHS = {
    "/api/presence": {
        "get": _public("Which of these users are online now", {"200": ONLINE}, [IDS])
    },
}

PRESENCE_INTERNAL_PATHS = {
    "/internal/presence/events": {
        "post": _internal("A gateway's batch of sockets connected and disconnected", {"200": TRANSITIONS},
                          PresenceEvents)
    },
    "/internal/presence/heartbeat": {
        "post": _internal("A gateway node is alive; `resync` asks it for its full socket list",
                          {"200": _json({"type": "object", "properties": {"resync": {"type": "boolean"}}})},
                          Heartbeat)
    },
    "/internal/presence/nodes/{nodeId}": {
        "put": _internal("Replace the node's sockets with its full list", {"200": TRANSITIONS}, NodeSockets,
                         [NODE_ID]),
        "delete": _internal("The node left (drained): forget its sockets", {"200": TRANSITIONS},
                            parameters=[NODE_ID]),
    },
    "/internal/presence/online": {
        "get": _internal("Which of these users are online", {"200": ONLINE}, parameters=[IDS])
    },
    "/internal/presence/partners-online/{userId}": {
        "get": _internal("Which of the user's conversation partners are online", {"200": ONLINE},
                         parameters=[_param("userId", "path", "The user", USER_ID)])
    },
}

# The routes of each service's two listeners (public: PORT, internal: INTERNAL_PORT); the tests
# compare each with its router. The gateway forwards history's public routes, and only those.
LISTENER_PATHS = {
    ("history", "public"): {**PUBLIC_PATHS, **OPENAPI_PATH, **_healthz("history")},
    ("history", "internal"): {**HISTORY_INTERNAL_PATHS, **_internal_probes("history")},
    ("gateway", "public"): {**GATEWAY_PATHS, **PUBLIC_PATHS, **_healthz("gateway")},
    ("gateway", "internal"): _internal_probes("gateway"),
    ("presence", "public"): _healthz("presence"),
    ("presence", "internal"): {**PRESENCE_INTERNAL_PATHS, **_internal_probes("presence")},
}


def _schemas() -> dict:
    schemas = {
        "Error": {"type": "object", "required": ["message", "code"],
                  "properties": {"message": {"type": "string"}, "code": {"type": "string"}}},
    }
    for model in (MessageOut, UserProfile, StoreMessage, StoreMessages, InternalMarkRead, MessagesRead,
                  PresenceEvents, NodeSockets, Heartbeat, PartnersQuery):
        schema = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas


def openapi_document() -> dict:
    paths = {}
    for service_paths in LISTENER_PATHS.values():
        for path, item in service_paths.items():
            paths.setdefault(path, {}).update(item)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Parley",
            "version": "1",
            "description": "Public routes are served through any gateway node; `/internal/*`, `/readyz` and "
            "`/metrics` only on each service's internal listener (INTERNAL_PORT), `/internal/*` with the "
            "calling service's `X-Internal-Token`. Errors are always `{message, code}`.",
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "token"},
                "internalToken": {"type": "apiKey", "in": "header", "name": "X-Internal-Token"},
            },
        },
    }
