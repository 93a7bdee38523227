"""Socket.IO connection-state recovery, as socket.io-client (4.6 and later) speaks it, backed by
history's change feed: any node recovers any socket, after any restart (issue 20).

The protocol (socket.io's packages/socket.io/lib/socket.ts and socket.io-client's socket.js):
the server's CONNECT answer carries `{sid, pid}`; every event whose last argument is a string
sets the client's offset to it; a client that reconnects sends `{pid, offset}` merged into its
`auth`; a server that recovers answers CONNECT with the SAME pid and sends what was missed, and
the client sets `socket.recovered` true. Socket.IO's own server keeps each session in one node's
memory; Parley keeps nothing: the pid is a signed token, and what was missed is read from
Postgres.

- The pid is `<payload>.<signature>`, base64url: the payload is `{"u": user id, "t": issued at
  (unix seconds), "p": the feed position at issue, or null}`, the signature an HMAC-SHA256 with a
  key derived from the gateways' INTERNAL_TOKEN (a strong secret every gateway shares, checked at
  start, and unlike JWT_SECRET never a public key). Any node verifies it after any restart;
  rotating INTERNAL_TOKEN only turns recoveries into normal connections.
- A pid that does not verify, names another user than the token, or was issued more than
  RECOVERY_WINDOW_SECONDS ago gets a normal connection (a new pid): never another user's data.
  The window counts from the pid's issue (the socket's last connection that was not a
  recovery; a recovery must answer the same pid), not from the drop.
- The offset is a resume point in the change feed (positions: a message's id, a deletion's, an
  edit's or another event's seq, all drawn from one sequence, committed in order): every
  position up to one, and those listed above it (`delivery_log`, where each socket's is written
  in). It is the last argument of `receiveMessage`, `messageSent` (not a retry's), `messageDeleted`,
  `messageEdited`, and of the receipts, group changes and reactions history keeps in the feed
  (`messagesRead`, `groupRead`, `groupUpdated`, `memberAdded`, `memberRemoved`,
  `reactionUpdated`: services/history/feed_events.py). Nothing else carries an offset: typing
  and presence are best-effort, not replayed. Events whose
  last argument would be a bare string (a 1:1 `userTyping`, `userOnline`) get a trailing null
  (`guard_offsets`): socket.io-client would take the user id for an offset.
- A reconnect with a pid that verifies is replayed everything after max(the offset's settled
  position, the pid's position) but what the offset lists above it: a client that received nothing yet starts from the feed's head at the pid's issue
  (read under the feed lock, after the socket joined its user room, so nothing falls between).
  At most RECOVERY_MAX_EVENTS changes: past that, or with history unreachable, a normal
  connection (new pid), and the client knows from `recovered` false to sync.
- Replay comes before any live event: the socket's packets are held from before it joins its
  user room until the replay is written; held events the replay already covered are dropped.
- Events from different emitters (a message through node a, the next through b, a deletion
  through history) can overtake each other by a pub/sub hop: the offset's list of what is above
  its settled position is what makes a drop in that instant lose nothing and repeat nothing
  (`delivery_log`).
"""

import asyncio
import base64
import hashlib
import hmac
import logging
import time
from dataclasses import dataclass

import orjson

from ..shared.batching import Batcher
from ..shared.errors import ParleyError
from ..shared.internal import InternalClient
from ..shared.limits import MAX_REPLAYS_PER_CALL
from .delivery_log import FEED_EVENTS, DeliveryLog, ResumePoint, replayed_packet
from .metrics import GatewayMetrics

log = logging.getLogger(__name__)

