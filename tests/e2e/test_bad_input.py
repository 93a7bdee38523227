"""Bad tokens and bad payloads get clear refusals, and the nodes keep serving."""

import time

import aiohttp
import jwt
import pytest
import socketio

from tests.support import GATEWAY_TOKEN, JWT, ChatClient
from tests.tally import ATTACK, BAD_INPUT


def token(claims: dict, secret: str = JWT.jwt_secret, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


def unsigned(claims: dict) -> str:
    return jwt.encode(claims, key=None, algorithm="none")


BAD_TOKENS = {
    "no token": None,
    "expired": token({"id": "u1", "exp": int(time.time()) - 60}),
    "wrong signature": token({"id": "u1"}, secret="another-secret-that-is-long-enough-0000000"),
    "alg none": unsigned({"id": "u1"}),
    "no id claim": token({"sub": "u1"}),
    "id not a string": token({"id": 12345}),
    "garbage": "not.a.jwt",
}


@pytest.mark.tally(ATTACK, "bad JWTs at the handshake")
@pytest.mark.parametrize("bad_token", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
async def test_handshake_refuses_bad_tokens(cluster, bad_token):
    client = ChatClient(cluster.gateway_url("a"), bad_token)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect()
    # What socket.io-client shows as `err.message`, as in the guide.
    assert client.received("connect_error") == [{"message": "Authentication error"}]
    await client.close()


async def test_token_from_cookie_or_bearer_header_is_accepted(cluster, make_user):
    ada = await make_user()
    # The cookie counts only from a trusted page (test_socket_security covers the refusals).
    for headers in ({"Cookie": f"token={ada.token}", "Origin": "http://allowed.example"},
                    {"Authorization": f"Bearer {ada.token}"}):
        client = ChatClient(cluster.gateway_url("b"), None)
        await client.connect(headers=headers)
        assert client.sio.connected
        await client.close()


BAD_MESSAGES = {
    "empty text": ({"receiverId": "x", "text": ""}, "invalid_text"),
    "whitespace text": ({"receiverId": "x", "text": " \n\t "}, "invalid_text"),
    "text too long": ({"receiverId": "x", "text": "a" * 4001}, "invalid_text"),
    "text not a string": ({"receiverId": "x", "text": ["hi"]}, "invalid_text"),
    "text with NUL": ({"receiverId": "x", "text": "a\x00b"}, "invalid_text"),
    "receiver with NUL": ({"receiverId": "x\x00", "text": "hi"}, "invalid_receiverId"),
    "missing receiver": ({"text": "hi"}, "invalid_receiverId"),
    "receiver not a string": ({"receiverId": 42, "text": "hi"}, "invalid_receiverId"),
    "receiver too long": ({"receiverId": "r" * 65, "text": "hi"}, "invalid_receiverId"),
    "not an object": ("hello", "invalid_payload"),
    "no payload": (None, "invalid_payload"),
    "unknown receiver": ({"receiverId": "nobody-by-this-id", "text": "hi"}, "unknown_receiver"),
}


@pytest.mark.tally(BAD_INPUT, "sendMessage payloads with a bad field")
@pytest.mark.parametrize(("payload", "code"), BAD_MESSAGES.values(), ids=BAD_MESSAGES.keys())
async def test_bad_messages_get_message_error_naming_the_field(make_user, connect, payload, code):
    ada, grace = await make_user(), await make_user()
    sender = await connect(ada, "a")

    ack = await sender.call("sendMessage", payload)

    assert ack["ok"] is False and ack["error"]["code"] == code
    error = await sender.wait_for("messageError")
    assert error["code"] == code and error["message"]
    # The node keeps serving this very socket.
    ok = await sender.call("sendMessage", {"receiverId": grace.id, "text": "still here"})
    assert ok["ok"] is True


async def test_text_of_exactly_4000_characters_is_accepted(make_user, connect):
    ada, grace = await make_user(), await make_user()
    sender = await connect(ada, "b")
    ack = await sender.call("sendMessage", {"receiverId": grace.id, "text": "é" * 4000})
    assert ack["ok"] is True and len(ack["message"]["text"]) == 4000


async def test_bad_typing_payload_is_refused(make_user, connect):
    ada = await make_user()
    client = await connect(ada, "a")
    ack = await client.call("typing", {"nested": {"deep": [1, 2]}})
    assert ack["ok"] is False and ack["error"]["code"] == "invalid_receiverId"


@pytest.mark.tally(ATTACK, "another user's messages: 8 REST calls, markRead")
async def test_no_route_shows_or_changes_another_users_messages(cluster, make_user, connect):
    ada, grace, mallory = await make_user(), await make_user(), await make_user()
    sender = await connect(ada, "a")
    snoop = await connect(mallory, "b")
    word = "secretword" + ada.id[:8]
    message = (await sender.call("sendMessage", {"receiverId": grace.id, "text": f"private {word}"}))["message"]

    async with aiohttp.ClientSession(base_url=cluster.gateway_url("a"), headers=mallory.auth_headers) as http:
        async with http.get(f"/api/messages/{grace.id}") as answer:
            assert answer.status == 200 and await answer.json() == []
        async with http.get(f"/api/messages/{ada.id}") as answer:
            assert answer.status == 200 and await answer.json() == []
        async with http.get("/api/messages/conversations") as answer:
            assert await answer.json() == []
        async with http.get("/api/messages/sync?after=0") as answer:
            assert (await answer.json())["messages"] == []
        async with http.get(f"/api/messages/search?q={word}") as answer:
            assert await answer.json() == []
        async with http.put(f"/api/messages/read/{ada.id}") as answer:
            assert (await answer.json())["count"] == 0
        async with http.delete(f"/api/messages/{message['_id']}") as answer:
            assert answer.status == 404
    assert (await snoop.call("markRead", {"userId": ada.id}))["count"] == 0

    async with aiohttp.ClientSession(base_url=cluster.gateway_url("b"), headers=grace.auth_headers) as http:
        async with http.get(f"/api/messages/{ada.id}") as answer:
            page = await answer.json()
    assert [(m["text"], m["isRead"]) for m in page] == [(f"private {word}", False)]
    assert snoop.received("receiveMessage") == []


MALFORMED = {
    "cursor not digits": ("/api/messages/{peer}?before=abc", 400, "invalid_before"),
    "limit zero": ("/api/messages/{peer}?limit=0", 400, "invalid_limit"),
    "limit too big": ("/api/messages/{peer}?limit=100000", 400, "invalid_limit"),
    "user id too long": ("/api/messages/" + "u" * 65, 400, "invalid_userId"),
    "unknown route": ("/api/nothing/here", 404, "not_found"),
}


@pytest.mark.tally(BAD_INPUT, "malformed REST requests")
@pytest.mark.parametrize(("path", "status", "code"), MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_rest_requests_get_clear_4xx(cluster, make_user, path, status, code):
    ada, grace = await make_user(), await make_user()
    async with aiohttp.ClientSession(base_url=cluster.gateway_url("b")) as http:
        async with http.get(path.format(peer=grace.id), headers=ada.auth_headers) as answer:
            assert answer.status == status
            assert (await answer.json())["code"] == code


@pytest.mark.tally(ATTACK, "REST without a token")
async def test_rest_without_token_is_401(cluster):
    async with aiohttp.ClientSession(base_url=cluster.gateway_url("a")) as http:
        async with http.get("/api/messages/conversations") as answer:
            assert answer.status == 401
            assert await answer.json() == {"message": "Authentication required", "code": "unauthorized"}


@pytest.mark.tally(ATTACK, "/internal/* through the gateway")
async def test_internal_routes_are_not_reachable_through_the_gateway(cluster):
    async with aiohttp.ClientSession(base_url=cluster.gateway_url("a")) as http:
        async with http.get("/internal/users", headers={"X-Internal-Token": GATEWAY_TOKEN}) as answer:
            assert answer.status == 404


async def test_nodes_still_serve_after_the_bad_input(cluster, make_user, connect):
    ada, grace = await make_user(), await make_user()
    sender = await connect(ada, "b")
    receiver = await connect(grace, "a")
    await sender.call("sendMessage", {"receiverId": grace.id, "text": "after all that"})
    assert (await receiver.wait_for("receiveMessage"))["text"] == "after all that"
    for process in cluster.stack.processes.values():
        assert process.alive()
