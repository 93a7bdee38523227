"""Group conversations in history, against real Postgres (issue 15): every route, membership
checked everywhere, idempotent sends, ordering, unread counts and reads, deletion, the
conversation list, the member limit, and the events the group handler emits.

The events are recorded on their way into the real notifier (which publishes them to Redis as
in production): what is checked is which event goes to which members' rooms.
"""

import re
import uuid

import asyncpg
import pytest

from services.shared.auth import issue_token
from services.shared.keys import user_room
from tests.support import JWT, PRESENCE_TOKEN, User
from tests.integration.history_client import GATEWAY, Api, code_of, rooms
from tests.tally import ATTACK

# --- create, read, change ------------------------------------------------------------------


async def test_creating_a_group_makes_me_its_admin_and_tells_every_member(api):
    me, ada, bob = await api.user(), await api.user(), await api.user()

    group = await api.create(me, ada, bob, ada)  # a repeated id counts once

    assert re.fullmatch(r"[0-9]+", group["_id"]) and group["name"] == "Climbing" and group["image"] == ""
    assert group["createdBy"] == me.id and group["createdAt"].endswith("Z")
    assert [(m["_id"], m["role"], m["readUpTo"]) for m in group["members"]] == [
        (me.id, "admin", None), *sorted([(ada.id, "member", None), (bob.id, "member", None)])]
    assert {m["_id"]: m["userName"] for m in group["members"]}[ada.id] == ada.user_name
    assert api.events.payloads("groupUpdated") == [({"group": group}, rooms(me, ada, bob))]
    fetched, _ = await api.call("GET", f"/api/groups/{group['_id']}", bob)
    assert fetched == group


@pytest.mark.parametrize(("body", "code"), [
    ({"name": "", "memberIds": ["x"]}, "invalid_name"),
    ({"name": "n" * 101, "memberIds": ["x"]}, "invalid_name"),
    ({"name": "a\x00b", "memberIds": ["x"]}, "invalid_name"),
    ({"name": "ok", "memberIds": []}, "invalid_memberIds"),
    ({"name": "ok", "memberIds": ["bad id/"]}, "invalid_memberIds.0"),
    ({"name": "ok", "memberIds": ["x"], "image": "i" * 2049}, "invalid_image"),
    ({"name": "ok"}, "invalid_memberIds"),
])
async def test_a_bad_group_is_refused_naming_the_field(api, body, code):
    me = await api.user()
    answer, _ = await api.call("POST", "/api/groups", me, 400, json=body)
    assert code_of(answer) == code


async def test_a_group_of_only_me_or_of_unknown_users_is_refused_and_nothing_is_stored(api):
    me, ada = await api.user(), await api.user()
    alone, _ = await api.call("POST", "/api/groups", me, 400, json={"name": "me", "memberIds": [me.id]})
    unknown, _ = await api.call("POST", "/api/groups", me, 400, json={"name": "x", "memberIds": [ada.id, "nobody-here"]})
    assert code_of(alone) == code_of(unknown) == "invalid_memberIds"
    assert await api.conversations(ada) == [] and api.events.emits == []


async def test_only_an_admin_renames_a_group(api):
    me, ada = await api.user(), await api.user()
    group = await api.create(me, ada)

    refused, _ = await api.call("PATCH", f"/api/groups/{group['_id']}", ada, 403, json={"name": "mine now"})
    renamed, _ = await api.call("PATCH", f"/api/groups/{group['_id']}", me, json={"name": "Bouldering",
                                                                                 "image": "https://img/x.png"})

    assert code_of(refused) == "forbidden"
    assert (renamed["name"], renamed["image"]) == ("Bouldering", "https://img/x.png")
    assert api.events.payloads("groupUpdated")[-1] == ({"group": renamed}, rooms(me, ada))
    again, _ = await api.call("GET", f"/api/groups/{group['_id']}", ada)
    assert again["name"] == "Bouldering"


async def test_unknown_and_malformed_group_ids(api):
    me = await api.user()
    unknown, _ = await api.call("GET", "/api/groups/999999999999", me, 404)
    malformed, _ = await api.call("GET", "/api/groups/abc", me, 400)
    assert (code_of(unknown), code_of(malformed)) == ("unknown_group", "invalid_groupId")


# --- members -------------------------------------------------------------------------------


