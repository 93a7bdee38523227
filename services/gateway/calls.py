"""Voice and video calls (issue 17): the signalling events, across any number of gateway nodes.

Media flows peer to peer (or through TURN); the gateway relays the offer, the answer and the ICE
candidates, and keeps the call's state in Redis (`call_store`), never in a node's memory: a call
placed through node a is answered on node b, and a node that dies takes no call state with it.

Who may do what (each event checks it against the call's hash, never trusting the client):
- `callUser {to, kind, sdp}`: a user who may message `to` (both known to history: the rule of a
  1:1 message), not themselves, not while in another call (`busy`). Every socket of the callee
  hears `incomingCall`; the caller's other sockets `callStarted`. A callee in another call, or
  with no socket on a live node, ends the call at once (`callEnded` `busy` / `offline`).
- `answerCall {callId, sdp}`: the callee, on any of their sockets, while it rings. That socket
  is the callee's in the call; the caller's calling socket hears `callAnswered`, the callee's
  other sockets `callAnsweredElsewhere` (they stop ringing).
- `iceCandidate {callId, candidate}`: only from the party's socket in the call, once answered;
  relayed only to the other party's socket (one publish, to the one node holding it).
- `rejectCall {callId}`: the callee while it rings (`rejected`); `endCall {callId}`: either party
  at any time (`ended`). Both sides hear `callEnded {callId, reason}` on all their sockets.
Anyone else naming the call (a stolen or guessed id) is told `unknown_call`, as for an id that
does not exist. The sweeper (every node, every CALL_SWEEP_SECONDS) ends rings nobody answered
(`missed`) and calls with a party whose socket vanished for CALL_LOST_AFTER_SECONDS (`lost`).

Whoever ends a call (a party's event or a node's sweep: one winner, atomically) tells both
parties and stores the call's message (`type: "call"`) through history's group commit, with the
call id as its clientId, so the conversation list, history pages and sync show it.

Cost at 10x: a call is about a dozen Redis commands and two history calls (profiles, message)
over its life, plus a pipeline and a script per lease renewal (one per node every
CALL_LOST_AFTER_SECONDS / 5, for all its parties together) and one sweep script per node per
CALL_SWEEP_SECONDS (two more round trips when calls are due: `call_store`'s docstring); a
candidate is one HMGET and one publish to one node.
"""

import asyncio
import functools
import logging
import secrets

import socketio

from ..shared.batching import Batcher
from ..shared.errors import ErrorCode, InvalidField, ParleyError, parse_model
from ..shared.internal import InternalClient
from ..shared.keys import user_room
from ..shared.tasks import cancel_and_wait
from .call_store import CallStore, EndedCall
from .chat import ChatHandler, socket_event
from .metrics import GatewayMetrics
from .models import AnswerCall, CallRef, CallUser, IceCandidate
from .ratelimit import RateLimiter
from .settings import GatewaySettings

log = logging.getLogger(__name__)

PARTIES_ROUTE = "/internal/calls/parties"
MAX_LOOKUPS_PER_CALL = 1000
# A call's message is tried again after these pauses while history or Postgres is unavailable
# (None: the last try), so a restart of either does not lose it.
MESSAGE_RETRY_SECONDS = (1.0, 2.0, 4.0, 8.0, None)
RETRIED_CODES = {ErrorCode.SERVICE_UNAVAILABLE.value, ErrorCode.STORE_UNAVAILABLE.value}


class UnknownCall(ParleyError):
    def __init__(self):
        super().__init__("No such call", code="unknown_call", status=404)


class CallStateError(ParleyError):
    """The call is not in the state the event needs (answered elsewhere, ended, still ringing)."""

    def __init__(self, message: str, code: str):
        super().__init__(message, code=code, status=409)


