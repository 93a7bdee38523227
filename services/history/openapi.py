"""History's part of the OpenAPI document (its public REST API, its internal routes, its payloads),
and the file of the whole document it serves at `/openapi.json`."""

from pathlib import Path

from ..shared.models import CallParties, InternalMarkRead, InternalReaction, PartnersQuery, ReplayRequests, StoreMessage, StoreMessages
from ..shared.openapi import (
    ERROR,
    USER_ID,
    Fragment,
    internal_operation,
    json_answer,
    limit_param,
    param,
    public_operation,
    schema_ref,
)
from ..shared.limits import GROUP_ID_PATTERN, MAX_REACTIONS_PER_USER
from .group_models import AddMembers, CreateGroup, GroupOut, SetRole, UpdateGroup
from .push_models import Mute, NotificationSettings, PushEndpoint, PushSubscriptionIn
from .models import EditMessage, GroupMessageOut, MessageEdited, MessageOut, MessagesRead, ReactionUpdated, UserProfile
from .routes import (CONVERSATION_PAGE, CONVERSATIONS_PAGE, MAX_QUERY_LENGTH, REPLAY_PAGE, SEARCH_PAGE, SYNC_PAGE,
                     USERS_PAGE)

# Every service's routes, written by `python -m services.devtools.openapi` (history imports no other
# service; tests/unit/test_openapi.py fails while the file is stale).
OPENAPI_DOCUMENT = Path(__file__).with_name("openapi.json")

# A 1:1 message, or a group's (receiver null, groupId): sync, search and pages may hold both.
MESSAGE = {"anyOf": [{"$ref": "#/components/schemas/MessageOut"}, {"$ref": "#/components/schemas/GroupMessageOut"}]}
GROUP = {"$ref": "#/components/schemas/GroupOut"}
GROUP_ID = param("groupId", "path", "The group", {"type": "string", "pattern": GROUP_ID_PATTERN})
MEMBER = param("userId", "path", "The member", USER_ID)
GROUP_SUMMARY = {"type": "object", "properties": {"_id": {"type": "string"}, "name": {"type": "string"},
                                                   "image": {"type": "string"}, "memberCount": {"type": "integer"}}}
GROUP_STATUSES = (400, 401, 403, 404, 409, 429, 503)
PROFILE = {"$ref": "#/components/schemas/UserProfile"}
CURSOR = {"type": "string", "pattern": "^[0-9]{1,19}$"}
LINK = {"Link": {"description": 'Present while there is more: `<next page URL>; rel="next"`', "schema": {"type": "string"}}}
MESSAGE_ID = param("messageId", "path", "The message id", CURSOR)
EMOJI = param("emoji", "path", "One emoji (one grapheme of the Unicode emoji set), percent-encoded",
              {"type": "string", "minLength": 1, "maxLength": 16})
REACTIONS = json_answer({"type": "object", "properties": {
    "messageId": {"type": "string"},
    "reactions": {"type": "array", "items": {"$ref": "#/components/schemas/ReactionOut"}}}})
PARTNER = param("userId", "path", "The partner", USER_ID)
USER = param("userId", "path", "The user", USER_ID)

CONVERSATION = {
    "type": "object",
    "properties": {"_id": {"anyOf": [PROFILE, GROUP_SUMMARY]}, "group": {"type": "boolean"},
                   "lastMessage": {"type": ["object", "null"]}, "unreadCount": {"type": "integer"}},
}
SYNC = {
    "type": "object",
    "properties": {
        "messages": {"type": "array", "items": MESSAGE},
        "deleted": {"type": "array", "items": {"type": "object"}},
        "edited": {"type": "array", "items": MESSAGE},
        # Receipts, group changes and reactions, in feed order, each as emitted live.
        "events": {"type": "array", "items": {"type": "object", "properties": {
            "event": {"type": "string"}, "data": {"type": "object"}}}},
        "next": CURSOR,
        "hasMore": {"type": "boolean"},
        # Events (not messages) older than FEED_EVENTS_RETENTION_SECONDS are pruned: true when
        # some after the cursor may be gone (reload the conversation list).
        "eventsPruned": {"type": "boolean"},
    },
}


def _page_of(items: dict) -> dict:
    return {**json_answer({"type": "array", "items": items}), "headers": LINK}


