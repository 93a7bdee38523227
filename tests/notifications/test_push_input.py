"""What the push routes and the `visibility` event answer to bad input and to attacks, sent as an
attacker would: raw JSON bodies through a gateway, hand-made event payloads."""

import asyncpg
import pytest

from services.shared.push import b64url
from tests.tally import ATTACK, BAD_INPUT



@pytest.fixture
def keys(receiver):
    return receiver.new_browser().subscription()["keys"]


def body_with(good_keys: dict, changes: dict) -> dict:
    body = {"endpoint": "https://fcm.googleapis.com/fcm/send/abc", "keys": dict(good_keys)}
    for name, value in changes.items():
        if name in ("p256dh", "auth"):
            body["keys"][name] = value
        else:
            body[name] = value
    return body


NOT_ON_CURVE = b64url(b"\x04" + b"\x01" * 64)
BAD_SUBSCRIPTIONS = {
    "endpoint missing": ({"endpoint": None}, "invalid_endpoint"),
    "endpoint not a string": ({"endpoint": 42}, "invalid_endpoint"),
    "endpoint http": ({"endpoint": "http://fcm.googleapis.com/fcm/send/abc"}, "invalid_endpoint"),
    "endpoint too long": ({"endpoint": "https://fcm.googleapis.com/" + "a" * 2100}, "invalid_endpoint"),
    "endpoint with a space": ({"endpoint": "https://fcm.googleapis.com/a b"}, "invalid_endpoint"),
    "endpoint with credentials": ({"endpoint": "https://user:pw@fcm.googleapis.com/x"}, "invalid_endpoint"),
    "p256dh too short": ({"p256dh": b64url(b"\x04" * 10)}, "invalid_p256dh"),
    "p256dh not on the curve": ({"p256dh": NOT_ON_CURVE}, "invalid_p256dh"),
    "p256dh not base64url": ({"p256dh": "!!!!"}, "invalid_p256dh"),
    "auth of 8 bytes": ({"auth": b64url(b"x" * 8)}, "invalid_auth"),
    "auth a number": ({"auth": 16}, "invalid_auth"),
    "keys missing": ({"keys": None}, "invalid_keys"),
}


@pytest.mark.tally(BAD_INPUT, "push subscription fields")
@pytest.mark.parametrize("case", sorted(BAD_SUBSCRIPTIONS))
async def test_a_bad_subscription_is_refused_naming_the_field(case, api, make_user, keys):
    changes, code = BAD_SUBSCRIPTIONS[case]
    body = body_with(keys, changes)
    status, answer = await api("POST", "/api/push/subscriptions", await make_user(), json=body)
    assert (status, answer["code"]) == (400, code)


# Endpoints that would make the notifier POST into the network it runs in (SSRF).
SSRF_ENDPOINTS = ["https://169.254.169.254/latest/meta-data", "https://10.0.0.1/push", "https://localhost/push",
                  "https://history.parley.svc.cluster.local:8101/internal/users", "https://[::1]/push",
                  "https://evil.example/push", "https://fcm.googleapis.com.evil.example/push",
                  "http://127.0.0.2:8101/internal/users", "file:///etc/passwd", "gopher://127.0.0.1/"]


@pytest.mark.tally(ATTACK, "push endpoint aimed inside the network (SSRF)")
@pytest.mark.parametrize("endpoint", SSRF_ENDPOINTS)
async def test_an_endpoint_that_is_not_a_push_service_is_refused(endpoint, api, make_user, keys):
    status, answer = await api("POST", "/api/push/subscriptions", await make_user(),
                               json={"endpoint": endpoint, "keys": keys})
    assert (status, answer["code"]) == (400, "invalid_endpoint")


@pytest.mark.tally(BAD_INPUT, "push routes: bodies that are not JSON objects")
@pytest.mark.parametrize("raw", [b"", b"not json", b"[]", b"\xff\xfe", b'"text"', b"null"])
async def test_bodies_that_are_not_objects_get_400(raw, api, make_user):
    user = await make_user()
    for method, path in (("POST", "/api/push/subscriptions"), ("DELETE", "/api/push/subscriptions"),
                         ("PUT", "/api/push/settings")):
        status, answer = await api(method, path, user, data=raw, headers={"Content-Type": "application/json"})
        assert status == 400, (method, path, answer)


