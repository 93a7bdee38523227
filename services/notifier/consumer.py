"""The notifier's work: take jobs from the stream in the consumer group, collapse them per person
and conversation, push, and acknowledge each job only once the push service answered.

At least once, whatever dies:
- A job is acknowledged (XACK) after every subscription of its person got a final answer (2xx,
  404/410, another 4xx) or its last retry. Until then it sits in the group's pending list
  under this notifier's name.
- A notifier that dies leaves its jobs pending: every notifier claims (XAUTOCLAIM) jobs idle for
  CLAIM_IDLE_SECONDS. While this one waits to retry a push it touches its jobs (XCLAIM to
  itself), so a slow push service does not make them look abandoned. A notifier restarted
  under the same name first reads its own pending jobs again.
- Redis restarted without its data: the group is created again here (and history's relay
  appends again what was not acknowledged, see services/history/push_relay.py).
A job whose push was answered but whose XACK was lost to a crash is pushed again: duplicates
are possible, losses are not.

Collapse: the first message to a person in a conversation is pushed at once; those that arrive
within COLLAPSE_SECONDS of that push wait for the window's end and go as one ("3 new messages
from Ada"), with the same `Topic` (the push service keeps only the newest undelivered) and the
same `tag` (the browser replaces the shown notification). Collapsing is per notifier process:
two notifiers may each push a part of one burst.
"""

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field

from redis.exceptions import RedisError, ResponseError

from ..shared import fast_json
from ..shared.errors import StoreUnavailable
from ..shared.keys import PUSH_CONSUMER_GROUP, push_stream_key
from ..shared.redis_client import connect, key_prefix
from ..shared.push import Subscription, endpoint_allowed, ensure_group
from ..shared.tasks import cancel_and_wait
from .metrics import NotifierMetrics
from .push import Answer, Outcome, PushSender, topic_of
from .settings import NotifierSettings
from .store import SubscriptionStore

log = logging.getLogger(__name__)

READ_BLOCK_MS = 1000
RETRY_SECONDS = (0.2, 0.5, 1, 2, 5)
MAX_JOBS_PER_PUSH = 20  # message ids one notification lists (its payload stays under 4 KB)
MAX_ICON_LENGTH = 512


@dataclass(frozen=True)
class Job:
    entry_id: str
    message_id: str
    user_id: str
    conversation: str
    sender_name: str
    sender_image: str
    group_name: str | None
    text: str | None  # None: the person hides message text in notifications
    created_ms: int

    @classmethod
    def parse(cls, entry_id: str, fields: dict) -> "Job | None":
        try:
            values = {key.decode(): value.decode() for key, value in fields.items()}
            return cls(entry_id, values["m"], values["u"], values["c"], values["n"], values.get("i", ""),
                       values.get("g"), values.get("t"), int(values["at"]))
        except (KeyError, ValueError, UnicodeDecodeError, AttributeError):
            return None


def notification(jobs: list[Job], count: int) -> dict:
    """The payload the service worker shows (services/gateway/static/sw.js)."""
    last = jobs[-1]
    kind, target = last.conversation.split(":", 1)
    group = kind == "group"
    title = f"{last.sender_name} in {last.group_name}" if group else last.sender_name
    if count == 1:
        body = last.text or "New message"
    else:
        body = f"{count} new messages " + (f"in {last.group_name}" if group else f"from {last.sender_name}")
    return {"title": title, "body": body, "icon": last.sender_image if len(last.sender_image) <= MAX_ICON_LENGTH else "",
            "tag": last.conversation, "conversation": {"kind": kind, "id": target}, "count": count,
            "messageIds": [job.message_id for job in jobs]}


@dataclass
class Burst:
    """One person's notifications of one conversation, while they come within COLLAPSE_SECONDS."""

    pending: list[Job] = field(default_factory=list)
    last_push: float = -math.inf  # loop time of the last push
    count: int = 0  # messages notified in this burst so far
    timer: asyncio.TimerHandle | None = None
    sending: bool = False


