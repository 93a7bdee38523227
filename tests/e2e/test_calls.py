"""Voice and video call signalling (issue 17) through real gateways: a call placed on node a and
answered on node b, every device ringing, only the two parties signalling, busy, missed,
offline, a vanished party `lost`, and a gateway SIGKILLed in the middle of a call.

The cluster here rings for CALL_RING_SECONDS=2 and declares a party lost after 2 s, so the tests
that wait for the sweeper wait seconds, not half a minute; the SIGKILL test runs the defaults
(10 s) and holds the issue's bound: `lost` within 15 s. A check that someone did NOT hear an
event first waits for a later event on the same socket.
"""

import asyncio

import aiohttp
import pytest
import redis.asyncio as redis

from services.shared.keys import call_busy_key, call_key, calls_due_key
from tests.e2e.faults import RECORDED, Tally, stored_ids
from tests.support import ChatClient, TEST_RUN_DIR, assert_no_errors_logged, create_user, eventually, running_cluster
from tests.tally import ATTACK, BAD_INPUT

OFFER = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
ANSWER = OFFER.replace("o=- 1 2", "o=- 3 4")
CANDIDATE = {"candidate": "candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host", "sdpMid": "0", "sdpMLineIndex": 0}
SHORT_TIMING = {"CALL_RING_SECONDS": "2", "CALL_LOST_AFTER_SECONDS": "2", "CALL_SWEEP_SECONDS": "0.2"}


@pytest.fixture(scope="module")
def calls_cluster(stores):
    with running_cluster(stores, TEST_RUN_DIR / "logs" / "e2e-calls", **SHORT_TIMING) as running:
        yield running
    assert_no_errors_logged(running)


@pytest.fixture
async def user(calls_cluster):
    async def make():
        return await create_user(calls_cluster.history_url)

    return make


@pytest.fixture
async def connect(calls_cluster):
    opened: list[ChatClient] = []

    async def open_client(who, node: str = "a") -> ChatClient:
        client = ChatClient(calls_cluster.gateway_url(node), who.token)
        opened.append(client)
        return await client.connect()

    yield open_client
    for client in opened:
        await client.close()


async def get(cluster, path: str, who, node: str = "a"):
    async with aiohttp.ClientSession() as http:
        async with http.get(cluster.gateway_url(node) + path, headers=who.auth_headers) as answer:
            return answer.status, await answer.json()


async def place(caller: ChatClient, callee, kind: str = "video") -> str:
    ack = await caller.call("callUser", {"to": callee.id, "kind": kind, "sdp": OFFER})
    assert ack["ok"], ack
    return ack["callId"]


def of(call_id: str):
    return lambda data: isinstance(data, dict) and data.get("callId") == call_id