async def test_an_admin_adds_members_who_start_with_nothing_unread_and_learn_the_group(api):
    me, ada, bob = await api.user(), await api.user(), await api.user()
    group = await api.create(me, ada)
    await api.send(me, group, "before bob")

    after, _ = await api.call("POST", f"/api/groups/{group['_id']}/members", me, json={"userIds": [bob.id, ada.id]})

    assert [m["_id"] for m in after["members"]] == [me.id, ada.id, bob.id]
    [bob_entry] = await api.conversations(bob)
    assert bob_entry["unreadCount"] == 0 and bob_entry["_id"]["memberCount"] == 3
    [added] = [m for m in after["members"] if m["_id"] == bob.id]
    assert api.events.payloads("groupUpdated")[-1] == ({"group": after}, rooms(me, ada, bob))
    assert api.events.payloads("memberAdded") == [({"groupId": group["_id"], "member": added}, rooms(me, ada, bob))]


async def test_a_member_cannot_add_and_unknown_users_are_refused(api):
    me, ada, bob = await api.user(), await api.user(), await api.user()
    group = await api.create(me, ada)
    member_try, _ = await api.call("POST", f"/api/groups/{group['_id']}/members", ada, 403, json={"userIds": [bob.id]})
    unknown, _ = await api.call("POST", f"/api/groups/{group['_id']}/members", me, 400,
                                json={"userIds": [bob.id, "no-such-user"]})
    assert (code_of(member_try), code_of(unknown)) == ("forbidden", "invalid_userIds")
    current, _ = await api.call("GET", f"/api/groups/{group['_id']}", me)
    assert [m["_id"] for m in current["members"]] == [me.id, ada.id]  # bob not added by the refused call


@pytest.mark.tally(ATTACK, "a removed member reads, sends, searches, syncs, pages, changes or lists a group")
async def test_a_removed_member_hears_it_once_and_then_is_refused_everywhere(api):
    me, ada, eve = await api.user(), await api.user(), await api.user()
    group = await api.create(me, ada, eve)
    before = await api.send(me, group, "secret plans")
    gid = group["_id"]

    await api.call("DELETE", f"/api/groups/{gid}/members/{eve.id}", me)
    after = await api.send(me, group, "more secret plans")

    assert api.events.payloads("memberRemoved") == [({"groupId": gid, "userId": eve.id}, rooms(me, ada, eve))]
    await assert_refused_everywhere(api, eve, group, before["message"]["_id"])
    sync, _ = await api.call("GET", f"/api/messages/sync?after={before['message']['_id']}", eve)
    assert sync["messages"] == []
    # Nothing more reaches her: the next message's recipients and the next events leave her out.
    assert eve.id not in after["recipients"]
    await api.call("PATCH", f"/api/groups/{gid}", me, json={"name": "new"})
    assert user_room(eve.id) not in api.events.payloads("groupUpdated")[-1][1]


@pytest.mark.tally(ATTACK, "a non-member reads, sends, searches, syncs, pages, changes or lists a group")
async def test_a_stranger_is_refused_everywhere(api):
    me, ada, stranger = await api.user(), await api.user(), await api.user()
    group = await api.create(me, ada)
    sent = await api.send(me, group, "secret plans")
    await assert_refused_everywhere(api, stranger, group, sent["message"]["_id"])


async def assert_refused_everywhere(api: Api, outsider: User, group: dict, message_id: str) -> None:
    gid = group["_id"]
    for method, path, body in [
        ("GET", f"/api/groups/{gid}", None),
        ("GET", f"/api/groups/{gid}/messages", None),
        ("PUT", f"/api/groups/{gid}/read", None),
        ("PATCH", f"/api/groups/{gid}", {"name": "pwned"}),
        ("POST", f"/api/groups/{gid}/members", {"userIds": [outsider.id]}),
        ("PUT", f"/api/groups/{gid}/members/{outsider.id}", {"role": "admin"}),
        ("DELETE", f"/api/groups/{gid}/members/{group['createdBy']}", None),
    ]:
        answer, _ = await api.call(method, path, outsider, 403, json=body)
        assert code_of(answer) == "not_a_member", (method, path)
    [sent] = await api.store({"senderId": outsider.id, "groupId": gid, "text": "let me in"})
    assert sent == {"error": {"message": "You are not a member of this group", "code": "not_a_member"}, "status": 403}
    found, _ = await api.call("GET", "/api/messages/search?q=secret", outsider)
    assert found == []
    synced, _ = await api.call("GET", "/api/messages/sync?after=0", outsider)
    assert all(m.get("groupId") != gid for m in synced["messages"])
    deleted, _ = await api.call("DELETE", f"/api/messages/{message_id}", outsider, 404)
    assert code_of(deleted) == "not_found"
    assert all(c["_id"]["_id"] != gid for c in await api.conversations(outsider) if c.get("group"))