KEY_LABEL = b"parley socket.io connection-state recovery pid v1"
MAX_PID_LENGTH = 512  # a real pid is under 200 characters; longer is not worth decoding
# A pid issued this far in another node's future still verifies (clocks of nodes differ a little).
CLOCK_SKEW_SECONDS = 60
MAX_HEAD_READS_PER_CALL = 1000  # connects that arrive together share one read of the feed's head
# A connect waits this long at most for the feed's head: with history down, connects go on (their
# pid then recovers only with an offset) instead of each waiting out the internal call's retries.
HEAD_READ_TIMEOUT_SECONDS = 1.0
# New sockets whose head read waits for the call under way leave no sooner than this after it
# started, so a connect storm's reads share calls (as presence_link paces `onlineUsers`); a read
# that finds no call under way leaves at once. Unpaced, they were 5.7 % of a gateway's CPU in a
# storm of 10,000 (py-spy, bench/RESULTS.md "Connect storm and presence"). Paced, back to back
# and interleaved (`python -m bench.presence_bench --sockets 10000`, load average 0.5 to 1.5):
# presence agrees after 4.32 / 4.34 -> 3.48 / 3.63 s, 0.51 -> 0.44 CPU-ms a connect a gateway.
HEAD_READ_INTERVAL_SECONDS = 0.025


def guard_offsets(data: list) -> list:
    """An event's arguments as sent: a non-feed event ending in a string gets a trailing null,
    so socket.io-client does not take that string (a user id) for its recovery offset."""
    if len(data) > 1 and isinstance(data[-1], str) and data[0] not in FEED_EVENTS:
        return [*data, None]
    return data


@dataclass(frozen=True)
class Session:
    """What a verified pid says: whose it is, when it was issued, the feed's head then."""

    user_id: str
    issued_at: int
    position: int | None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PidSigner:
    """Issues and verifies pids (see the module docstring for their shape)."""

    def __init__(self, secret: str, window_seconds: float, clock=time.time):
        self._key = hmac.new(secret.encode(), KEY_LABEL, hashlib.sha256).digest()
        self._window = window_seconds
        self._clock = clock

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def issue(self, user_id: str, position: int | None) -> str:
        payload = _b64(orjson.dumps({"u": user_id, "t": int(self._clock()), "p": position}))
        return f"{payload}.{self._sign(payload)}"

    def verify(self, pid: object, user_id: str) -> Session | None:
        """The session of a pid that is this user's, authentic and young enough; else None."""
        # ASCII only: compare_digest refuses other strings (with an error, not a False).
        if not isinstance(pid, str) or len(pid) > MAX_PID_LENGTH or not pid.isascii() or pid.count(".") != 1:
            return None
        payload, signature = pid.split(".")
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            claims = orjson.loads(_unb64(payload))
        except (ValueError, orjson.JSONDecodeError):
            return None  # signed by us, so never; but a decoding error must not become a 500
        if not isinstance(claims, dict) or claims.get("u") != user_id:
            return None
        issued, position = claims.get("t"), claims.get("p")
        age = self._clock() - issued if isinstance(issued, int) else None
        if age is None or not -CLOCK_SKEW_SECONDS <= age <= self._window:
            return None
        return Session(user_id, issued, position if isinstance(position, int) else None)