async def test_a_call_placed_on_node_a_rings_everywhere_is_answered_on_node_b_and_leaves_a_message(
        calls_cluster, user, connect):
    ada, grace = await user(), await user()
    ada_a, ada_b = await connect(ada, "a"), await connect(ada, "b")
    grace_b, grace_a = await connect(grace, "b"), await connect(grace, "a")

    call_id = await place(ada_a, grace)
    for device in (grace_b, grace_a):  # every device of the callee rings, on both nodes
        ringing = await device.wait_for("incomingCall", of(call_id))
        assert ringing["from"]["_id"] == ada.id and ringing["kind"] == "video" and ringing["sdp"] == OFFER
    started = await ada_b.wait_for("callStarted", of(call_id))
    assert started["to"]["_id"] == grace.id and started["kind"] == "video"

    assert (await grace_b.call("answerCall", {"callId": call_id, "sdp": ANSWER})) == {"ok": True, "callId": call_id}
    assert (await ada_a.wait_for("callAnswered", of(call_id)))["sdp"] == ANSWER
    await grace_a.wait_for("callAnsweredElsewhere", of(call_id))

    # Candidates go to the other party's one socket in the call, across nodes, both ways.
    assert (await ada_a.call("iceCandidate", {"callId": call_id, "candidate": CANDIDATE}))["ok"]
    assert (await grace_b.wait_for("iceCandidate", of(call_id)))["candidate"] == CANDIDATE
    reply = {**CANDIDATE, "candidate": CANDIDATE["candidate"].replace("192.0.2.1", "192.0.2.2"), "extra": "dropped"}
    assert (await grace_b.call("iceCandidate", {"callId": call_id, "candidate": reply}))["ok"]
    heard = await ada_a.wait_for("iceCandidate", of(call_id))
    assert heard["candidate"] == {key: value for key, value in reply.items() if key != "extra"}

    assert (await ada_a.call("endCall", {"callId": call_id}))["ok"]
    for device in (ada_a, ada_b, grace_b, grace_a):
        assert await device.wait_for("callEnded", of(call_id)) == {"callId": call_id, "reason": "ended"}
    # Only the sockets in the call heard the relays: the other devices heard the end, never them.
    for device in (ada_b, grace_a):
        assert device.received("iceCandidate") == [] and device.received("callAnswered") == []
    assert ada_a.received("callStarted") == [] and ada_a.received("incomingCall") == []

    message = await grace_b.wait_for("receiveMessage", lambda data: data.get("type") == "call")
    assert message["sender"]["_id"] == ada.id and message["receiver"]["_id"] == grace.id
    assert message["call"]["kind"] == "video" and message["call"]["status"] == "ended"
    assert message["call"]["durationSeconds"] >= 0 and message["text"].startswith("Video call (")
    assert (await ada_b.wait_for("messageSent", lambda data: data.get("type") == "call"))["_id"] == message["_id"]

    # The thread, the conversation list and sync all show it.
    status, page = await get(calls_cluster, f"/api/messages/{ada.id}", grace, node="b")
    assert status == 200 and page[-1]["_id"] == message["_id"] and page[-1]["call"] == message["call"]
    status, conversations = await get(calls_cluster, "/api/messages/conversations", ada)
    assert status == 200 and conversations[0]["lastMessage"]["type"] == "call"
    status, synced = await get(calls_cluster, "/api/messages/sync?after=0", grace, node="b")
    assert status == 200 and [m["_id"] for m in synced["messages"] if m.get("type") == "call"] == [message["_id"]]


async def test_rejected_busy_and_nobody_stays_busy(calls_cluster, user, connect):
    ada, grace, carol = await user(), await user(), await user()
    ada_a, grace_b, carol_a = await connect(ada, "a"), await connect(grace, "b"), await connect(carol, "a")

    first = await place(ada_a, grace, kind="audio")
    await grace_b.wait_for("incomingCall", of(first))
    # Grace is in a call (ringing): Carol's call to her ends at once as busy, and leaves a message.
    second = await place(carol_a, grace)
    assert await carol_a.wait_for("callEnded", of(second)) == {"callId": second, "reason": "busy"}
    busy = await carol_a.wait_for("messageSent", lambda data: data.get("type") == "call")
    assert busy["call"] == {"kind": "video", "status": "busy", "durationSeconds": 0}
    # Ada, in a call herself, cannot place another.
    ack = await ada_a.call("callUser", {"to": carol.id, "kind": "audio", "sdp": OFFER})
    assert ack["ok"] is False and ack["error"]["code"] == "busy"

    assert (await grace_b.call("rejectCall", {"callId": first}))["ok"]
    assert (await ada_a.wait_for("callEnded", of(first)))["reason"] == "rejected"
    rejected = await ada_a.wait_for("messageSent", lambda data: data.get("call", {}).get("status") == "rejected")
    assert rejected["call"]["kind"] == "audio" and rejected["text"] == "Declined audio call"
    # Rejected is over: a second reject is refused clearly, and both are free to call again.
    ack = await grace_b.call("rejectCall", {"callId": first})
    assert ack["error"]["code"] == "call_ended"
    third = await place(carol_a, grace)
    await grace_b.wait_for("incomingCall", of(third))
    assert (await carol_a.call("endCall", {"callId": third}))["ok"]
    assert (await grace_b.wait_for("callEnded", of(third)))["reason"] == "ended"
    cancelled = await grace_b.wait_for("receiveMessage", lambda data: data.get("text") == "Missed video call")
    assert cancelled["call"]["status"] == "missed"