async def test_anyone_leaves_but_the_last_admin_must_hand_over_first(api):
    me, ada, bob = await api.user(), await api.user(), await api.user()
    group = await api.create(me, ada, bob)
    gid = group["_id"]

    kick, _ = await api.call("DELETE", f"/api/groups/{gid}/members/{bob.id}", ada, 403)
    last_admin, _ = await api.call("DELETE", f"/api/groups/{gid}/members/{me.id}", me, 409)
    demote_self, _ = await api.call("PUT", f"/api/groups/{gid}/members/{me.id}", me, 409, json={"role": "member"})
    assert (code_of(kick), code_of(last_admin), code_of(demote_self)) == ("forbidden", "last_admin", "last_admin")

    await api.call("DELETE", f"/api/groups/{gid}/members/{bob.id}", bob)  # leaving
    promoted, _ = await api.call("PUT", f"/api/groups/{gid}/members/{ada.id}", me, json={"role": "admin"})
    assert {m["_id"]: m["role"] for m in promoted["members"]} == {me.id: "admin", ada.id: "admin"}
    assert api.events.payloads("groupUpdated")[-1] == ({"group": promoted}, rooms(me, ada))
    await api.call("DELETE", f"/api/groups/{gid}/members/{me.id}", me)
    remaining, _ = await api.call("GET", f"/api/groups/{gid}", ada)
    assert [(m["_id"], m["role"]) for m in remaining["members"]] == [(ada.id, "admin")]


async def test_role_changes_are_validated(api):
    me, ada = await api.user(), await api.user()
    group = await api.create(me, ada)
    bad, _ = await api.call("PUT", f"/api/groups/{group['_id']}/members/{ada.id}", me, 400, json={"role": "owner"})
    absent, _ = await api.call("PUT", f"/api/groups/{group['_id']}/members/not-in-it", me, 404, json={"role": "admin"})
    by_member, _ = await api.call("PUT", f"/api/groups/{group['_id']}/members/{me.id}", ada, 403,
                                  json={"role": "member"})
    assert (code_of(bad), code_of(absent), code_of(by_member)) == ("invalid_role", "not_found", "forbidden")


# --- messages ------------------------------------------------------------------------------


async def test_a_group_message_is_the_1to1_object_with_a_group_id_and_names_its_recipients(api):
    me, ada, bob = await api.user(), await api.user(), await api.user()
    group = await api.create(me, ada, bob)

    result = await api.send(me, group, "hello all", client_id="c-1")

    message = result["message"]
    assert result["created"] is True and sorted(result["recipients"]) == sorted([ada.id, bob.id])
    assert message["groupId"] == group["_id"] and message["receiver"] is None
    assert message["sender"]["_id"] == me.id and message["sender"]["userName"] == me.user_name
    assert (message["isRead"], message["readAt"], message["clientId"]) == (False, None, "c-1")


async def test_exactly_one_of_receiver_and_group(api):
    me, ada = await api.user(), await api.user()
    group = await api.create(me, ada)
    for body in ({"senderId": me.id, "text": "x"},
                 {"senderId": me.id, "receiverId": ada.id, "groupId": group["_id"], "text": "x"},
                 {"senderId": me.id, "groupId": "1.5", "text": "x"}):
        answer = await api.internal.post("/internal/messages/batch", json={"messages": [body]}, headers=GATEWAY)
        assert answer.status == 400, body
    [unknown] = await api.store({"senderId": me.id, "groupId": "999999999999", "text": "x"})
    assert unknown["error"]["code"] == "unknown_group" and unknown["status"] == 404


async def test_a_retried_client_id_is_stored_once_in_a_batch_and_across_batches(api, stores):
    me, ada = await api.user(), await api.user()
    group = await api.create(me, ada)
    copy = {"senderId": me.id, "groupId": group["_id"], "text": "once", "clientId": "retry-1"}

    first, second = await api.store(copy, copy)
    [third] = await api.store(copy)

    assert first["created"] is True and second["created"] is False and third["created"] is False
    assert first["message"]["_id"] == second["message"]["_id"] == third["message"]["_id"]
    assert "recipients" not in second and "recipients" not in third
    page, _ = await api.call("GET", f"/api/groups/{group['_id']}/messages", ada)
    assert [m["text"] for m in page] == ["once"]
    [entry] = await api.conversations(ada)
    assert entry["unreadCount"] == 1