@pytest.mark.tally(BAD_INPUT, "mute: conversation ids and until")
@pytest.mark.parametrize(("path_id", "body", "code"), [
    ("ada", {}, "invalid_conversationId"), ("user:", {}, "invalid_conversationId"),
    ("group:abc", {}, "invalid_conversationId"), ("chan:1", {}, "invalid_conversationId"),
    ("user:" + "a" * 65, {}, "invalid_conversationId"),
    ("SELF", {"until": "tomorrow"}, "invalid_until"), ("SELF", {"until": "2030-01-01T00:00:00"}, "invalid_until"),
    ("SELF", {"until": [1]}, "invalid_until"),
])
async def test_bad_mutes_are_refused(path_id, body, code, api, make_user):
    user, partner = await make_user(), await make_user()
    path_id = f"user:{partner.id}" if path_id == "SELF" else path_id
    status, answer = await api("PUT", f"/api/conversations/{path_id}/mute", user, json=body)
    assert (status, answer["code"]) == (400, code)


@pytest.mark.tally(BAD_INPUT, "push settings: hideText")
@pytest.mark.parametrize("body", [{}, {"hideText": "yes"}, {"hideText": 1}, {"hideText": None}])
async def test_bad_settings_are_refused(body, api, make_user):
    status, answer = await api("PUT", "/api/push/settings", await make_user(), json=body)
    assert (status, answer["code"]) == (400, "invalid_hideText")


@pytest.mark.tally(BAD_INPUT, "visibility event payloads")
@pytest.mark.parametrize("payload", [None, "visible", {"visible": "true"}, {"visible": 1}, [True], {}])
async def test_bad_visibility_payloads_get_invalid_visible(payload, connect, make_user):
    client = await connect(await make_user())
    ack = await client.call("visibility", payload)
    assert ack == {"ok": False, "error": {"message": ack["error"]["message"], "code": "invalid_visible"}}


async def test_a_user_has_at_most_ten_subscriptions(api, make_user, receiver):
    user = await make_user()
    browsers = [receiver.new_browser() for _ in range(11)]
    for browser in browsers[:10]:
        assert (await api("POST", "/api/push/subscriptions", user, json=browser.subscription()))[0] == 201
    # The same browser again refreshes its row: still 10.
    assert (await api("POST", "/api/push/subscriptions", user, json=browsers[0].subscription()))[0] == 200
    status, answer = await api("POST", "/api/push/subscriptions", user, json=browsers[10].subscription())
    assert (status, answer["code"]) == (409, "too_many_subscriptions")
    status, answer = await api("DELETE", "/api/push/subscriptions", user, json={"endpoint": browsers[0].endpoint})
    assert (status, answer["removed"]) == (200, True)
    assert (await api("POST", "/api/push/subscriptions", user, json=browsers[10].subscription()))[0] == 201


@pytest.mark.tally(ATTACK, "remove another user's push subscription")
async def test_nobody_removes_another_users_subscription(cluster, api, make_user, receiver):
    owner, attacker = await make_user(), await make_user()
    browser = receiver.new_browser()
    assert (await api("POST", "/api/push/subscriptions", owner, json=browser.subscription()))[0] == 201
    status, answer = await api("DELETE", "/api/push/subscriptions", attacker, json={"endpoint": browser.endpoint})
    assert (status, answer["removed"]) == (200, False)
    database = await asyncpg.connect(cluster.stack.env["DATABASE_URL"])
    try:
        assert await database.fetchval("SELECT user_id FROM push_subscriptions WHERE endpoint = $1",
                                       browser.endpoint) == owner.id
    finally:
        await database.close()


@pytest.mark.tally(ATTACK, "mute a group one is not in (learn that it exists)")
async def test_muting_a_group_i_am_not_in_is_unknown_group(api, make_user):
    ada, grace, outsider = await make_user(), await make_user(), await make_user()
    status, group = await api("POST", "/api/groups", ada, json={"name": "Private", "memberIds": [grace.id]})
    assert status == 201
    for gid in (group["_id"], "999999999"):  # existing or not: the same answer
        status, answer = await api("PUT", f"/api/conversations/group:{gid}/mute", outsider, json={})
        assert (status, answer["code"]) == (404, "unknown_group")


@pytest.mark.tally(ATTACK, "push routes without a token")
async def test_push_routes_need_a_token(api):
    for method, path in (("GET", "/api/push/vapid-public-key"), ("POST", "/api/push/subscriptions"),
                         ("DELETE", "/api/push/subscriptions"), ("GET", "/api/push/settings"),
                         ("PUT", "/api/conversations/user:abc/mute")):
        status, _ = await api(method, path, json={})
        assert status == 401, (method, path)