class Recovery:
    """The gateway's side of recovery: a pid for every connection, a replay for a reconnection.

    `server` is the `ParleyServer` (it holds a socket's packets and adds the pid to CONNECT).
    """

    def __init__(self, server, history: InternalClient, secret: str, window_seconds: float, max_events: int,
                 metrics: GatewayMetrics, deliveries: DeliveryLog):
        """`deliveries` learns where each socket starts in the feed."""
        self.server = server
        self.deliveries = deliveries
        self.history = history
        self.signer = PidSigner(secret, window_seconds)
        self.max_events = max_events
        self.metrics = metrics
        self._heads: Batcher[None, int] = Batcher(self._read_heads, max_batch=MAX_HEAD_READS_PER_CALL,
                                                  min_interval=HEAD_READ_INTERVAL_SECONDS, pace_from=1)
        # Recoveries that arrive together (a killed node's clients) share history's reads: 5,000
        # sockets of a SIGKILLed node, the last caught up 9.67 -> 7.16 s after the kill; history
        # 0.52 -> 0.28 and Postgres 1.10 -> 0.54 CPU-ms a reconnect (`python -m bench.recovery_bench`,
        # back to back with one replay call a socket, load average 2.3 to 3.2).
        self._replays: Batcher[tuple[str, int], dict] = Batcher(self._read_replays, max_batch=MAX_REPLAYS_PER_CALL,
                                                                  max_in_flight=2)

    async def connect(self, sid: str, user_id: str, auth: object, enter_user_room) -> None:
        """Joins the socket to its user room (`enter_user_room`), recovering its session if it
        asked and may, and sets the pid its CONNECT answer carries."""
        claim = self._claim(auth, user_id)
        if claim is None:
            await enter_user_room()
            await self._new_session(sid, user_id)
            return
        pid, point = claim
        eio_sid = self.server.manager.eio_sid_from_sid(sid, "/")
        self.server.hold(eio_sid)
        replay = []
        covered, events = point.settled, None
        try:
            await enter_user_room()
            events = await self._missed(user_id, point.settled)
            if events is not None:
                # What the client has (the offset says), then what it missed, settle at once.
                self.deliveries.resume(sid, point)
                replay = [replayed_packet(self.server.packet_class, event) for event in events
                          if int(event[-1]) not in point.above]
                covered = max([point.settled, *(packet.position for packet in replay)])
        finally:
            # Replay first, then what arrived meanwhile that neither the replay nor the client had.
            await self.server.release(eio_sid, replay, lambda offset: offset <= covered or offset in point.above)
        if events is None:
            await self._new_session(sid, user_id)
            return
        self.metrics.sessions_recovered.inc()
        self.metrics.events_replayed.inc(len(replay))
        self.server.connect_answers[sid] = {"pid": pid}

    async def _new_session(self, sid: str, user_id: str) -> None:
        head = await self._head()
        self.server.connect_answers[sid] = {"pid": self.signer.issue(user_id, head)}
        self.deliveries.start(sid, head)

    def _claim(self, auth: object, user_id: str) -> tuple[str, ResumePoint] | None:
        """(pid, what the client has) when the handshake asks for recovery and may have it."""
        if not isinstance(auth, dict) or "pid" not in auth or self.max_events == 0:
            return None
        session = self.signer.verify(auth["pid"], user_id)
        if session is None:
            self._not_recovered("pid")
            return None
        try:
            point = ResumePoint.parse(auth.get("offset"))
        except ValueError:
            self._not_recovered("offset")
            return None
        if point is None:
            if session.position is None:
                self._not_recovered("offset")
                return None
            point = ResumePoint(session.position)
        elif session.position is not None and session.position > point.settled:
            # The pid's position: the client had everything up to there when it connected.
            point = ResumePoint(session.position, frozenset(p for p in point.above if p > session.position))
        return auth["pid"], point

    async def _missed(self, user_id: str, after: int) -> list[list] | None:
        """The events this user's sockets heard after `after`; None past RECOVERY_MAX_EVENTS or
        when history cannot say."""
        try:
            answer = await self._replays.submit((user_id, after))
        except ParleyError as exc:
            log.warning("connection not recovered: history could not replay (%s)", exc.code)
            self._not_recovered("unavailable")
            return None
        if answer["hasMore"]:
            self._not_recovered("too_many")
            return None
        return answer["events"]

    async def _read_replays(self, requests: list[tuple[str, int]]) -> list[dict]:
        answer = await self.history.call(
            "POST", "/internal/replay", idempotent=True, route="/internal/replay",
            json={"requests": [{"userId": user_id, "after": str(after)} for user_id, after in requests],
                  "limit": self.max_events},
        )
        return answer["results"]

    def _not_recovered(self, reason: str) -> None:
        self.metrics.recoveries_refused.labels(reason).inc()

    async def _head(self) -> int | None:
        """The feed's head now (after the caller joined its room); None when history cannot say:
        that pid then recovers only with an offset."""
        try:
            return await asyncio.wait_for(self._heads.submit(None), HEAD_READ_TIMEOUT_SECONDS)
        except (ParleyError, asyncio.TimeoutError) as exc:
            log.info("pid issued without a feed position: %s", getattr(exc, "code", "timeout"))
            return None

    async def _read_heads(self, waiting: list[None]) -> list[int]:
        answer = await self.history.call("GET", "/internal/feed/head", idempotent=True, route="/internal/feed/head")
        return [int(answer["head"])] * len(waiting)

    async def close(self) -> None:
        await self._heads.close()
        await self._replays.close()