async def test_mixed_batches_keep_each_conversation_in_send_order(api, stores):
    me, ada, bob = await api.user(), await api.user(), await api.user()
    group = await api.create(me, ada, bob)
    batch = []
    for n in range(6):
        batch.append({"senderId": [me, ada, bob][n % 3].id, "groupId": group["_id"], "text": f"g{n}"})
        batch.append({"senderId": me.id, "receiverId": ada.id, "text": f"d{n}"})
    results = await api.store(*batch)

    assert all(r["created"] for r in results)
    page, _ = await api.call("GET", f"/api/groups/{group['_id']}/messages", bob)
    assert [m["text"] for m in page] == [f"g{n}" for n in range(6)]
    direct, _ = await api.call("GET", f"/api/messages/{ada.id}", me)
    assert [m["text"] for m in direct] == [f"d{n}" for n in range(6)]
    connection = await asyncpg.connect(stores.database_url)
    try:
        seqs = [row["group_seq"] for row in await connection.fetch(
            "SELECT group_seq FROM messages WHERE group_id = $1 ORDER BY id", int(group["_id"]))]
    finally:
        await connection.close()
    assert seqs == list(range(1, 7))


async def test_group_history_is_paged_newest_page_first_with_a_next_link(api):
    me, ada = await api.user(), await api.user()
    group = await api.create(me, ada)
    for n in range(5):
        await api.send([me, ada][n % 2], group, f"m{n}")
    gid = group["_id"]

    page, headers = await api.call("GET", f"/api/groups/{gid}/messages?limit=2", ada)
    assert [m["text"] for m in page] == ["m3", "m4"]
    link = re.fullmatch(r'<(.+)>; rel="next"', headers["Link"]).group(1)
    older, headers = await api.call("GET", link, ada)
    assert [m["text"] for m in older] == ["m1", "m2"]
    oldest, headers = await api.call("GET", re.fullmatch(r'<(.+)>; rel="next"', headers["Link"]).group(1), ada)
    assert [m["text"] for m in oldest] == ["m0"] and "Link" not in headers
    bad, _ = await api.call("GET", f"/api/groups/{gid}/messages?limit=0", ada, 400)
    assert code_of(bad) == "invalid_limit"


async def test_unread_counts_per_member_and_reading_the_group(api):
    me, ada, bob = await api.user(), await api.user(), await api.user()
    group = await api.create(me, ada, bob)
    gid = group["_id"]
    await api.send(me, group, "one")
    two = await api.send(bob, group, "two")
    last = await api.send(me, group, "three")

    unread = {user.id: (await api.conversations(user))[0]["unreadCount"] for user in (me, ada, bob)}
    assert unread == {me.id: 0, ada.id: 3, bob.id: 1}  # sending reads the group for the sender

    read, _ = await api.call("PUT", f"/api/groups/{gid}/read", ada)
    assert read == {"count": 3, "upTo": last["message"]["_id"]}
    assert api.events.payloads("groupRead") == [({"groupId": gid, "readerId": ada.id, "upTo": last["message"]["_id"]},
                                           rooms(me, ada, bob))]
    again, _ = await api.call("PUT", f"/api/groups/{gid}/read", ada)
    assert again == {"count": 0, "upTo": last["message"]["_id"]} and len(api.events.payloads("groupRead")) == 1
    assert (await api.conversations(ada))[0]["unreadCount"] == 0
    members = {m["_id"]: m["readUpTo"] for m in (await api.call("GET", f"/api/groups/{gid}", me))[0]["members"]}
    assert members == {me.id: last["message"]["_id"], ada.id: last["message"]["_id"], bob.id: two["message"]["_id"]}