async def test_a_call_nobody_answers_is_missed_and_shows_in_the_thread(calls_cluster, user, connect):
    ada, grace = await user(), await user()
    ada_a, grace_b = await connect(ada, "a"), await connect(grace, "b")
    call_id = await place(ada_a, grace)
    await grace_b.wait_for("incomingCall", of(call_id))
    for device in (ada_a, grace_b):  # CALL_RING_SECONDS=2, a sweep every 0.2 s
        assert await device.wait_for("callEnded", of(call_id), timeout=6) == {"callId": call_id, "reason": "missed"}
    missed = await grace_b.wait_for("receiveMessage", lambda data: data.get("type") == "call")
    assert missed["call"] == {"kind": "video", "status": "missed", "durationSeconds": 0}
    # Too late to answer.
    ack = await grace_b.call("answerCall", {"callId": call_id, "sdp": ANSWER})
    assert ack["ok"] is False and ack["error"]["code"] == "call_not_ringing"


async def test_a_callee_with_no_socket_is_offline(calls_cluster, user, connect):
    ada, grace = await user(), await user()
    ada_a = await connect(ada, "a")
    call_id = await place(ada_a, grace)
    assert await ada_a.wait_for("callEnded", of(call_id)) == {"callId": call_id, "reason": "offline"}
    await ada_a.wait_for("messageSent", lambda data: data.get("clientId") == f"call-{call_id}")
    status, page = await get(calls_cluster, f"/api/messages/{ada.id}", grace)
    assert status == 200 and page[-1]["call"]["status"] == "offline" and page[-1]["text"] == "Missed video call (offline)"


async def test_a_party_whose_socket_leaves_is_lost_and_both_are_free_again(calls_cluster, user, connect):
    ada, grace = await user(), await user()
    ada_a, grace_b = await connect(ada, "a"), await connect(grace, "b")
    call_id = await place(ada_a, grace)
    await grace_b.wait_for("incomingCall", of(call_id))
    assert (await grace_b.call("answerCall", {"callId": call_id, "sdp": ANSWER}))["ok"]
    await ada_a.close()
    assert await grace_b.wait_for("callEnded", of(call_id), timeout=8) == {"callId": call_id, "reason": "lost"}
    lost = await grace_b.wait_for("receiveMessage", lambda data: data.get("type") == "call")
    assert lost["call"]["status"] == "lost"
    ada_again = await connect(ada, "b")
    again = await place(ada_again, grace)
    await grace_b.wait_for("incomingCall", of(again))


async def test_a_party_that_comes_back_on_another_node_keeps_the_call(calls_cluster, user, connect):
    ada, grace, alan, joan = await user(), await user(), await user(), await user()
    ada_a, grace_b = await connect(ada, "a"), await connect(grace, "b")
    call_id = await place(ada_a, grace)
    await grace_b.wait_for("incomingCall", of(call_id))
    assert (await grace_b.call("answerCall", {"callId": call_id, "sdp": ANSWER}))["ok"]
    await ada_a.wait_for("callAnswered", of(call_id))

    await ada_a.close()  # Ada's network drops; her client reconnects, through node b this time
    ada_back = await connect(ada, "b")
    relayed = {**CANDIDATE, "candidate": CANDIDATE["candidate"] + " generation 1"}

    async def grace_signals():
        assert (await grace_b.call("iceCandidate", {"callId": call_id, "candidate": relayed}))["ok"]
        assert ada_back.received("iceCandidate")

    await eventually(grace_signals)  # the new socket is Ada's in the call: candidates reach it
    assert (await ada_back.call("iceCandidate", {"callId": call_id, "candidate": CANDIDATE}))["ok"]

    # Past CALL_LOST_AFTER_SECONDS: a probe call of two others rings out (2 s) after it; the call
    # was not lost meanwhile.
    alan_a, joan_b = await connect(alan, "a"), await connect(joan, "b")
    probe = await place(alan_a, joan)
    assert (await joan_b.wait_for("callEnded", of(probe), timeout=6))["reason"] == "missed"
    assert grace_b.received("callEnded") == [] and ada_back.received("callEnded") == []
    assert (await ada_back.call("endCall", {"callId": call_id}))["ok"]
    assert (await grace_b.wait_for("callEnded", of(call_id)))["reason"] == "ended"


