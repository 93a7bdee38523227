"""The Socket.IO side of a gateway node: handshake auth, rooms, and the chat events."""

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import NoReturn
from urllib.parse import quote

import socketio

from ..shared.auth import TokenVerifier, token_from_headers
from ..shared.errors import ErrorCode, InvalidField, NotAMember, ParleyError, Unauthorized, parse_model
from ..shared.internal import InternalClient
from ..shared.keys import presence_room, user_room
from ..shared.limits import GROUP_ID_RULE, MAX_WATCHED_USERS, valid_group_id
from ..shared.logs import new_request_id, request_id_var, sid_var
from ..shared.params import user_id_param
from ..shared.tasks import cancel_and_wait
from .group_members import GroupMembers
from .metrics import GatewayMetrics
from .models import MarkRead, Reaction, SendMessage
from .presence_link import PresenceLink
from .ratelimit import RateLimiter
from .recovery import Recovery
from .server import trusted_origin
from .settings import GatewaySettings
from .store_batcher import Stored, StoreBatcher

log = logging.getLogger(__name__)

AUTH_ERROR = "Authentication error"  # the guide's connect error, which its client shows
TOO_MANY_CONNECTIONS = "Too many connections"
SHUTTING_DOWN = "Server is shutting down"

EventHandler = Callable[["ChatHandler", str, str, object], Awaitable[dict | None]]


def socket_event(event_name: str):
    """Runs an event for a known socket and turns its outcome into the ack and `messageError`.

    The ack is `{"ok": true, ...}` or `{"ok": false, "error": {"message", "code"}}`; a failure
    is also emitted as `messageError` to that socket, as the guide's client expects.
    """

    def decorate(handler: EventHandler):
        @functools.wraps(handler)
        async def run(self: "ChatHandler", sid: str, payload: object = None, *_extra: object) -> dict:
            sid_var.set(sid)
            # One id per event, carried to history in X-Request-Id and into every log line.
            request_id_var.set(new_request_id())
            user_id = self.user_of.get(sid)
            self.in_flight += 1
            try:
                if user_id is None:
                    raise Unauthorized("Not connected")
                result = {"ok": True, **(await handler(self, sid, user_id, payload) or {})}
                self.metrics.event_outcome(event_name, "ok").inc()
                return result
            except ParleyError as exc:
                error = exc.body()
            except Exception:
                log.exception("unhandled error in %s", event_name)
                error = {"message": "Internal error", "code": ErrorCode.INTERNAL.value}
            finally:
                self.in_flight -= 1
            self.metrics.event_outcome(event_name, error["code"]).inc()
            await self.sio.emit("messageError", error, to=sid)
            return {"ok": False, "error": error}

        return run

    return decorate


def parse_user_id(payload: object, field: str) -> str:
    """A bare user id (`"u2"`, as the guide sends it) or an object `{field: "u2"}`; never trimmed."""
    if isinstance(payload, dict):
        payload = payload.get(field)
    return user_id_param(payload, field)


# Where a typing indicator goes: ("user", receiver id), the guide's 1:1, or ("group", group id).
TypingTarget = tuple[str, str]


def parse_typing_target(payload: object) -> TypingTarget:
    """`typing`'s payload: a receiver id (`"u2"` or `{receiverId}`), or `{groupId}` for a group."""
    if isinstance(payload, dict) and "groupId" in payload:
        group_id = payload["groupId"]
        if not valid_group_id(group_id):
            raise InvalidField("groupId", GROUP_ID_RULE)
        return ("group", group_id)
    return ("user", parse_user_id(payload, "receiverId"))


def parse_user_ids(payload: object) -> set[str]:
    """`watchPresence`'s list of user ids (at most MAX_WATCHED_USERS)."""
    if isinstance(payload, dict):
        payload = payload.get("userIds")
    if not isinstance(payload, list) or len(payload) > MAX_WATCHED_USERS:
        raise InvalidField("userIds", f"must be a list of at most {MAX_WATCHED_USERS} user ids")
    return {parse_user_id(item, "userIds") for item in payload}