def _with_body(operation: dict, model) -> dict:
    body = {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}
    return {**operation, "requestBody": body}


def _group_operation(summary: str, answer: dict, parameters: list, body=None) -> dict:
    operation = public_operation(summary, answer, parameters, statuses=GROUP_STATUSES)
    return _with_body(operation, body) if body is not None else operation


# Issue 15. Every group route answers `not_a_member` (403) to a non-member, `unknown_group` (404).
GROUP_PATHS = {
    "/api/groups": {
        "post": _group_operation("Create a group; I am its admin; every member gets `groupUpdated`",
                                 {"201": json_answer(GROUP, "Created")}, [], CreateGroup),
    },
    "/api/groups/{groupId}": {
        "get": _group_operation("A group of mine, with its members and their read marks", {"200": json_answer(GROUP)},
                                [GROUP_ID]),
        "patch": _group_operation("Rename or re-image a group (admins); members get `groupUpdated`",
                                  {"200": json_answer(GROUP)}, [GROUP_ID], UpdateGroup),
    },
    "/api/groups/{groupId}/members": {
        "post": _group_operation("Add members (admins), up to MAX_GROUP_MEMBERS: `groupUpdated`, `memberAdded`",
                                 {"200": json_answer(GROUP)}, [GROUP_ID], AddMembers),
    },
    "/api/groups/{groupId}/members/{userId}": {
        "delete": _group_operation("Remove a member (admins) or leave; `memberRemoved` to the members and them",
                                   {"200": json_answer({"type": "object"})}, [GROUP_ID, MEMBER]),
        "put": _group_operation("Make a member an admin, or not (admins); members get `groupUpdated`",
                                {"200": json_answer(GROUP)}, [GROUP_ID, MEMBER], SetRole),
    },
    "/api/groups/{groupId}/messages": {
        "get": _group_operation("A group's messages, oldest first: the newest page, or older with `before`",
                                {"200": _page_of(MESSAGE)},
                                [GROUP_ID, limit_param(CONVERSATION_PAGE),
                                 param("before", "query", "Older than this message id", CURSOR)]),
    },
    "/api/groups/{groupId}/read": {
        "put": _group_operation("Read the group up to its newest message; members get `groupRead`",
                                {"200": json_answer({"type": "object", "properties": {
                                    "count": {"type": "integer"}, "upTo": {"type": ["string", "null"]}}})},
                                [GROUP_ID]),
    },
}


# Issue 18: push notifications. Statuses: 409 `too_many_subscriptions`; 404 a conversation I am not in.
CONVERSATION_ID = param("conversationId", "path", "`user:<userId>` (1:1) or `group:<groupId>`",
                        {"type": "string", "pattern": "^(user:[A-Za-z0-9_.-]{1,64}|group:[0-9]{1,18})$"})
MUTED = json_answer({"type": "object", "properties": {"conversationId": {"type": "string"},
                                                      "muted": {"type": "boolean"},
                                                      "until": {"type": ["string", "null"]}}})
SUBSCRIBED = json_answer({"type": "object", "properties": {"endpoint": {"type": "string"}}})
PUSH_PATHS = {
    "/api/push/vapid-public-key": {
        "get": public_operation("The VAPID public key to subscribe with (`applicationServerKey`)",
                                {"200": json_answer({"type": "object", "properties": {"publicKey": {"type": "string"}}})}),
    },
    "/api/push/subscriptions": {
        "post": _with_body(public_operation(
            "Store this browser's push subscription as mine (at most 10; https push service endpoints only)",
            {"201": SUBSCRIBED, "200": SUBSCRIBED}, statuses=(400, 401, 404, 409, 429, 503)), PushSubscriptionIn),
        "delete": _with_body(public_operation(
            "Remove one of my subscriptions", {"200": json_answer({"type": "object", "properties": {
                "endpoint": {"type": "string"}, "removed": {"type": "boolean"}}})}), PushEndpoint),
    },
    "/api/push/settings": {
        "get": public_operation("My notification setting", {"200": json_answer(schema_ref(NotificationSettings))}),
        "put": _with_body(public_operation("Hide message text in my notifications, or show it",
                                           {"200": json_answer(schema_ref(NotificationSettings))},
                                           statuses=(400, 401, 404, 429, 503)), NotificationSettings),
    },
    "/api/conversations/{conversationId}/mute": {
        "put": _with_body(public_operation("Mute a conversation's notifications, until `until` or until unmuted",
                                           {"200": MUTED}, [CONVERSATION_ID], statuses=(400, 401, 404, 429, 503)),
                          Mute),
        "delete": public_operation("Unmute a conversation", {"200": MUTED}, [CONVERSATION_ID],
                                   statuses=(400, 401, 404, 429, 503)),
    },
}