async def test_the_sender_deletes_a_group_message_and_every_member_hears_it(api):
    me, ada, bob = await api.user(), await api.user(), await api.user()
    group = await api.create(me, ada, bob)
    first = (await api.send(me, group, "keep"))["message"]
    second = (await api.send(me, group, "oops"))["message"]

    not_sender, _ = await api.call("DELETE", f"/api/messages/{second['_id']}", ada, 403)
    body, _ = await api.call("DELETE", f"/api/messages/{second['_id']}", me)

    assert code_of(not_sender) == "forbidden"
    deleted = {"_id": second["_id"], "sender": me.id, "receiver": None, "groupId": group["_id"]}
    [((payload, offset), to)] = api.events.of("messageDeleted")
    # The deletion's change-feed position rides along: connection-state recovery's offset.
    assert (payload, to) == (deleted, rooms(me, ada, bob)) and int(offset) > int(second["_id"])
    assert body["groupId"] == group["_id"]
    page, _ = await api.call("GET", f"/api/groups/{group['_id']}/messages", ada)
    assert [m["_id"] for m in page] == [first["_id"]]
    [entry] = await api.conversations(bob)
    assert entry["lastMessage"]["_id"] == first["_id"]
    synced, _ = await api.call("GET", f"/api/messages/sync?after={first['_id']}", bob)
    assert synced["deleted"] == [deleted] and synced["messages"] == []


async def test_a_1to1_deletion_still_reaches_both_sides_without_a_group_id(api):
    me, ada = await api.user(), await api.user()
    [result] = await api.store({"senderId": me.id, "receiverId": ada.id, "text": "x"})
    body, _ = await api.call("DELETE", f"/api/messages/{result['message']['_id']}", me)
    assert body == {"message": "Message deleted", "_id": result["message"]["_id"], "sender": me.id, "receiver": ada.id}


async def test_the_conversation_list_mixes_groups_and_partners_newest_first(api):
    me, ada, bob = await api.user(), await api.user(), await api.user()
    climbing = await api.create(me, ada, name="Climbing")
    chess = await api.create(me, ada, bob, name="Chess")
    await api.store({"senderId": ada.id, "receiverId": me.id, "text": "direct 1"})
    await api.send(ada, climbing, "climb")
    await api.store({"senderId": bob.id, "receiverId": me.id, "text": "direct 2"})
    await api.send(bob, chess, "chess")

    conversations = await api.conversations(me)

    assert [(c.get("group", False), c["_id"]["_id"]) for c in conversations] == [
        (True, chess["_id"]), (False, bob.id), (True, climbing["_id"]), (False, ada.id)]
    assert conversations[0]["_id"] == {"_id": chess["_id"], "name": "Chess", "image": "", "memberCount": 3}
    assert conversations[0]["lastMessage"]["text"] == "chess" and conversations[0]["lastMessage"]["groupId"] == chess["_id"]
    assert conversations[0]["lastMessage"]["receiver"] is None
    assert "group" not in conversations[1] and conversations[1]["_id"]["userName"] == bob.user_name
    assert [c["unreadCount"] for c in conversations] == [1, 1, 1, 1]
    page, headers = await api.call("GET", "/api/messages/conversations?limit=2", me)
    assert [c["_id"]["_id"] for c in page] == [chess["_id"], bob.id]
    rest, _ = await api.call("GET", re.fullmatch(r'<(.+)>; rel="next"', headers["Link"]).group(1), me)
    assert [c["_id"]["_id"] for c in rest] == [climbing["_id"], ada.id]


async def test_a_new_group_is_listed_at_once_and_moves_up_with_its_messages(api):
    me, ada = await api.user(), await api.user()
    await api.store({"senderId": ada.id, "receiverId": me.id, "text": "before the group"})
    quiet = await api.create(ada, me, name="Quiet")

    conversations = await api.conversations(me)

    assert [(c.get("group", False), c["_id"]["_id"]) for c in conversations] == [(True, quiet["_id"]), (False, ada.id)]
    assert conversations[0]["lastMessage"] is None and conversations[0]["unreadCount"] == 0
    # Pages break between an empty group and a 1:1 conversation as anywhere else.
    page, headers = await api.call("GET", "/api/messages/conversations?limit=1", me)
    rest, _ = await api.call("GET", re.fullmatch(r'<(.+)>; rel="next"', headers["Link"]).group(1), me)
    assert [c["_id"]["_id"] for c in page + rest] == [quiet["_id"], ada.id]

    await api.store({"senderId": ada.id, "receiverId": me.id, "text": "newer direct"})
    assert [c["_id"]["_id"] for c in await api.conversations(me)] == [ada.id, quiet["_id"]]
    await api.send(ada, quiet, "first words")
    listed = await api.conversations(me)
    assert [c["_id"]["_id"] for c in listed] == [quiet["_id"], ada.id]
    assert listed[0]["lastMessage"]["text"] == "first words" and listed[0]["unreadCount"] == 1


