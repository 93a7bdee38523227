"""The history app as a client calls it, for the tests of groups, reactions, replies and edits:
its public routes with a user's JWT, its internal ones with the gateway's token, and the events
its handlers emit, recorded on their way into the real notifier (which publishes them to Redis
as in production)."""

from aiohttp.test_utils import TestClient

from services.shared.keys import user_room
from services.shared.notify import ClientNotifier
from tests.support import GATEWAY_TOKEN, User, create_user

GATEWAY = {"X-Internal-Token": GATEWAY_TOKEN}


class RecordingNotifier:
    """Wraps the notifier's emit to rooms: every emit is written down as (event, data, rooms),
    then published as it would be."""

    def __init__(self, monkeypatch):
        self.emits: list[tuple[str, object, list[str]]] = []
        publish = ClientNotifier.emit_to_rooms

        async def emit_to_rooms(notifier: ClientNotifier, event: str, data: object, rooms: list[str]) -> None:
            self.emits.append((event, data, list(rooms)))
            await publish(notifier, event, data, rooms)

        monkeypatch.setattr(ClientNotifier, "emit_to_rooms", emit_to_rooms)

    def of(self, event: str) -> list[tuple[object, set[str]]]:
        return [(data, set(rooms)) for name, data, rooms in self.emits if name == event]

    def payloads(self, event: str) -> list[tuple[object, set[str]]]:
        """Like `of`, for a change-feed event: its payload, once its last argument is checked to be
        a feed offset (a decimal position)."""
        found = []
        for data, rooms in self.of(event):
            assert isinstance(data, tuple) and len(data) == 2 and data[1].isdigit(), f"{event} has no offset: {data!r}"
            found.append((data[0], rooms))
        return found


class Api:
    """The group routes as a client calls them (public: a user's JWT; internal: the gateway's token)."""

    def __init__(self, public: TestClient, internal: TestClient, recorder: RecordingNotifier):
        self.public, self.internal, self.events = public, internal, recorder

    async def user(self) -> User:
        return await create_user(str(self.internal.make_url("")).rstrip("/"))

    async def call(self, method: str, path: str, user: User, status: int = 200, **kwargs):
        answer = await self.public.request(method, path, headers=user.auth_headers, **kwargs)
        body = await answer.json()
        assert answer.status == status, body
        return body, answer.headers

    async def create(self, creator: User, *members: User, name: str = "Climbing") -> dict:
        body, _ = await self.call("POST", "/api/groups", creator, 201,
                                  json={"name": name, "memberIds": [m.id for m in members]})
        return body

    async def store(self, *messages: dict) -> list[dict]:
        answer = await self.internal.post("/internal/messages/batch", json={"messages": list(messages)}, headers=GATEWAY)
        body = await answer.json()
        assert answer.status == 200, body
        return body["results"]

    async def send(self, sender: User, group: dict, text: str, client_id: str | None = None) -> dict:
        [result] = await self.store({"senderId": sender.id, "groupId": group["_id"], "text": text, "clientId": client_id})
        assert "message" in result, result
        return result

    async def conversations(self, user: User) -> list[dict]:
        return (await self.call("GET", "/api/messages/conversations", user))[0]


def rooms(*users: User) -> set[str]:
    return {user_room(user.id) for user in users}


def code_of(body: dict) -> str:
    return body["code"]