class Consumer:
    def __init__(self, settings: NotifierSettings, store: SubscriptionStore, sender: PushSender,
                 metrics: NotifierMetrics):
        self._settings = settings
        self._redis = connect(settings.redis_url, socket_timeout=READ_BLOCK_MS / 1000 + 5, socket_connect_timeout=2)
        self._stream = push_stream_key(key_prefix(settings.redis_url, settings.redis_prefix))
        self._name = settings.node_id
        self._store = store
        self._sender = sender
        self._metrics = metrics
        self._bursts: dict[tuple[str, str], Burst] = {}
        self._held: set[str] = set()  # entry ids taken and not yet acknowledged
        self._unacknowledged: list[str] = []  # answered, but the XACK failed: retried
        self._room = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._main: asyncio.Task | None = None
        self._closing = False
        metrics.jobs_held.set_function(lambda: len(self._held))

    async def ping(self) -> None:
        """Ready while Redis answers and the loop that takes jobs runs."""
        if self._main is not None and self._main.done():
            raise RuntimeError("the job loop stopped")
        await self._redis.ping()

    def start(self) -> None:
        self._main = asyncio.create_task(self._run())

    async def close(self, grace_seconds: float) -> None:
        """Stops taking jobs, pushes what it holds now (a burst's window is cut short) for up to
        `grace_seconds`, then stops; what is still held stays pending, for another to claim."""
        # The job loop ends at its next turn: its read under way (at most READ_BLOCK_MS) may
        # have taken jobs already, which a cancel would leave pending, taken by nobody here.
        self._closing = True
        self._room.set()
        if self._main is not None:
            await asyncio.wait({self._main}, timeout=READ_BLOCK_MS / 1000 + 1)
            # Stuck (Redis away): what it read stays pending, for a claim.
            await cancel_and_wait([self._main], timeout=1)
        for key, burst in list(self._bursts.items()):
            if burst.timer is not None:
                burst.timer.cancel()
                burst.timer = None
            burst.last_push = -math.inf
            self._schedule(key, burst)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace_seconds)
        if self._tasks:
            log.info("stopping with %d push(es) unfinished: their jobs stay pending for another notifier",
                     len(self._tasks))
        await cancel_and_wait(list(self._tasks), timeout=1)
        await asyncio.wait_for(self._redis.aclose(), timeout=2)

    # --- taking jobs ---------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        own_pending_from: str | None = "0"  # first our own pending jobs (a restart under this name)
        claim_from, next_claim = "0-0", 0.0
        ever_read = False  # a missing group before the first read is a new stream, not a lost one
        loop = asyncio.get_running_loop()
        while not self._closing:
            try:
                await self._wait_for_room()
                if self._closing:
                    break
                await self._retry_acknowledgements()
                if own_pending_from is not None:
                    entries = await self._read(own_pending_from, block=None)
                    own_pending_from = entries[-1][0] if entries else None
                    how = "own"
                elif loop.time() >= next_claim:
                    claim_from, entries, gone = await self._redis.xautoclaim(
                        self._stream, PUSH_CONSUMER_GROUP, self._name,
                        int(self._settings.claim_idle_seconds * 1000), claim_from, count=100)
                    claim_from = claim_from.decode() if isinstance(claim_from, bytes) else claim_from
                    if gone:  # trimmed from the stream while pending: nothing left to push
                        await self._redis.xack(self._stream, PUSH_CONSUMER_GROUP, *gone)
                    if claim_from == "0-0":  # a full round: the next in a while, and the dead go
                        next_claim = loop.time() + self._settings.claim_idle_seconds / 4
                        await self._forget_dead_consumers()
                    how = "claimed"
                else:
                    entries = await self._read(">", block=READ_BLOCK_MS)
                    how = "new"
                for entry_id, fields in entries:
                    self._take(entry_id.decode() if isinstance(entry_id, bytes) else entry_id, fields, how)
                failures, ever_read = 0, True
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    log.warning("job stream refused a command: %r", exc)
                    await asyncio.sleep(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])
                    failures += 1
                    continue
                if ever_read:
                    log.warning("the job stream or its group is gone (Redis lost its data?): creating them again")
                await self._recover(ensure_group(self._redis, self._stream), failures)
                failures += 1
            except (RedisError, OSError) as exc:
                if failures == 0:
                    log.warning("job stream unreachable: %r", exc)
                await asyncio.sleep(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])
                failures += 1

    async def _forget_dead_consumers(self) -> None:
        """Consumers (notifier pods that are gone) with nothing pending, idle ten claim timeouts,
        leave the group, so its list does not grow with every pod ever started."""
        idle_ms = self._settings.claim_idle_seconds * 10 * 1000
        for consumer in await self._redis.xinfo_consumers(self._stream, PUSH_CONSUMER_GROUP):
            name = consumer["name"].decode() if isinstance(consumer["name"], bytes) else consumer["name"]
            if name != self._name and consumer["pending"] == 0 and consumer["idle"] > idle_ms:
                await self._redis.xgroup_delconsumer(self._stream, PUSH_CONSUMER_GROUP, name)

    async def _recover(self, step, failures: int) -> None:
        try:
            await step
        except RedisError:
            await asyncio.sleep(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])

    async def _read(self, start: str, block: int | None) -> list:
        answer = await self._redis.xreadgroup(PUSH_CONSUMER_GROUP, self._name, {self._stream: start},
                                              count=max(1, self._settings.push_concurrency - len(self._held)),
                                              block=block)
        return answer[0][1] if answer else []

    async def _wait_for_room(self) -> None:
        while len(self._held) >= self._settings.push_concurrency and not self._closing:
            self._room.clear()
            await self._room.wait()

    def _take(self, entry_id: str, fields: dict | None, how: str) -> None:
        if entry_id in self._held:
            return  # ours already (read again as our own pending, or claimed back)
        self._metrics.jobs_taken.labels(how).inc()
        if not fields:  # trimmed from the stream (PUSH_STREAM_MAX_JOBS) while it was pending
            self._drop([entry_id], "trimmed")
            return
        job = Job.parse(entry_id, fields)
        if job is None:
            log.warning("a job that does not parse was dropped: %s", entry_id)
            self._drop([entry_id], "malformed")
            return
        if time.time() * 1000 - job.created_ms > self._settings.push_ttl_seconds * 1000:
            self._drop([entry_id], "expired")  # older than a push service would keep it anyway
            return
        self._held.add(entry_id)
        key = (job.user_id, job.conversation)
        burst = self._bursts.setdefault(key, Burst())
        burst.pending.append(job)
        self._schedule(key, burst)

    def _drop(self, entry_ids: list[str], reason: str) -> None:
        self._metrics.jobs_dropped.labels(reason).inc(len(entry_ids))
        self._held.update(entry_ids)
        self._spawn(self._acknowledge(entry_ids))

    # --- collapsing ----------------------------------------------------------------------------

    def _schedule(self, key: tuple[str, str], burst: Burst) -> None:
        if burst.sending or burst.timer is not None or not burst.pending:
            return
        loop = asyncio.get_running_loop()
        wait = burst.last_push + self._settings.collapse_seconds - loop.time()
        if wait <= 0:
            burst.sending = True  # from now: the jobs that come meanwhile wait for this flush to end
            self._spawn(self._flush(key, burst))
        else:
            burst.timer = loop.call_later(wait, self._flush_at_window_end, key, burst)

    def _flush_at_window_end(self, key: tuple[str, str], burst: Burst) -> None:
        burst.timer = None
        burst.sending = True
        self._spawn(self._flush(key, burst))

    def _forget_if_quiet(self, key: tuple[str, str], burst: Burst) -> None:
        """The burst is over when its window passed with nothing new: the next message starts one."""
        quiet_for = asyncio.get_running_loop().time() - burst.last_push
        if (not burst.pending and not burst.sending and burst.timer is None and self._bursts.get(key) is burst
                and quiet_for >= self._settings.collapse_seconds):
            del self._bursts[key]

    async def _flush(self, key: tuple[str, str], burst: Burst) -> None:
        """Pushes the burst's pending jobs (`sending` is set by whoever started this)."""
        jobs, burst.pending = burst.pending[:MAX_JOBS_PER_PUSH], burst.pending[MAX_JOBS_PER_PUSH:]
        loop = asyncio.get_running_loop()
        try:
            await self._push(jobs, burst)
        except StoreUnavailable:
            # Postgres down: the jobs stay held and pending; this burst tries again shortly.
            burst.pending = jobs + burst.pending
            burst.sending = False
            burst.timer = loop.call_later(RETRY_SECONDS[-1], self._flush_at_window_end, key, burst)
            return
        except BaseException:
            burst.pending = jobs + burst.pending
            burst.sending = False
            raise
        burst.sending = False
        await self._acknowledge([job.entry_id for job in jobs])
        now = time.time()
        for job in jobs:
            self._metrics.store_to_push.observe(max(0.0, now - job.created_ms / 1000))
        if burst.pending:
            self._schedule(key, burst)
        else:
            loop.call_later(self._settings.collapse_seconds, self._forget_if_quiet, key, burst)

    # --- pushing -------------------------------------------------------------------------------

    async def _push(self, jobs: list[Job], burst: Burst) -> None:
        """One notification of these jobs to every subscription of their person."""
        user_id, conversation = jobs[0].user_id, jobs[0].conversation
        subscriptions = await self._store.of_user(user_id)
        burst.count += len(jobs)
        payload = fast_json.dumps(notification(jobs, burst.count))
        payload = payload if isinstance(payload, bytes) else payload.encode()
        topic = topic_of(conversation)
        answers = await asyncio.gather(*(self._deliver(subscription, payload, topic, jobs)
                                         for subscription in subscriptions))
        for subscription, answer in zip(subscriptions, answers):
            self._metrics.pushes.labels(answer.outcome.value).inc()
            if answer.outcome is Outcome.GONE:
                try:
                    await self._store.remove(user_id, subscription)
                    self._metrics.subscriptions_removed.inc()
                except StoreUnavailable:  # the next push gets the same answer and removes it then
                    log.info("a gone subscription stays until Postgres is back")
            elif answer.outcome is Outcome.REFUSED:
                log.warning("a push service refused a notification (%s); not retried", answer.status)
        burst.last_push = asyncio.get_running_loop().time()

    async def _deliver(self, subscription: Subscription, payload: bytes, topic: str, jobs: list[Job]) -> Answer:
        settings = self._settings
        if not endpoint_allowed(subscription.endpoint, settings.push_host_list, settings.push_loopback_allowed):
            return Answer(Outcome.REFUSED, None)  # stored under looser rules: never sent to
        for attempt in range(settings.push_max_attempts):
            answer = await self._sender.send(subscription, payload, topic)
            if answer.outcome is not Outcome.RETRY or attempt + 1 == settings.push_max_attempts:
                return answer
            self._metrics.retries.inc()
            delay = answer.retry_after if answer.retry_after is not None else settings.push_backoff_seconds * 2**attempt
            await self._touch(jobs)
            await asyncio.sleep(min(delay, settings.push_max_retry_after_seconds))
        raise AssertionError("unreachable")

    async def _touch(self, jobs: list[Job]) -> None:
        """Resets the jobs' idle time (they are ours, being retried), so no notifier claims them."""
        try:
            await self._redis.xclaim(self._stream, PUSH_CONSUMER_GROUP, self._name, 0,
                                     [job.entry_id for job in jobs], justid=True)
        except RedisError:
            pass  # Redis away: nobody claims anything meanwhile either

    async def _acknowledge(self, entry_ids: list[str]) -> None:
        try:
            await self._redis.xack(self._stream, PUSH_CONSUMER_GROUP, *entry_ids)
        except RedisError as exc:
            log.info("acknowledgement postponed: %r", exc)
            self._unacknowledged.extend(entry_ids)
            return
        self._metrics.jobs_acknowledged.inc(len(entry_ids))
        self._held.difference_update(entry_ids)
        self._room.set()

    async def _retry_acknowledgements(self) -> None:
        if self._unacknowledged:
            entry_ids, self._unacknowledged = self._unacknowledged, []
            await self._acknowledge(entry_ids)

    def _spawn(self, coroutine) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("notification task failed", exc_info=task.exception())
