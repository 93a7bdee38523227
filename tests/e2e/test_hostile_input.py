"""Hostile input at every layer: frames, payloads, query strings, origins. Nodes keep serving."""

import json

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.rawsocket import RawSocket
from tests.tally import ATTACK, BAD_INPUT, example
from tests.support import ADMIN_TOKEN, ChatClient

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=80),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=12,
)
MESSAGE_LIKE = st.fixed_dictionaries(
    {},
    optional={"receiverId": JSON_VALUES | st.text(max_size=80), "text": JSON_VALUES | st.text(max_size=5000),
              "clientId": JSON_VALUES, "userId": JSON_VALUES, "groupId": JSON_VALUES | st.text(max_size=20),
              "replyTo": JSON_VALUES, "attachmentIds": JSON_VALUES, "messageId": JSON_VALUES,
              "emoji": JSON_VALUES | st.text(max_size=8), "visible": JSON_VALUES,
              # Calls (issue 17).
              "to": JSON_VALUES | st.text(max_size=80), "kind": JSON_VALUES | st.sampled_from(["audio", "video"]),
              "sdp": JSON_VALUES | st.text(max_size=2000), "callId": JSON_VALUES | st.text(max_size=40),
              "candidate": JSON_VALUES | st.fixed_dictionaries({}, optional={
                  "candidate": JSON_VALUES | st.text(max_size=300), "sdpMid": JSON_VALUES,
                  "sdpMLineIndex": JSON_VALUES, "usernameFragment": JSON_VALUES})},
)
EVENTS = ["sendMessage", "typing", "stopTyping", "markRead", "watchPresence", "react", "unreact",
          "callUser", "answerCall", "iceCandidate", "rejectCall", "endCall", "visibility"]


@pytest.fixture
def assert_nodes_healthy(cluster):
    """Checks that every process is alive and logged no error since the test began."""
    offsets = {name: len(process.log_text()) for name, process in cluster.stack.processes.items()}

    def check(_cluster=None) -> None:
        for name, process in cluster.stack.processes.items():
            assert process.alive(), name
            new_lines = process.log_text()[offsets.get(name, 0):]
            assert '"level": "error"' not in new_lines, f"{name}: {new_lines[-2000:]}"

    return check


@pytest.mark.tally(BAD_INPUT, "Socket.IO event payloads (hypothesis)", per_example=True)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(event=st.sampled_from(EVENTS), payload=JSON_VALUES | MESSAGE_LIKE)
async def test_any_event_payload_gets_an_ack_never_a_crash(cluster, make_user, event, payload):
    user = await make_user()
    client = ChatClient(cluster.gateway_url("a"), user.token)
    await client.connect()
    try:
        ack = await client.call(event, payload)
    finally:
        await client.close()
    assert isinstance(ack, dict) and isinstance(ack["ok"], bool)
    if not ack["ok"]:
        assert ack["error"]["code"] != "internal" and ack["error"]["message"]
    example(BAD_INPUT, "Socket.IO event payloads (hypothesis)")


@pytest.mark.tally(BAD_INPUT, "handshake auth payloads (hypothesis)", per_example=True)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(auth=JSON_VALUES)
async def test_any_handshake_without_a_valid_token_is_refused(cluster, auth):
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(cluster.gateway_url("b") + "/socket.io/?EIO=4&transport=websocket") as ws:
            assert (await ws.receive_str(timeout=5)).startswith("0{")
            await ws.send_str("40" + json.dumps(auth))
            answer = await ws.receive(timeout=5)
    if answer.type == aiohttp.WSMsgType.TEXT and answer.data != "1":
        assert answer.data.startswith("44"), answer.data  # CONNECT_ERROR, never CONNECT
        assert json.loads(answer.data[2:]) == {"message": "Authentication error"}
    else:  # a handshake packet that does not even decode: engine.io closes the connection
        assert answer.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    example(BAD_INPUT, "handshake auth payloads (hypothesis)")


