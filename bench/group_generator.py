"""One group-bench generator process: a share of a group's members, each a lean socket
(bench/lean_socket.py) on node `index % nodes`, counting the copies of the group's messages they
receive. With --send, its members are the group's senders and take turns sending at --rate.

Steps with the bench (bench/measure.py, `Generators`): "ready" once connected (the bench then
creates the group and answers its id), "joined" once every member heard `groupUpdated`, "done"
once every copy arrived (or the grace ran out), then it disconnects and writes its JSON to --out.
Times are time.monotonic(), one clock for every process of the machine, so the bench can set a
copy received here against the moment another generator sent its message.

    python -m bench.group_generator --urls A,B --tag t --first 4 --count 496 --messages 200 --seconds 10 --out F
"""

import argparse
import asyncio
import json
import time

import uvloop

from bench.generator_steps import cpu_seconds_used, reached, text_of
from bench.lean_socket import LeanSocket
from bench.stack import BENCH_JWT
from services.shared.auth import issue_token

# How long after the last send a copy may still arrive before it counts as lost.
GRACE_SECONDS = 5.0
JOIN_TIMEOUT_SECONDS = 60.0
CONNECTS_AT_ONCE = 20  # handshakes in flight: a connect storm is not what this measures


def member_id(tag: str, index: int) -> str:
    return f"{tag}-m{index}"


async def until(condition, deadline: float) -> None:
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


async def run(args) -> dict:
    urls = args.urls.split(",")
    indexes = range(args.first, args.first + args.count)
    copies: dict[str, list[float]] = {}  # text -> [copies, first received, last received]
    seen: dict[LeanSocket, set[str]] = {}
    joined: set[LeanSocket] = set()
    acked: dict[str, float] = {}
    errors = duplicates = received = 0

    def on_frame(socket: LeanSocket, data: str) -> None:
        nonlocal duplicates, errors, received
        if data.startswith('42["receiveMessage"'):
            now, text = time.monotonic(), text_of(data)
            if text in seen[socket]:
                duplicates += 1
                return
            seen[socket].add(text)
            received += 1
            entry = copies.get(text)
            if entry is None:
                copies[text] = [1, now, now]
            else:
                entry[0] += 1
                entry[2] = now
        elif data.startswith('42["groupUpdated"'):
            joined.add(socket)
        elif data.startswith("43"):
            if '"ok":true' in data:
                acked[text_of(data)] = time.monotonic()
            else:
                errors += 1

    limit = asyncio.Semaphore(CONNECTS_AT_ONCE)

    async def connect(index: int) -> LeanSocket:
        async with limit:
            socket = await LeanSocket.open(urls[index % len(urls)], issue_token(member_id(args.tag, index), BENCH_JWT),
                                           on_frame)
        seen[socket] = set()
        return socket

    sockets = await asyncio.gather(*(connect(index) for index in indexes))
    group_id = await reached("ready")
    await until(lambda: len(joined) == len(sockets), time.monotonic() + JOIN_TIMEOUT_SECONDS)
    if len(joined) < len(sockets):
        raise RuntimeError(f"{len(sockets) - len(joined)} member(s) never heard groupUpdated")
    await reached("joined")

    cpu_before = cpu_seconds_used()
    started = time.monotonic()
    sent_at: dict[str, float] = {}
    via_node = [0] * len(urls)
    if args.send:
        for number in range(args.messages):
            delay = started + number / args.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            turn = number % len(sockets)
            socket, text = sockets[turn], f"{args.tag}:{number}"
            socket.next_ack += 1
            sent_at[text] = time.monotonic()
            via_node[indexes[turn] % len(urls)] += 1
            socket.send_text(
                f'42{socket.next_ack}["sendMessage",{{"groupId":"{group_id}","text":"{text}","clientId":"{text}"}}]')
    send_seconds = time.monotonic() - started
    # Every message reaches every member here but its own sender.
    expected = args.messages * len(sockets) - len(sent_at)
    await until(lambda: received >= expected and len(acked) + errors >= len(sent_at),
                started + args.seconds + GRACE_SECONDS)
    cpu = cpu_seconds_used() - cpu_before
    # Still connected: the bench samples CPU now, so that disconnecting is not charged either.
    await reached("done")
    for socket in sockets:
        socket.close()
    return {
        "members": len(sockets),
        "sent_at": sent_at,
        "send_seconds": send_seconds,
        "via_node": via_node,
        "acked": len(acked),
        "errors": errors,
        "ack_ms": sorted((acked[text] - sent_at[text]) * 1000 for text in acked if text in sent_at),
        "copies": copies,
        "duplicates": duplicates,
        "cpu_seconds": cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--urls", required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--first", type=int, required=True, help="index of this process's first member")
    parser.add_argument("--count", type=int, required=True, help="members in this process")
    parser.add_argument("--messages", type=int, required=True, help="messages the group will carry in all")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--rate", type=float, default=0, help="messages per second (senders)")
    parser.add_argument("--send", action="store_true", help="this process's members send the group's messages")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    result = uvloop.run(run(args))
    with open(args.out, "w") as out:
        json.dump(result, out)


if __name__ == "__main__":
    main()
