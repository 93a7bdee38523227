"""History's part of the OpenAPI document (its public REST API, its internal routes, its payloads),
and the file of the whole document it serves at `/openapi.json`."""

from pathlib import Path

from ..shared.models import InternalMarkRead, PartnersQuery, StoreMessage, StoreMessages
from ..shared.openapi import (
    ERROR,
    USER_ID,
    Fragment,
    internal_operation,
    json_answer,
    limit_param,
    param,
    public_operation,
)
from .models import MessageOut, MessagesRead, UserProfile
from .routes import CONVERSATION_PAGE, CONVERSATIONS_PAGE, MAX_QUERY_LENGTH, SEARCH_PAGE, SYNC_PAGE, USERS_PAGE

# Every service's routes, written by `python -m services.devtools.openapi` (history imports no other
# service; tests/unit/test_openapi.py fails while the file is stale).
OPENAPI_DOCUMENT = Path(__file__).with_name("openapi.json")

MESSAGE = {"$ref": "#/components/schemas/MessageOut"}
PROFILE = {"$ref": "#/components/schemas/UserProfile"}
CURSOR = {"type": "string", "pattern": "^[0-9]{1,19}$"}
LINK = {"Link": {"description": 'Present while there is more: `<next page URL>; rel="next"`', "schema": {"type": "string"}}}
PARTNER = param("userId", "path", "The partner", USER_ID)
USER = param("userId", "path", "The user", USER_ID)

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


def _page_of(items: dict) -> dict:
    return {**json_answer({"type": "array", "items": items}), "headers": LINK}


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
                                   [param("messageId", "path", "The message id", CURSOR)],
                                   statuses=(400, 401, 403, 404, 429, 503))
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
                                                          "error": ERROR, "status": {"type": "integer"}}}}}})},
                                   StoreMessages)
    },
    "/internal/read": {
        "post": internal_operation("Mark read on behalf of a socket event", {"200": json_answer({"type": "object"})},
                                   InternalMarkRead)
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
    models=(MessageOut, UserProfile, MessagesRead, StoreMessage, StoreMessages, InternalMarkRead, PartnersQuery),
)