async def test_the_fuzzed_nodes_are_still_healthy(assert_nodes_healthy, cluster, make_user, connect):
    ada, grace = await make_user(), await make_user()
    sender = await connect(ada, "a")
    assert (await sender.call("sendMessage", {"receiverId": grace.id, "text": "still fine"}))["ok"]
    assert_nodes_healthy(cluster)


@pytest.mark.tally(BAD_INPUT, "JSON nested 20,000 deep")
async def test_deeply_nested_json_closes_that_socket_and_the_node_serves_on(assert_nodes_healthy, cluster,
                                                                            make_user):
    ada, grace = await make_user(), await make_user()
    raw = await RawSocket.open(cluster.gateway_url("a"), ada.token)
    try:
        depth = 20_000  # far past Python's recursion limit, inside the 64 KB frame limit
        await raw.send_event('["sendMessage",' + "[" * depth + "]" * depth + "]")
        await raw.send_event('["sendMessage",{"receiverId":"x","text":"after"}]', ack_id=2)
        # Undecodable (orjson refuses depth past 1024): the node closes the socket, acking nothing.
        assert await raw.receive_until_ack(ack_id=2) is None
    finally:
        await raw.close()
    client = ChatClient(cluster.gateway_url("a"), ada.token)
    await client.connect()
    try:
        assert (await client.call("sendMessage", {"receiverId": grace.id, "text": "ok"}))["ok"]
    finally:
        await client.close()
    assert_nodes_healthy(cluster)


@pytest.mark.parametrize(
    ("frame", "closes"),
    [('42["sendMessage"', True), ("42[1,2,3]", False), ('42{"not":"an array"}', True), ("4", True),
     ("99999", True), ('42["sendMessage","\\ud800"]', False), ("\x00\x01", True)],
    ids=["truncated", "event not a string", "not an array", "bare type", "unknown type", "lone surrogate", "binary junk"],
)
@pytest.mark.tally(BAD_INPUT, "malformed engine.io / Socket.IO frames")
async def test_malformed_frames_do_not_hurt_the_node(assert_nodes_healthy, cluster, make_user, frame, closes):
    ada, grace = await make_user(), await make_user()
    raw = await RawSocket.open(cluster.gateway_url("b"), ada.token)
    try:
        await raw.ws.send_str(frame)
        # Frames are handled in order: the next event's ack (or the close) comes after the bad frame's fate.
        await raw.send_event('["sendMessage",{"receiverId":"x","text":"after"}]', ack_id=7)
        ack = await raw.receive_until_ack(ack_id=7)
    finally:
        await raw.close()
    if closes:  # undecodable: that socket is closed
        assert ack is None
    else:  # decodable, but no event of ours: ignored, and the socket serves on
        assert ack == [{"ok": False, "error": {"message": "The receiver is not a known user",
                                               "code": "unknown_receiver"}}]
    client = ChatClient(cluster.gateway_url("b"), ada.token)
    await client.connect()
    assert (await client.call("sendMessage", {"receiverId": grace.id, "text": "ok"}))["ok"]
    await client.close()
    assert_nodes_healthy(cluster)


@pytest.mark.tally(BAD_INPUT, "a frame over the size limit")
async def test_an_oversized_frame_closes_that_socket_only(assert_nodes_healthy, cluster, make_user, connect):
    ada, grace = await make_user(), await make_user()
    bystander = await connect(grace, "a")
    raw = await RawSocket.open(cluster.gateway_url("a"), ada.token)
    try:
        await raw.send_event(json.dumps(["sendMessage", {"receiverId": grace.id, "text": "x" * 200_000}]))
        assert await raw.receive_until_ack() is None  # closed: over MAX_PAYLOAD_BYTES
    finally:
        await raw.close()
    assert (await bystander.call("typing", ada.id))["ok"]
    assert_nodes_healthy(cluster)