async def test_sync_and_search_cover_my_groups(api):
    me, ada, outsider = await api.user(), await api.user(), await api.user()
    group = await api.create(me, ada)
    start = (await api.store({"senderId": outsider.id, "receiverId": me.id, "text": "start"}))[0]["message"]
    grouped = (await api.send(ada, group, "granite crag at dawn"))["message"]

    synced, _ = await api.call("GET", f"/api/messages/sync?after={start['_id']}", me)
    found, _ = await api.call("GET", "/api/messages/search?q=granite", me)
    sent_found, _ = await api.call("GET", "/api/messages/search?q=granite", ada)

    assert [m["_id"] for m in synced["messages"]] == [grouped["_id"]]
    assert synced["messages"][0]["groupId"] == group["_id"]
    assert [m["_id"] for m in found] == [grouped["_id"]] == [m["_id"] for m in sent_found]


async def test_the_gateway_reads_members_for_typing_and_only_the_gateway(api):
    me, ada = await api.user(), await api.user()
    group = await api.create(me, ada)
    answer = await api.internal.get(f"/internal/groups/{group['_id']}/members", headers=GATEWAY)
    assert answer.status == 200 and sorted((await answer.json())["memberIds"]) == sorted([me.id, ada.id])
    presence = await api.internal.get(f"/internal/groups/{group['_id']}/members",
                                      headers={"X-Internal-Token": PRESENCE_TOKEN})
    unknown = await api.internal.get("/internal/groups/999999999999/members", headers=GATEWAY)
    assert presence.status == 403 and unknown.status == 404


async def test_partners_include_the_members_of_my_groups(api):
    me, ada, bob, carol = await api.user(), await api.user(), await api.user(), await api.user()
    await api.create(me, ada, bob)
    await api.store({"senderId": me.id, "receiverId": carol.id, "text": "hi"})

    answer = await api.internal.get(f"/internal/users/{me.id}/partners", headers=GATEWAY)
    many = await api.internal.post("/internal/partners", json={"userIds": [me.id, bob.id]}, headers=GATEWAY)

    assert sorted(await answer.json()) == sorted([ada.id, bob.id, carol.id])
    partners = (await many.json())["partners"]
    assert sorted(partners[me.id]) == sorted([ada.id, bob.id, carol.id])
    assert sorted(partners[bob.id]) == sorted([me.id, ada.id])


# --- the member limit ----------------------------------------------------------------------


async def insert_users(stores, count: int) -> list[User]:
    """Profiles as the social app's sync leaves them, many at once (one statement)."""
    ids = [uuid.uuid4().hex[:24] for _ in range(count)]
    connection = await asyncpg.connect(stores.database_url)
    try:
        await connection.executemany("INSERT INTO users (id, user_name) VALUES ($1, $2)",
                                     [(user_id, f"bulk-{user_id}") for user_id in ids])
    finally:
        await connection.close()
    return [User(user_id, f"bulk-{user_id}", issue_token(user_id, JWT)) for user_id in ids]


async def test_a_group_holds_the_default_1000_members_and_no_more(history, stores):
    """The real default (MAX_GROUP_MEMBERS=1000), through the app as configured by default."""
    creator, *others = await insert_users(stores, 1001)
    full = {"name": "big", "memberIds": [u.id for u in others[:999]]}
    over = {"name": "too big", "memberIds": [u.id for u in others]}

    refused = await history.post("/api/groups", json=over, headers=creator.auth_headers)
    created = await history.post("/api/groups", json=full, headers=creator.auth_headers)

    assert refused.status == 409 and (await refused.json())["code"] == "group_full"
    assert created.status == 201, await created.text()
    group = await created.json()
    assert len(group["members"]) == 1000
    more = await history.post(f"/api/groups/{group['_id']}/members", json={"userIds": [others[999].id]},
                              headers=creator.auth_headers)
    assert more.status == 409 and (await more.json())["code"] == "group_full"
    again = await history.post(f"/api/groups/{group['_id']}/members", json={"userIds": [others[0].id]},
                               headers=creator.auth_headers)
    assert again.status == 200  # someone already in is not counted twice


async def test_the_member_limit_is_the_setting(api):
    """This app is configured with MAX_GROUP_MEMBERS=6."""
    me, *others = [await api.user() for _ in range(7)]
    over, _ = await api.call("POST", "/api/groups", me, 409, json={"name": "x", "memberIds": [u.id for u in others]})
    group = await api.create(me, *others[:5])
    add, _ = await api.call("POST", f"/api/groups/{group['_id']}/members", me, 409, json={"userIds": [others[5].id]})
    assert code_of(over) == code_of(add) == "group_full"