PUBLIC_PATHS = {
    "/api/messages/conversations": {
        "get": public_operation("My conversations, newest first, with the last message and unread count",
                                {"200": _page_of(CONVERSATION)},
                                [limit_param(CONVERSATIONS_PAGE),
                                 param("before", "query", "Last message id of the previous page", CURSOR)])
    },
    "/api/messages/sync": {
        "get": public_operation("Everything to or from me after a cursor, in order (messages and deletions)",
                                {"200": json_answer(SYNC)},
                                [param("after", "query", "The id of the last message I have", CURSOR, required=True),
                                 limit_param(SYNC_PAGE)])
    },
    "/api/messages/search": {
        "get": public_operation("Full-text search over my own messages, newest first",
                                {"200": _page_of(MESSAGE)},
                                [param("q", "query", "Search words (web search syntax)",
                                       {"type": "string", "minLength": 1, "maxLength": MAX_QUERY_LENGTH},
                                       required=True),
                                 limit_param(SEARCH_PAGE), param("before", "query", "Older than this message id", CURSOR)])
    },
    "/api/messages/read/{userId}": {
        "put": public_operation("Mark the partner's messages to me read; the partner gets `messagesRead`",
                                {"200": json_answer({"type": "object", "properties": {
                                    "message": {"type": "string"}, "count": {"type": "integer"},
                                    "upTo": {"type": ["string", "null"]}}})},
                                [PARTNER])
    },
    "/api/messages/{messageId}": {
        "delete": public_operation("Delete my own message; both sides get `messageDeleted`",
                                   {"200": json_answer({"type": "object"})},
                                   [MESSAGE_ID],
                                   statuses=(400, 401, 403, 404, 429, 503)),
        "put": _with_body(public_operation(
            "Edit my own message within EDIT_WINDOW_SECONDS (`edit_window_closed` after); the conversation gets "
            "`messageEdited`", {"200": json_answer(MESSAGE)}, [MESSAGE_ID],
            statuses=(400, 401, 403, 404, 429, 503)), EditMessage),
    },
    "/api/messages/{messageId}/reactions/{emoji}": {
        "put": public_operation(
            f"React to a message I can see (at most {MAX_REACTIONS_PER_USER} emoji each); the conversation gets "
            "`reactionUpdated`", {"200": REACTIONS}, [MESSAGE_ID, EMOJI], statuses=(400, 401, 404, 409, 429, 503)),
        "delete": public_operation("Take my reaction back; the conversation gets `reactionUpdated`",
                                   {"200": REACTIONS}, [MESSAGE_ID, EMOJI], statuses=(400, 401, 404, 429, 503)),
    },
    "/api/messages/{userId}": {
        "get": public_operation("The conversation with a user, oldest first: the newest page, or older with `before`",
                                {"200": _page_of(MESSAGE)},
                                [PARTNER, limit_param(CONVERSATION_PAGE),
                                 param("before", "query", "Older than this message id", CURSOR)])
    },
    "/api/users/lookup": {
        "get": public_operation("A profile by user name (to start a chat)", {"200": json_answer(PROFILE)},
                                [param("userName", "query", "The user name", required=True)],
                                statuses=(400, 401, 404, 429, 503))
    },
    "/api/users/{userId}": {
        "get": public_operation("A profile by id", {"200": json_answer(PROFILE)}, [USER],
                                statuses=(400, 401, 404, 429, 503))
    },
    "/openapi.json": {"get": {"summary": "This document", "responses": {"200": json_answer({"type": "object"})}}},
    **GROUP_PATHS,
    **PUSH_PATHS,
}