async def test_a_call_redis_lost_ends_as_lost_for_its_parties(calls_cluster, stores, user, connect):
    """Redis restarted empty (or failed over without the call's keys): each node holding a party
    finds the call gone at its next lease renewal and tells its socket; both are free again."""
    ada, grace = await user(), await user()
    ada_a, grace_b = await connect(ada, "a"), await connect(grace, "b")
    call_id = await place(ada_a, grace)
    await grace_b.wait_for("incomingCall", of(call_id))
    assert (await grace_b.call("answerCall", {"callId": call_id, "sdp": ANSWER}))["ok"]
    await ada_a.wait_for("callAnswered", of(call_id))

    prefix = calls_cluster.stack.env["REDIS_PREFIX"]
    client = redis.Redis.from_url(stores.redis_url)
    try:
        await client.delete(call_key(prefix, call_id), call_busy_key(prefix, ada.id), call_busy_key(prefix, grace.id),
                            calls_due_key(prefix))
    finally:
        await client.aclose()
    for party in (ada_a, grace_b):
        assert await party.wait_for("callEnded", of(call_id)) == {"callId": call_id, "reason": "lost"}
    again = await place(grace_b, ada)
    await ada_a.wait_for("incomingCall", of(again))
    assert (await ada_a.call("rejectCall", {"callId": again}))["ok"]


@pytest.mark.tally(ATTACK, "calls: another user answers, signals, rejects or ends a call by its id")
async def test_only_the_two_parties_signal_a_call(calls_cluster, user, connect):
    ada, grace, mallory = await user(), await user(), await user()
    ada_a, grace_b, grace_other = await connect(ada, "a"), await connect(grace, "b"), await connect(grace, "a")
    intruder = await connect(mallory, "b")
    call_id = await place(ada_a, grace)
    await grace_b.wait_for("incomingCall", of(call_id))

    # The id leaked: a third user can neither answer, nor reject, nor signal, nor end it.
    for event, payload in (("answerCall", {"callId": call_id, "sdp": ANSWER}), ("rejectCall", {"callId": call_id}),
                           ("iceCandidate", {"callId": call_id, "candidate": CANDIDATE}),
                           ("endCall", {"callId": call_id})):
        ack = await intruder.call(event, payload)
        assert ack["ok"] is False and ack["error"]["code"] == "unknown_call", (event, ack)
    # The caller cannot answer their own call.
    assert (await ada_a.call("answerCall", {"callId": call_id, "sdp": ANSWER}))["error"]["code"] == "unknown_call"

    assert (await grace_b.call("answerCall", {"callId": call_id, "sdp": ANSWER}))["ok"]
    await ada_a.wait_for("callAnswered", of(call_id))
    # Grace's other device is not the one in the call: it cannot inject candidates.
    ack = await grace_other.call("iceCandidate", {"callId": call_id, "candidate": CANDIDATE})
    assert ack["error"]["code"] == "not_in_call"
    for event, payload in (("iceCandidate", {"callId": call_id, "candidate": CANDIDATE}),
                           ("endCall", {"callId": call_id})):
        assert (await intruder.call(event, payload))["error"]["code"] == "unknown_call"

    # None of it reached the parties: the first candidate Ada hears is Grace's, and the call ends
    # only when a party ends it.
    assert (await grace_b.call("iceCandidate", {"callId": call_id, "candidate": CANDIDATE}))["ok"]
    await ada_a.wait_for("iceCandidate", of(call_id))
    assert len(ada_a.received("iceCandidate")) == 1 and ada_a.received("callEnded") == []
    assert (await grace_b.call("endCall", {"callId": call_id}))["ok"]
    assert (await ada_a.wait_for("callEnded", of(call_id)))["reason"] == "ended"
    assert intruder.received("incomingCall") == [] and intruder.received("callEnded") == []
    # Nor can anyone forge a call's entry in a thread: sendMessage carries no `call`.
    forged = await intruder.call("sendMessage", {"receiverId": ada.id, "text": "Missed video call", "type": "call",
                                                 "call": {"kind": "video", "status": "missed", "durationSeconds": 0}})
    assert forged["ok"] and "type" not in forged["message"] and "call" not in forged["message"]


