"""Catch-up after a pub/sub outage: a gateway gives its connected sockets, from history's change
feed, the feed events they could not hear while Redis was away (issue 20). No client action.

Why it is needed: an emit for a socket on another node crosses Redis. While Redis restarts, fails
over, or this node's subscription is lost, such emits vanish: the publisher cannot publish, or
publishes to nobody. The client stays connected, so connection-state recovery never runs.

The design:
- The `DeliveryLog` (`delivery_log`) keeps, per connected socket, what of the feed it was
  written: its start (the feed's head when it connected, or what its recovery covered: every
  change up to there is the client's already) and the last (event, position) pairs it was
  written. Anything above its floor (the start, or the newest pair forgotten) that it was not
  written is a change it missed. A feed event it was already written (by a catch-up) is not
  written again when it comes live, so nothing is written twice.
- A catch-up runs when this node's listener is subscribed again after a loss
  (`RoutedRedisManager.on_catch_up`), and when any node or history had to give up a publish: that
  publisher broadcasts a catch-up request as soon as Redis takes publishes again. So emits that
  failed to publish are not retried as such: the catch-up makes them unnecessary (it reads the
  same changes, committed, from history, in feed order, which a late re-publish would not keep).
- For each user with sockets here (at most CATCH_UP_CONCURRENCY users at once), one call of
  history's replay route after the lowest floor of their sockets, bounded by RECOVERY_MAX_EVENTS.
  Each socket is held while it is read (as recovery holds one), then written the events above its
  floor it was not written, in feed order, with their offsets, then what arrived meanwhile and the
  catch-up did not already cover. More than RECOVERY_MAX_EVENTS missed: the socket is
  disconnected, and its client reconnects by itself (recovering, or told to sync). History
  unreachable: the catch-up is tried again CATCH_UP_RETRY_SECONDS later, until it succeeds.
- Only feed events are caught up (delivery_log.FEED_EVENTS): messages (`receiveMessage`,
  `messageSent`), deletions, edits, receipts, group changes and reactions. Typing and presence
  stay best-effort.

Known limit: a socket that connected while history could not tell the feed's head, and has had
no feed event since, has no floor and is not caught up.
"""

import asyncio
import logging
from urllib.parse import quote

from ..shared.errors import ParleyError
from ..shared.internal import InternalClient
from ..shared.tasks import cancel_and_wait
from .delivery_log import DeliveryLog, Written, replayed_packet
from .metrics import GatewayMetrics

log = logging.getLogger(__name__)

CATCH_UP_CONCURRENCY = 16  # users whose replay is read at once: history serves them in parallel
# A socket is held while its user's replay is read: not longer than this (then: try again later).
CATCH_UP_READ_TIMEOUT_SECONDS = 3.0
CATCH_UP_RETRY_SECONDS = 1.0

TOO_MANY: list[list] = []  # `_missed`'s answer past RECOVERY_MAX_EVENTS (compared by identity)