INTERNAL_PATHS = {
    "/internal/messages": {
        "post": internal_operation("Store a message; answers it with both profiles, and whether it was created",
                                   {"200": json_answer({"type": "object", "properties": {
                                       "message": MESSAGE, "created": {"type": "boolean"}}})},
                                   StoreMessage)
    },
    "/internal/messages/batch": {
        "post": internal_operation("Store several messages in one commit; one result per message, in order",
                                   {"200": json_answer({"type": "object", "properties": {"results": {
                                       "type": "array", "items": {
                                           "type": "object",
                                           "properties": {"message": MESSAGE, "created": {"type": "boolean"},
                                                          "recipients": {"type": "array", "items": USER_ID},
                                                          "error": ERROR, "status": {"type": "integer"}}}}}})},
                                   StoreMessages)
    },
    "/internal/groups/{groupId}/members": {
        "get": internal_operation("The group's member ids now (the gateway's typing check and fan-out)",
                                  {"200": json_answer({"type": "object", "properties": {
                                      "memberIds": {"type": "array", "items": USER_ID}}})},
                                  parameters=[GROUP_ID])
    },
    "/internal/read": {
        "post": internal_operation("Mark read on behalf of a socket event", {"200": json_answer({"type": "object"})},
                                   InternalMarkRead)
    },
    "/internal/reactions": {
        "post": internal_operation("Set or clear a reaction on behalf of a socket's `react` / `unreact`",
                                   {"200": REACTIONS}, InternalReaction)
    },
    "/internal/users": {
        "get": internal_operation("List profiles (development sign-in), or the one with `userName`",
                                  {"200": json_answer({"type": "array", "items": PROFILE})},
                                  parameters=[limit_param(USERS_PAGE),
                                              param("userName", "query", "Exactly this user name")])
    },
    "/internal/users/{userId}": {
        "put": internal_operation("Create or update a profile (the social app's upsert)", {"200": json_answer(PROFILE)},
                                  {"type": "object", "properties": {"userName": {"type": "string"},
                                                                    "name": {"type": "string"},
                                                                    "profileImage": {"type": "string"}},
                                   "required": ["userName"]},
                                  [USER])
    },
    "/internal/partners": {
        "post": internal_operation("Partners of each of many users (presence's batched announcements)",
                                   {"200": json_answer({"type": "object", "properties": {"partners": {"type": "object"}}})},
                                   PartnersQuery)
    },
    "/internal/users/{userId}/replay": {
        "get": internal_operation(
            "What the user's sockets heard after a feed position, as `[event, data, offset]` (connection recovery)",
            {"200": json_answer({"type": "object", "properties": {
                "events": {"type": "array", "items": {"type": "array"}}, "hasMore": {"type": "boolean"}}})},
            parameters=[USER, param("after", "query", "The feed position the socket has", CURSOR, required=True),
                        limit_param(REPLAY_PAGE)])
    },
    "/internal/replay": {
        "post": internal_operation(
            "The replays of recovering sockets that arrived together, in order, each as the GET route answers it",
            {"200": json_answer({"type": "object", "properties": {"results": {"type": "array", "items": {
                "type": "object", "properties": {
                    "events": {"type": "array", "items": {"type": "array"}}, "hasMore": {"type": "boolean"}}}}}})},
            ReplayRequests)
    },
    "/internal/feed/head": {
        "get": internal_operation("The change feed's settled head (a new socket's start)",
                                  {"200": json_answer({"type": "object", "properties": {"head": CURSOR}})})
    },
    "/internal/calls/parties": {
        "post": internal_operation("A call's two profiles, if the caller may call the callee (as a 1:1 message)",
                                   {"200": json_answer({"type": "object", "properties": {
                                       "caller": PROFILE, "callee": PROFILE}})}, CallParties)
    },
    "/internal/users/{userId}/partners": {
        "get": internal_operation("Ids of everyone the user has a conversation with",
                                  {"200": json_answer({"type": "array", "items": {"type": "string"}})},
                                  parameters=[USER])
    },
}

FRAGMENT = Fragment(
    "history",
    public=PUBLIC_PATHS,
    internal=INTERNAL_PATHS,
    models=(MessageOut, GroupMessageOut, UserProfile, MessagesRead, StoreMessage, StoreMessages, InternalMarkRead,
            PartnersQuery, ReplayRequests, GroupOut, CreateGroup, UpdateGroup, AddMembers, SetRole, EditMessage, MessageEdited,
            ReactionUpdated, InternalReaction, CallParties, PushSubscriptionIn, PushEndpoint, Mute,
            NotificationSettings),
)