def typing_payload(user_id: str, target: TypingTarget) -> object:
    """1:1 keeps the guide's bare sender id; a group's says which group: `{userId, groupId}`."""
    kind, target_id = target
    return user_id if kind == "user" else {"userId": user_id, "groupId": target_id}


class ChatHandler:
    """Serves `sio`'s chat events from construction on. With a `presence` client, the node's
    sockets are reported to presence through a `PresenceLink` (started and stopped by the app);
    without one, presence is left out (unit use)."""

    def __init__(
        self,
        sio: socketio.AsyncServer,
        settings: GatewaySettings,
        verifier: TokenVerifier,
        history: InternalClient,
        metrics: GatewayMetrics,
        presence: InternalClient | None = None,
        recovery: Recovery | None = None,
    ):
        self.sio = sio
        self.metrics = metrics
        self.watching: dict[str, set[str]] = {}
        self.settings = settings
        self.verifier = verifier
        self.history = history
        self.recovery = recovery
        self.store_batcher = StoreBatcher(history, metrics.store_batch_size, settings.store_call_interval_seconds)
        self.group_members = GroupMembers(history, settings.group_members_cache_seconds)
        self.user_of: dict[str, str] = {}
        # The link resyncs presence from this very table (sid -> user), the node's truth.
        self.presence = (None if presence is None
                         else PresenceLink(presence, settings.node_id, settings.heartbeat_seconds, self.user_of,
                                           metrics.presence_in_sync))
        self.sockets_of: Counter[str] = Counter()  # user -> sockets on this node
        self.accepting = True
        self.in_flight = 0
        self.send_limiter = RateLimiter(settings.send_rate_per_second, settings.send_burst)
        self.typing_limiter = RateLimiter(settings.typing_rate_per_second, settings.typing_burst)
        self.read_limiter = RateLimiter(settings.read_rate_per_second, settings.read_burst)
        # react and unreact: one bucket (each is a history write and an emit to the conversation).
        self.reaction_limiter = RateLimiter(settings.reaction_rate_per_second, settings.reaction_burst)
        # watchPresence and GET /api/presence: one bucket, as both cost a history call.
        self.presence_limiter = RateLimiter(settings.presence_rate_per_second, settings.presence_burst)
        # sid -> target -> timer that sends `userStoppedTyping` if the client never does (by
        # socket, so a disconnect finds its own without scanning every socket's).
        self._typing_timers: dict[str, dict[TypingTarget, asyncio.TimerHandle]] = {}
        self._background: set[asyncio.Task] = set()
        self._reaction_order: dict[str, asyncio.Lock] = {}  # sid -> its reactions, one at a time
        self.on_disconnected: Callable[[str], None] | None = None  # told each sid that leaves (catch-up's log)
        self.on_connected: Callable[[str, str], None] | None = None  # told each (sid, user) that arrives (calls)
        self.register()

    def register(self) -> None:
        self.sio.on("connect", self.connect)
        self.sio.on("disconnect", self.disconnect)
        self.sio.on("sendMessage", self.send_message)
        self.sio.on("typing", self.typing)
        self.sio.on("stopTyping", self.stop_typing)
        self.sio.on("markRead", self.mark_read)
        self.sio.on("watchPresence", self.watch_presence)
        self.sio.on("react", self.react)
        self.sio.on("unreact", self.unreact)

    # --- lifecycle -----------------------------------------------------------------------------

    async def connect(self, sid: str, environ: dict, auth: object = None) -> None:
        sid_var.set(sid)
        user_id = self._admit(environ, auth)
        self.user_of[sid] = user_id
        self.sockets_of[user_id] += 1
        self.metrics.sockets.inc()
        if self.recovery is None:
            await self.sio.enter_room(sid, user_room(user_id))
        else:  # joins the room too: what it replays must come before what the room brings
            await self.recovery.connect(sid, user_id, auth, lambda: self.sio.enter_room(sid, user_room(user_id)))
        if self.presence is not None:
            self.presence.socket_connected(sid, user_id)
            self.spawn(self._send_online_users(sid, user_id))
        if self.on_connected is not None:
            self.on_connected(sid, user_id)

    def _admit(self, environ: dict, auth: object) -> str:
        """The user this handshake signs in, or `ConnectionRefusedError` with the reason the client sees."""
        if not self.accepting:
            self._refuse(SHUTTING_DOWN)
        try:
            user_id = self.verifier.user_id(self._handshake_token(environ, auth))
        except Unauthorized:
            self._refuse(AUTH_ERROR)
        if self.sockets_of[user_id] >= self.settings.max_sockets_per_user:
            log.info("connect refused: the user has %d sockets on this node", self.sockets_of[user_id])
            self._refuse(TOO_MANY_CONNECTIONS)
        return user_id

    def _refuse(self, reason: str) -> NoReturn:
        self.metrics.connects_refused.inc()
        raise socketio.exceptions.ConnectionRefusedError(reason) from None

    def _handshake_token(self, environ: dict, auth: object) -> str | None:
        """`auth.token`, else the `token` cookie if the page's Origin is trusted, else the Bearer header.

        A cookie goes wherever the browser goes: accepted from any page, it would let that page
        open a socket as the user (cross-site websocket hijacking). A header or `auth` value
        can only have been set by a page that holds the token.
        """
        token = auth.get("token") if isinstance(auth, dict) else None
        if isinstance(token, str) and token:
            return token
        headers = {"Authorization": environ.get("HTTP_AUTHORIZATION", "")}
        if trusted_origin(environ.get("HTTP_ORIGIN"), self.settings.cors_origin_list, environ):
            headers["Cookie"] = environ.get("HTTP_COOKIE", "")
        return token_from_headers(headers)

    async def disconnect(self, sid: str, reason: object = None) -> None:
        sid_var.set(sid)
        user_id = self.user_of.pop(sid, None)
        if self.on_disconnected is not None:
            self.on_disconnected(sid)
        if user_id is None:
            return
        if (left := self.sockets_of[user_id] - 1) > 0:
            self.sockets_of[user_id] = left
        else:
            del self.sockets_of[user_id]
        self.metrics.sockets.dec()
        self.watching.pop(sid, None)
        self._reaction_order.pop(sid, None)
        if self.presence is not None:
            self.presence.socket_disconnected(sid, user_id)
        for target, timer in self._typing_timers.pop(sid, {}).items():
            timer.cancel()
            await self._emit_stopped_typing(user_id, target)

    async def drain(self, grace_seconds: float) -> None:
        """Refuse new sockets, let in-flight events finish, then drop every connection.

        The transport is dropped without an engine.io CLOSE packet: every client library treats
        that as a network drop and reconnects (to another node, through the load balancer),
        whereas after a CLOSE the Python client, for one, stays disconnected.
        """
        self.accepting = False
        deadline = asyncio.get_running_loop().time() + grace_seconds / 2
        while self.in_flight and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        sockets = list(self.sio.eio.sockets.values())
        for socket in sockets:
            await socket.close(wait=False, abort=True)
            socket.queue.put_nowait(None)  # engine.io's "stop writing": closes the websocket (or poll)
        log.info("drained: dropped %d connection(s), %d event(s) still in flight", len(sockets), self.in_flight)

    # --- events --------------------------------------------------------------------------------

    @socket_event("sendMessage")
    async def send_message(self, sid: str, user_id: str, payload: object) -> dict:
        started = time.perf_counter()
        message = parse_model(SendMessage, payload)
        self.send_limiter.check(user_id)
        if message.group_id is not None:
            conversation, target = {"groupId": message.group_id}, ("group", message.group_id)
        else:
            conversation, target = {"receiverId": message.receiver_id}, ("user", message.receiver_id)
        reply = {"replyTo": message.reply_to} if message.reply_to is not None else {}
        stored = await self.store_batcher.store(
            {"senderId": user_id, **conversation, "text": message.text, "clientId": message.client_id, **reply,
             **({"attachmentIds": message.attachment_ids} if message.attachment_ids else {})}
        )
        body = stored.message
        if self._cancel_typing(sid, target):
            await self._emit_stopped_typing(user_id, target)
        if stored.created:
            # One emit, to every receiver's room: the manager publishes it once per node holding
            # any of them, and each node decodes it once, whatever the group's size.
            # The id is the change feed's position: the recovery offset (see `recovery`).
            event = (body, body["_id"])
            await self._emit_to("receiveMessage", event, self._receiver_rooms(stored, message))
            await self.sio.emit("messageSent", event, room=user_room(user_id))
            self.metrics.messages_sent.inc()
            self.metrics.send_latency.observe(time.perf_counter() - started)
        else:
            # A retry: the message was delivered the first time; only the retrying socket hears,
            # without an offset (an older position would move the client's offset back).
            await self.sio.emit("messageSent", body, to=sid)
        return {"message": body}

    @staticmethod
    def _receiver_rooms(stored: Stored, message: SendMessage) -> list[str] | str:
        if message.group_id is not None:
            return [user_room(member) for member in stored.recipients or []]
        return user_room(message.receiver_id)

    @socket_event("typing")
    async def typing(self, sid: str, user_id: str, payload: object) -> None:
        target = parse_typing_target(payload)
        self.typing_limiter.check(user_id)
        rooms = await self._typing_rooms(user_id, target)
        self._cancel_typing(sid, target)
        self._typing_timers.setdefault(sid, {})[target] = asyncio.get_running_loop().call_later(
            self.settings.typing_timeout_seconds, self._typing_expired, sid, target, user_id
        )
        await self._emit_to("userTyping", typing_payload(user_id, target), rooms)

    @socket_event("stopTyping")
    async def stop_typing(self, sid: str, user_id: str, payload: object) -> None:
        target = parse_typing_target(payload)
        self.typing_limiter.check(user_id)
        await self._typing_rooms(user_id, target)  # a non-member is refused here too
        self._cancel_typing(sid, target)
        await self._emit_stopped_typing(user_id, target)

    async def _typing_rooms(self, user_id: str, target: TypingTarget) -> list[str] | str:
        """Who hears `user_id` typing: the receiver, or the group's other members (members only)."""
        kind, target_id = target
        if kind == "user":
            return user_room(target_id)
        members = await self.group_members.of(target_id)
        if user_id not in members:
            raise NotAMember()
        return [user_room(member) for member in members if member != user_id]

    @socket_event("markRead")
    async def mark_read(self, sid: str, user_id: str, payload: object) -> dict:
        request = parse_model(MarkRead, payload)
        self.read_limiter.check(user_id)
        result = await self.history.call(
            "POST",
            "/internal/read",
            json={"readerId": user_id, "partnerId": request.user_id},
            idempotent=True,
            route="/internal/read",
        )
        return {"count": result["count"], "upTo": result["upTo"]}

    @socket_event("react")
    async def react(self, sid: str, user_id: str, payload: object) -> dict:
        """Puts an emoji on a message I can see; the ack carries `{messageId, reactions}` as I see them,
        and the conversation hears `reactionUpdated` (emitted by history, to every node)."""
        return await self._set_reaction(sid, user_id, payload, add=True)

    @socket_event("unreact")
    async def unreact(self, sid: str, user_id: str, payload: object) -> dict:
        return await self._set_reaction(sid, user_id, payload, add=False)

    async def _set_reaction(self, sid: str, user_id: str, payload: object, add: bool) -> dict:
        request = parse_model(Reaction, payload)
        self.reaction_limiter.check(user_id)
        # A socket's reactions reach history in the order it sent them: each event runs as a task
        # of its own, and a quick react then unreact could otherwise arrive swapped (the unreact
        # a no-op, the react kept). The lock is the first thing each task waits on, and asyncio's
        # locks are fair, so the tasks take it in the order python-socketio made them.
        async with self._reaction_order.setdefault(sid, asyncio.Lock()):
            return await self.history.call(
                "POST",
                "/internal/reactions",
                json={"userId": user_id, "messageId": request.message_id, "emoji": request.emoji, "add": add},
                idempotent=True,  # setting (or clearing) a reaction twice leaves it as once
                route="/internal/reactions",
            )

    @socket_event("watchPresence")
    async def watch_presence(self, sid: str, user_id: str, payload: object) -> dict:
        """Also hear `userOnline` / `userOffline` of these users (replaces the previous list).

        Users the asker may not see (PRESENCE_VISIBILITY) are left out: never subscribed, never online.
        """
        requested = parse_user_ids(payload)
        self.presence_limiter.check(user_id)
        watched = await self.visible_to(user_id, requested)
        previous = self.watching.get(sid, set())
        for gone in previous - watched:
            await self.sio.leave_room(sid, presence_room(gone))
        # Together, so the node's registrations of these rooms (routed_manager) share one round trip.
        await asyncio.gather(*(self.sio.enter_room(sid, presence_room(new)) for new in watched - previous))
        self.watching[sid] = watched
        if not watched or self.presence is None:
            return {"online": []}
        return {"online": await self.presence.online_among(sorted(watched))}

    async def visible_to(self, user_id: str, user_ids: set[str]) -> set[str]:
        """Of `user_ids`, those whose presence `user_id` may learn: with PRESENCE_VISIBILITY
        "partners", users who share a conversation with them (asked of history each time, as
        presence's announcer does), and themselves."""
        if self.settings.presence_visibility == "everyone" or not user_ids:
            return user_ids
        partners = await self.history.call(
            "GET", f"/internal/users/{quote(user_id, safe='')}/partners", idempotent=True,
            route="/internal/users/{userId}/partners",
        )
        return user_ids & {*partners, user_id}

    async def _send_online_users(self, sid: str, user_id: str) -> None:
        online = await self.presence.online_partners(user_id)
        if online is not None and sid in self.user_of:
            await self.sio.emit("onlineUsers", online, to=sid)

    # --- typing timers -------------------------------------------------------------------------

    def _cancel_typing(self, sid: str, target: TypingTarget) -> bool:
        """Stops the timer; True when the target was still being shown "typing"."""
        timers = self._typing_timers.get(sid)
        timer = timers.pop(target, None) if timers is not None else None
        if timers is not None and not timers:
            del self._typing_timers[sid]
        if timer is None:
            return False
        timer.cancel()
        return True

    def _typing_expired(self, sid: str, target: TypingTarget, user_id: str) -> None:
        self._cancel_typing(sid, target)  # the timer has run: cancelling it is harmless
        self.spawn(self._emit_stopped_typing(user_id, target))

    async def _emit_stopped_typing(self, user_id: str, target: TypingTarget) -> None:
        try:
            rooms = await self._typing_rooms(user_id, target)
        except ParleyError as exc:  # removed from the group meanwhile, or history unreachable
            log.info("no userStoppedTyping for a group: %s", exc.message)
            return
        await self._emit_to("userStoppedTyping", typing_payload(user_id, target), rooms)

    async def _emit_to(self, event: str, data: object, rooms: list[str] | str) -> None:
        """An emit to a room or a list of rooms; to none when the list is empty (python-socketio
        reads an empty `to` as no target at all, and would send to every socket)."""
        if rooms:
            await self.sio.emit(event, data, to=rooms)

    def spawn(self, coroutine: Awaitable) -> None:
        """A fire-and-forget task that is kept referenced until done, and cancelled at shutdown."""
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        await self.store_batcher.close()
        if self.recovery is not None:
            await self.recovery.close()
        for timers in self._typing_timers.values():
            for timer in timers.values():
                timer.cancel()
        self._typing_timers.clear()
        await cancel_and_wait(list(self._background))