def call_text(ended: EndedCall) -> str:
    """The call's message in words, for clients that read only `text` (the guide's)."""
    kind = f"{ended.kind} call"
    if ended.answered_at_ms is not None:
        minutes, seconds = divmod(ended.duration_seconds, 60)
        lost = ", connection lost" if ended.reason == "lost" else ""
        return f"{kind.capitalize()} ({minutes}:{seconds:02d}{lost})"
    return {"rejected": f"Declined {kind}", "busy": f"Missed {kind} (busy)",
            "offline": f"Missed {kind} (offline)", "lost": f"Missed {kind} (connection lost)"}.get(
        ended.status, f"Missed {kind}")


class CallHandler:
    """The call events of one node, registered on `sio` beside the chat events (through the chat's
    `socket_event`: the same acks, `messageError`, metrics and drain accounting)."""

    def __init__(self, sio: socketio.AsyncServer, chat: ChatHandler, store: CallStore, history: InternalClient,
                 settings: GatewaySettings, metrics: GatewayMetrics):
        self.sio = sio
        self.chat = chat
        self.store = store
        self.history = history
        self.settings = settings
        self.metrics = metrics
        self.node_id = settings.node_id
        self.call_limiter = RateLimiter(settings.call_rate_per_second, settings.call_burst)
        self.ice_limiter = RateLimiter(settings.ice_rate_per_second, settings.ice_burst)
        # The call parties whose socket this node holds: `<callId>|caller` -> sid, and back.
        self._party_sid: dict[str, str] = {}
        self._parties_of: dict[str, set[str]] = {}
        self._loops: list[asyncio.Task] = []
        # Whether a user who connects is in a call: one MGET for the connects that arrive
        # together, so a connect storm costs Redis a command per batch, not a script per socket
        # (the script only for the rare user in a call). Measured: the per-socket script was a
        # tenth of a gateway's CPU in `python -m bench.presence_bench --sockets 10000`.
        self._in_call: Batcher[str, str | None] = Batcher(self.store.calls_of, max_batch=MAX_LOOKUPS_PER_CALL)

    def register(self) -> None:
        for event, method in (("callUser", self.call_user), ("answerCall", self.answer_call),
                              ("iceCandidate", self.ice_candidate), ("rejectCall", self.reject_call),
                              ("endCall", self.end_call)):
            self.sio.on(event, functools.partial(socket_event(event)(_as_chat_handler(method)), self.chat))

    def start(self) -> None:
        self._loops = [asyncio.ensure_future(self._every(self.settings.call_sweep_seconds, self.sweep)),
                       asyncio.ensure_future(self._every(self.settings.call_lost_after_seconds / 5, self.renew))]

    async def close(self) -> None:
        await cancel_and_wait(self._loops)
        await self._in_call.close()
        await self.store.close()

    # --- events --------------------------------------------------------------------------------

    async def call_user(self, sid: str, user_id: str, payload: object) -> dict:
        request = parse_model(CallUser, payload)
        if request.to == user_id:
            raise InvalidField("to", "must be someone else")
        self.call_limiter.check(user_id)
        parties = await self.history.call("POST", PARTIES_ROUTE, json={"callerId": user_id, "calleeId": request.to},
                                          idempotent=True, route=PARTIES_ROUTE)
        call_id = secrets.token_hex(16)
        outcome = await self.store.start(call_id, user_id, request.to, request.kind, sid, self.node_id)
        if outcome[0] == "caller_busy":
            raise CallStateError("You are already in a call", "busy")
        if outcome[0] == "ended":  # the callee is busy or offline: over before it rang
            ended = EndedCall(call_id, outcome[1], user_id, request.to, request.kind, None, int(outcome[2]))
            self.chat.spawn(self._tell_ended(ended))  # after the ack, which carries the call id
            return {"callId": call_id}
        self._hold(f"{call_id}|caller", sid)
        await self.sio.emit("incomingCall", {"callId": call_id, "from": parties["caller"], "kind": request.kind,
                                             "sdp": request.sdp}, to=user_room(request.to))
        await self.sio.emit("callStarted", {"callId": call_id, "to": parties["callee"], "kind": request.kind},
                            to=user_room(user_id), skip_sid=sid)
        return {"callId": call_id}

    async def answer_call(self, sid: str, user_id: str, payload: object) -> dict:
        request = parse_model(AnswerCall, payload)
        self.call_limiter.check(user_id)
        outcome = await self.store.answer(request.call_id, user_id, sid, self.node_id)
        if outcome[0] == "unknown":
            raise UnknownCall()
        if outcome[0] == "not_ringing":
            raise CallStateError(f"The call is no longer ringing ({outcome[1]})", "call_not_ringing")
        _, caller, caller_sid, caller_node = outcome
        self._hold(f"{request.call_id}|callee", sid)
        await self.sio.manager.emit_to_socket("callAnswered", {"callId": request.call_id, "sdp": request.sdp},
                                              caller_sid, caller_node)
        await self.sio.emit("callAnsweredElsewhere", {"callId": request.call_id}, to=user_room(user_id), skip_sid=sid)
        return {"callId": request.call_id}

    async def ice_candidate(self, sid: str, user_id: str, payload: object) -> dict:
        request = parse_model(IceCandidate, payload)
        self.ice_limiter.check(user_id)
        call = await self.store.get(request.call_id)
        if call is None or user_id not in (call.caller, call.callee):
            raise UnknownCall()
        if call.party_socket(user_id)[0] != sid:
            raise ParleyError("This socket is not the one in the call", code="not_in_call", status=403)
        if call.state != "active":
            raise CallStateError(f"Candidates are relayed once the call is answered (it is {call.state})",
                                 "call_not_active")
        other_sid, other_node = call.party_socket(call.other(user_id))
        candidate = request.candidate.model_dump(by_alias=True, exclude_none=True)
        await self.sio.manager.emit_to_socket("iceCandidate", {"callId": call.id, "candidate": candidate},
                                              other_sid, other_node)
        return {"callId": call.id}

    async def reject_call(self, sid: str, user_id: str, payload: object) -> dict:
        return await self._end(user_id, payload, reject=True)

    async def end_call(self, sid: str, user_id: str, payload: object) -> dict:
        return await self._end(user_id, payload, reject=False)

    async def _end(self, user_id: str, payload: object, reject: bool) -> dict:
        request = parse_model(CallRef, payload)
        self.call_limiter.check(user_id)
        outcome, detail = await self.store.end(request.call_id, user_id, reject)
        if outcome == "unknown":
            raise UnknownCall()
        if outcome == "not_ringing":
            raise CallStateError(f"Only a ringing call can be rejected (it is {detail})", "call_not_ringing")
        if outcome == "not_live":
            raise CallStateError("The call has already ended", "call_ended")
        await self._tell_ended(detail)
        return {"callId": request.call_id}

    # --- the end of a call ---------------------------------------------------------------------

    async def _tell_ended(self, ended: EndedCall) -> None:
        """Both parties hear `callEnded` on every socket; the call's message follows, in the
        background (an event's ack does not wait for history)."""
        self._forget_call(ended.id)
        self.metrics.calls_ended.labels(ended.reason).inc()
        await self.sio.emit("callEnded", {"callId": ended.id, "reason": ended.reason},
                            to=[user_room(ended.caller), user_room(ended.callee)])
        self.chat.spawn(self._leave_message(ended))

    async def _leave_message(self, ended: EndedCall) -> None:
        """The call's message, stored through the group commit and delivered as a sent message is
        (with its feed offset), from the caller to the callee. Retried while history or Postgres
        is unavailable (the call id is its clientId: a retry stores nothing twice)."""
        summary = {"kind": ended.kind, "status": ended.status, "durationSeconds": ended.duration_seconds}
        message = {"senderId": ended.caller, "receiverId": ended.callee, "text": call_text(ended),
                   "clientId": f"call-{ended.id}", "call": summary}
        for delay in MESSAGE_RETRY_SECONDS:
            try:
                stored = await self.chat.store_batcher.store(message)
                break
            except ParleyError as exc:
                if delay is None or exc.code not in RETRIED_CODES:
                    log.warning("the message of call %s was not stored: %s", ended.id, exc.message)
                    return
                await asyncio.sleep(delay)
        if stored.created:
            event = (stored.message, stored.message["_id"])
            await self.sio.emit("receiveMessage", event, to=user_room(ended.callee))
            await self.sio.emit("messageSent", event, room=user_room(ended.caller))

    async def sweep(self) -> None:
        """Ends the rings nobody answered and the calls a party vanished from (see `call_store`)."""
        for ended in await self.store.sweep():
            log.info("call %s ended by the sweeper: %s", ended.id, ended.reason)
            await self._tell_ended(ended)

    async def renew(self) -> None:
        """Renews the leases of the parties whose socket is here; forgets those whose call is over.
        A call Redis lost (restarted or failed over without it) ends here as `lost` for the
        party's socket: nobody else knows of it any more (and no message is left)."""
        for member, state in await self.store.renew(list(self._party_sid)):
            sid = self._party_sid.get(member)
            self._forget(member)
            if not state and sid is not None:
                call_id = member.split("|")[0]
                log.info("call %s is gone from Redis: lost", call_id)
                await self.sio.emit("callEnded", {"callId": call_id, "reason": "lost"}, to=sid)

    async def _every(self, seconds: float, work) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await work()
            except ParleyError as exc:  # Redis unreachable: the next round tries again
                log.info("%s skipped: %s", work.__name__, exc.message)
            except Exception:
                log.exception("%s failed", work.__name__)

    # --- the parties this node holds -----------------------------------------------------------

    def _hold(self, member: str, sid: str) -> None:
        self._party_sid[member] = sid
        self._parties_of.setdefault(sid, set()).add(member)

    def _forget(self, member: str) -> None:
        sid = self._party_sid.pop(member, None)
        if sid is not None and (members := self._parties_of.get(sid)) is not None:
            members.discard(member)
            if not members:
                del self._parties_of[sid]

    def _forget_call(self, call_id: str) -> None:
        for role in ("caller", "callee"):
            self._forget(f"{call_id}|{role}")

    def socket_left(self, sid: str) -> None:
        """A socket disconnected: its leases are no longer renewed here, so unless its party comes
        back (`socket_arrived`), the call ends as `lost` after CALL_LOST_AFTER_SECONDS (the sweeper)."""
        for member in self._parties_of.pop(sid, set()):
            self._party_sid.pop(member, None)
            self.chat.spawn(self._quietly(self.store.away(member, sid)))

    def socket_arrived(self, sid: str, user_id: str) -> None:
        self.chat.spawn(self._quietly(self._rejoin(sid, user_id)))

    async def _rejoin(self, sid: str, user_id: str) -> None:
        """A user in a call whose socket in it is gone (it disconnected, or its node died) comes
        back: this new socket becomes theirs in the call, so candidates flow again and the call is
        not `lost`. A party's socket that may still be there (renewed lately, not seen leaving)
        keeps the call; after `stale` it is looked at once more (a node that just died)."""
        stale = 2.5 * self.settings.call_lost_after_seconds / 5  # two and a half renewals missed
        call_id = await self._in_call.submit(user_id)
        if call_id is None:
            return  # in no call: nearly everyone who connects
        for attempt in (1, 2):
            if sid not in self.chat.user_of:
                return
            found = await self.store.rebind(user_id, sid, self.node_id, int(stale * 1000), call_id)
            if found is None:
                return
            if found[0] != "fresh":
                call_id, role = found[0], found[1]
                self._hold(f"{call_id}|{role}", sid)
                log.info("call %s: the %s came back on a new socket", call_id, role)
                return
            if attempt == 1:
                await asyncio.sleep(stale)

    @staticmethod
    async def _quietly(work) -> None:
        try:
            await work
        except ParleyError as exc:  # Redis unreachable: the leases settle it
            log.info("call bookkeeping skipped: %s", exc.message)


def _as_chat_handler(method):
    """A bound method of ours, in the shape `socket_event` decorates (a ChatHandler method)."""

    async def handler(_chat: ChatHandler, sid: str, user_id: str, payload: object) -> dict | None:
        return await method(sid, user_id, payload)

    return handler