A_CALL = "0123456789abcdef0123456789abcdef"
BAD_CALL_INPUTS = [
    ("callUser", {"kind": "video", "sdp": OFFER}, "invalid_to"),
    ("callUser", {"to": "../x", "kind": "video", "sdp": OFFER}, "invalid_to"),
    ("callUser", {"to": "u2", "kind": "fax", "sdp": OFFER}, "invalid_kind"),
    ("callUser", {"to": "u2", "kind": "video", "sdp": ""}, "invalid_sdp"),
    ("callUser", {"to": "u2", "kind": "video", "sdp": 42}, "invalid_sdp"),
    ("callUser", {"to": "u2", "kind": "video", "sdp": "v" * (16 * 1024 + 1)}, "invalid_sdp"),
    ("callUser", {"to": "u2", "kind": "video", "sdp": "v=0\x00"}, "invalid_sdp"),
    ("callUser", "u2", "invalid_payload"),
    ("answerCall", {"callId": "abc", "sdp": ANSWER}, "invalid_callId"),
    ("answerCall", {"callId": A_CALL.upper(), "sdp": ANSWER}, "invalid_callId"),
    ("answerCall", {"callId": A_CALL}, "invalid_sdp"),
    ("iceCandidate", {"callId": A_CALL, "candidate": "candidate:1"}, "invalid_candidate"),
    ("iceCandidate", {"callId": A_CALL, "candidate": {"candidate": "c" * 1025}}, "invalid_candidate.candidate"),
    ("iceCandidate", {"callId": A_CALL, "candidate": {"candidate": "", "sdpMLineIndex": -1}},
     "invalid_candidate.sdpMLineIndex"),
    ("iceCandidate", {"callId": A_CALL, "candidate": {"candidate": "", "sdpMid": "m" * 65}},
     "invalid_candidate.sdpMid"),
    ("rejectCall", {"callId": None}, "invalid_callId"),
    ("endCall", [A_CALL], "invalid_payload"),
    ("endCall", {"callId": A_CALL}, "unknown_call"),
]


@pytest.mark.tally(BAD_INPUT, "call events: wrong types, sizes and ids")
@pytest.mark.parametrize(("event", "payload", "code"), BAD_CALL_INPUTS)
async def test_bad_call_input_gets_a_code_naming_the_field(calls_cluster, user, connect, event, payload, code):
    ada = await user()
    client = await connect(ada, "b")
    ack = await client.call(event, payload)
    assert ack["ok"] is False and ack["error"]["code"] == code, ack
    assert (await client.wait_for("messageError"))["code"] == code


async def test_calling_oneself_or_an_unknown_user_is_refused(calls_cluster, user, connect):
    ada = await user()
    client = await connect(ada, "a")
    ack = await client.call("callUser", {"to": ada.id, "kind": "audio", "sdp": OFFER})
    assert ack["error"]["code"] == "invalid_to"
    ack = await client.call("callUser", {"to": "nobody-by-this-id", "kind": "audio", "sdp": OFFER})
    assert ack["error"]["code"] == "unknown_receiver"


async def test_candidates_wait_for_the_answer_and_call_events_are_rate_limited(calls_cluster, user, connect):
    ada, grace = await user(), await user()
    ada_a, grace_b = await connect(ada, "a"), await connect(grace, "b")
    call_id = await place(ada_a, grace)
    ack = await ada_a.call("iceCandidate", {"callId": call_id, "candidate": CANDIDATE})
    assert ack["error"]["code"] == "call_not_active"
    # callUser, answerCall, rejectCall and endCall share a bucket (CALL_BURST 10): one was spent.
    codes = [(await ada_a.call("endCall", {"callId": A_CALL}))["error"]["code"] for _ in range(10)]
    assert codes[:9] == ["unknown_call"] * 9 and codes[9] == "rate_limited", codes
    assert (await grace_b.call("rejectCall", {"callId": call_id}))["ok"]


async def test_ice_servers_without_turn_configured_are_empty(calls_cluster, user):
    ada = await user()
    status, body = await get(calls_cluster, "/api/calls/ice-servers", ada)
    assert (status, body) == (200, {"iceServers": []})
    async with aiohttp.ClientSession() as http:
        async with http.get(calls_cluster.gateway_url("a") + "/api/calls/ice-servers") as answer:
            assert answer.status == 401