class CatchUp:
    """Runs catch-ups for this node's sockets. `server` is the `ParleyServer`; `user_of` the
    chat handler's sid -> user table."""

    def __init__(self, server, history: InternalClient, deliveries: DeliveryLog, user_of: dict[str, str],
                 max_events: int, metrics: GatewayMetrics):
        self.server = server
        self.history = history
        self.deliveries = deliveries
        self.user_of = user_of
        self.max_events = max_events
        self.metrics = metrics
        self._task: asyncio.Task | None = None
        self._again = False

    def request(self) -> None:
        """A catch-up of every socket here, soon; requests made during one run it once more after."""
        if self.max_events == 0:
            return
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.ensure_future(self._run_until_done())

    async def _run_until_done(self) -> None:
        while True:
            self._again = False
            try:
                complete = await self.run()
            except Exception:
                log.exception("catch-up failed")
                complete = False
            if not complete:
                self._again = True
                await asyncio.sleep(CATCH_UP_RETRY_SECONDS)
            if not self._again:
                return

    async def run(self) -> bool:
        """One catch-up of every socket here; False when history could not answer for some."""
        for gone in self.deliveries.sockets.keys() - self.user_of.keys():
            self.deliveries.forget(gone)  # left while its connect was still under way
        by_user: dict[str, list[str]] = {}
        for sid, user_id in list(self.user_of.items()):
            by_user.setdefault(user_id, []).append(sid)
        limit = asyncio.Semaphore(CATCH_UP_CONCURRENCY)

        async def one(user_id: str, sids: list[str]) -> tuple[bool, int]:
            async with limit:
                return await self._catch_up_user(user_id, sids)

        outcomes = await asyncio.gather(*(one(user_id, sids) for user_id, sids in by_user.items()))
        caught_up = sum(count for _, count in outcomes)
        self.metrics.catch_ups.inc()
        self.metrics.events_caught_up.inc(caught_up)
        log.info("caught up %d socket(s) of %d user(s) after a pub/sub outage: %d event(s)",
                 len(self.user_of), len(by_user), caught_up)
        return all(ok for ok, _ in outcomes)

    async def _catch_up_user(self, user_id: str, sids: list[str]) -> tuple[bool, int]:
        """(whether history answered, events written) for one user's sockets here."""
        sockets: dict[str, tuple[str, int, set[Written]]] = {}  # sid -> eio sid, floor, written then
        for sid in sids:
            feed = self.deliveries.sockets.get(sid)
            eio_sid = self.server.manager.eio_sid_from_sid(sid, "/")
            floor = feed.known_floor() if feed is not None else None
            if floor is None or eio_sid is None or self.server.holding(eio_sid):
                continue  # no floor known, gone, or being recovered (its recovery reads the feed)
            self.server.hold(eio_sid)
            sockets[sid] = (eio_sid, floor, set(feed.seen))
        if not sockets:
            return True, 0
        events: list[list] | None = None
        try:
            events = await self._missed(user_id, min(floor for _, floor, _ in sockets.values()))
        finally:
            written = await self._release(sockets, events if events is not TOO_MANY else [])
        if events is TOO_MANY:
            for eio_sid, _, _ in sockets.values():
                await self._drop(eio_sid)
            return True, 0
        return events is not None, written

    async def _release(self, sockets: dict[str, tuple[str, int, set[Written]]], events: list[list]) -> int:
        covered = max((int(event[-1]) for event in events), default=None)
        written = 0
        for sid, (eio_sid, floor, seen) in sockets.items():
            missed = [event for event in events
                      if int(event[-1]) > floor and (event[0], int(event[-1])) not in seen]
            written += len(missed)
            await self.server.release(eio_sid, [replayed_packet(self.server.packet_class, event) for event in missed],
                                      lambda offset: covered is not None and offset <= covered)
        return written

    async def _missed(self, user_id: str, after: int) -> list[list] | None:
        """The user's feed events after `after`; None when history cannot say. Past
        RECOVERY_MAX_EVENTS, the user's sockets here are disconnected (their clients reconnect)."""
        try:
            answer = await asyncio.wait_for(self.history.call(
                "GET", f"/internal/users/{quote(user_id, safe='')}/replay",
                params={"after": str(after), "limit": str(self.max_events)}, idempotent=True,
                route="/internal/users/{userId}/replay",
            ), CATCH_UP_READ_TIMEOUT_SECONDS)
        except (ParleyError, asyncio.TimeoutError) as exc:
            log.warning("catch-up postponed: history could not replay (%s)", getattr(exc, "code", "timeout"))
            return None
        if answer["hasMore"]:
            log.warning("a user missed more than %d events during a pub/sub outage: their sockets here "
                        "are dropped, to reconnect (and recover, or sync)", self.max_events)
            return TOO_MANY
        return answer["events"]

    async def _drop(self, eio_sid: str) -> None:
        """Drops the transport without a CLOSE (as `ChatHandler.drain`): the client reconnects by
        itself, where after a Socket.IO disconnect it would stay disconnected."""
        socket = self.server.eio.sockets.get(eio_sid)
        if socket is not None and not socket.closed:
            await socket.close(wait=False, abort=True)
            socket.queue.put_nowait(None)

    async def close(self) -> None:
        await cancel_and_wait([self._task])