@pytest.mark.tally(BAD_INPUT, "query strings of 10 kB and 100 kB")
@pytest.mark.parametrize("length", [10_000, 100_000])
async def test_huge_query_strings_are_refused_cleanly(assert_nodes_healthy, cluster, make_user, length):
    ada = await make_user()
    async with aiohttp.ClientSession() as http:
        async with http.get(cluster.gateway_url("a") + "/api/messages/search?q=" + "a" * length,
                            headers=ada.auth_headers) as answer:
            assert 400 <= answer.status < 500
    assert_nodes_healthy(cluster)


@pytest.mark.tally(BAD_INPUT, "non-UTF-8 bodies and paths")
async def test_non_utf8_bodies_and_paths_get_400(assert_nodes_healthy, cluster, make_user):
    ada = await make_user()
    async with aiohttp.ClientSession() as http:
        async with http.put(cluster.history_url + "/internal/users/x1", data=b'{"userName": "\xff\xfe"}',
                            headers={"X-Internal-Token": ADMIN_TOKEN,
                                     "Content-Type": "application/json"}) as answer:
            assert answer.status == 400 and (await answer.json())["code"] == "invalid_body"
        # The path's bytes decode as U+FFFD, which no user id may hold: refused, naming the field.
        async with http.get(cluster.gateway_url("a") + "/api/messages/%ff%fe", headers=ada.auth_headers) as answer:
            assert answer.status == 400 and (await answer.json())["code"] == "invalid_userId"
    assert_nodes_healthy(cluster)


@pytest.mark.tally(ATTACK, "SQL and script metacharacters in a message")
async def test_sql_metacharacters_round_trip_as_plain_text(cluster, make_user, connect):
    ada, grace = await make_user(), await make_user()
    sender = await connect(ada, "a")
    receiver = await connect(grace, "b")
    hostile = "Robert'); DROP TABLE messages;-- \\ % _ $1 \" `rm -rf` <script>alert(1)</script> 😀 \u202e"
    ack = await sender.call("sendMessage", {"receiverId": grace.id, "text": hostile})
    assert ack["message"]["text"] == hostile.strip()
    assert (await receiver.wait_for("receiveMessage"))["text"] == hostile.strip()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{cluster.gateway_url('b')}/api/messages/{ada.id}", headers=grace.auth_headers) as answer:
            assert [message["text"] for message in await answer.json()] == [hostile.strip()]


@pytest.mark.tally(ATTACK, "credentialed calls from a foreign origin")
async def test_cors_allows_only_the_listed_origins(cluster, make_user):
    ada = await make_user()
    url = cluster.gateway_url("a") + "/api/messages/conversations"
    async with aiohttp.ClientSession() as http:
        async with http.get(url, headers={**ada.auth_headers, "Origin": "http://allowed.example"}) as answer:
            assert answer.headers["Access-Control-Allow-Origin"] == "http://allowed.example"
            assert answer.headers["Access-Control-Allow-Credentials"] == "true"
        async with http.get(url, headers={**ada.auth_headers, "Origin": "http://evil.example"}) as answer:
            assert "Access-Control-Allow-Origin" not in answer.headers
        preflight = {"Origin": "http://evil.example", "Access-Control-Request-Method": "PUT"}
        async with http.options(url, headers=preflight) as answer:
            assert answer.status == 403
        async with http.options(url, headers={**preflight, "Origin": "http://allowed.example"}) as answer:
            assert answer.status == 204 and "PUT" in answer.headers["Access-Control-Allow-Methods"]
        polling = cluster.gateway_url("a") + "/socket.io/?EIO=4&transport=polling"
        async with http.get(polling, headers={"Origin": "http://evil.example"}) as answer:
            assert answer.status == 400
        async with http.get(polling, headers={"Origin": "http://allowed.example"}) as answer:
            assert answer.status == 200


@pytest.mark.tally(ATTACK, "a token in the query string")
async def test_a_token_in_the_query_string_is_not_accepted(cluster, make_user):
    ada = await make_user()
    client = ChatClient(cluster.gateway_url("a") + f"?token={ada.token}", None)
    with pytest.raises(Exception):
        await client.connect()
    assert client.received("connect_error") == [{"message": "Authentication error"}]
    await client.close()