async def test_gateway_sigkill_during_a_call_ends_it_as_lost_within_15_s_and_nobody_stays_busy(stores):
    """Default timing (CALL_LOST_AFTER_SECONDS=10). Two calls: one whose caller is on the node
    killed, one whose callee is; the survivor of each hears `lost`, and everyone can call again."""
    with running_cluster(stores, TEST_RUN_DIR / "logs" / "e2e-calls-sigkill") as cluster:
        users = [await create_user(cluster.history_url) for _ in range(4)]
        ada, grace, alan, joan = users
        clients = {who.id: await ChatClient(cluster.gateway_url(node), who.token).connect()
                   for who, node in ((ada, "a"), (grace, "b"), (alan, "b"), (joan, "a"))}
        try:
            calls = []
            for caller, callee in ((ada, grace), (alan, joan)):
                call_id = await place(clients[caller.id], callee)
                await clients[callee.id].wait_for("incomingCall", of(call_id))
                assert (await clients[callee.id].call("answerCall", {"callId": call_id, "sdp": ANSWER}))["ok"]
                await clients[caller.id].wait_for("callAnswered", of(call_id))
                calls.append(call_id)

            cluster.stack["gateway-a"].kill()
            heard = 0
            for call_id, survivor in zip(calls, (grace, alan)):
                ended = await clients[survivor.id].wait_for("callEnded", of(call_id), timeout=15)
                heard += ended["reason"] == "lost"
            messages = [await clients[survivor.id].wait_for(
                "receiveMessage" if survivor is grace else "messageSent",
                lambda data, call_id=call_id: data.get("clientId") == f"call-{call_id}")
                for call_id, survivor in zip(calls, (grace, alan))]
            stored = await stored_ids(stores.database_url, [message["_id"] for message in messages])
            RECORDED.append(("gateway SIGKILL during 2 calls", Tally(len(calls), len(stored), heard, len(calls) - heard)))
            assert heard == 2 and len(stored) == 2
            assert all(message["call"]["status"] == "lost" for message in messages)

            # Nobody is stuck busy: the users of the dead node come back on b, and every one of
            # them can be called and can call.
            for who in (ada, joan):
                await clients[who.id].close()
                clients[who.id] = await ChatClient(cluster.gateway_url("b"), who.token).connect()
            for caller, callee in ((grace, ada), (joan, alan)):
                call_id = await place(clients[caller.id], callee)
                await clients[callee.id].wait_for("incomingCall", of(call_id))
        finally:
            for client in clients.values():
                await client.close()


async def test_history_killed_as_a_call_ends_the_call_still_ends_and_its_message_follows(stores):
    """The end does not wait for history; the call's message is retried until history is back."""
    with running_cluster(stores, TEST_RUN_DIR / "logs" / "e2e-calls-history") as cluster:
        ada, grace = await create_user(cluster.history_url), await create_user(cluster.history_url)
        ada_a = await ChatClient(cluster.gateway_url("a"), ada.token).connect()
        grace_b = await ChatClient(cluster.gateway_url("b"), grace.token).connect()
        try:
            call_id = await place(ada_a, grace)
            await grace_b.wait_for("incomingCall", of(call_id))
            assert (await grace_b.call("answerCall", {"callId": call_id, "sdp": ANSWER}))["ok"]
            history = cluster.stack["history"]
            history.kill()
            assert (await ada_a.call("endCall", {"callId": call_id}))["ok"]
            for party in (ada_a, grace_b):
                assert (await party.wait_for("callEnded", of(call_id)))["reason"] == "ended"
            history.start()
            await asyncio.to_thread(history.wait_ready)
            message = await grace_b.wait_for("receiveMessage", lambda data: data.get("clientId") == f"call-{call_id}",
                                              timeout=20)
            stored = await stored_ids(stores.database_url, [message["_id"]])
            RECORDED.append(("history SIGKILL as a call ends", Tally(1, len(stored), 1, 1 - len(stored))))
            assert message["call"]["status"] == "ended" and len(stored) == 1
        finally:
            await ada_a.close()
            await grace_b.close()
