"""One load-generator process: pairs of users (sender on one node, receiver on another) chatting
at a fixed rate over raw Socket.IO websockets, as socket.io-client speaks it (bench/lean_socket.py,
a client kept light so that the generator takes little of the CPU it measures). Writes its
counts and latencies as JSON to --out.

    python -m bench.load_generator --urls URL_A,URL_B --users 100 --rate 500 --seconds 10 --tag g1 --out F
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


async def run(args) -> dict:
    jwt = BENCH_JWT
    urls = args.urls.split(",")
    pairs = args.users // 2
    sent_at: dict[str, float] = {}
    delivered: dict[str, float] = {}
    acked: dict[str, float] = {}
    duplicates = 0
    errors = 0

    def on_frame(socket: LeanSocket, data: str) -> None:
        # The message's text is its id here: found by position, no JSON decoding per frame.
        nonlocal duplicates, errors
        if data.startswith('42["receiveMessage"'):
            text = text_of(data)
            if text in delivered:
                duplicates += 1
            else:
                delivered[text] = time.perf_counter()
        elif data.startswith("43"):
            if '"ok":true' in data:
                acked[text_of(data)] = time.perf_counter()
            else:
                errors += 1

    senders, sockets = [], []
    for pair in range(pairs):
        sender_id, receiver_id = f"{args.tag}-s{pair}", f"{args.tag}-r{pair}"
        # Sender and receiver on different nodes, so every message crosses nodes.
        sender = await LeanSocket.open(urls[pair % len(urls)], issue_token(sender_id, jwt), on_frame)
        receiver = await LeanSocket.open(urls[(pair + 1) % len(urls)], issue_token(receiver_id, jwt), on_frame)
        senders.append((sender, receiver_id))
        sockets += [sender, receiver]
    await asyncio.sleep(0.5)
    # Connected: tell the bench, which samples every process's CPU, then wait for its go,
    # so that connecting is not charged to the messages.
    await reached("ready")
    cpu_before = cpu_seconds_used()
    started = time.perf_counter()
    total = int(args.rate * args.seconds)
    for number in range(total):
        due = started + number / args.rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        socket, receiver_id = senders[number % len(senders)]
        text = f"{args.tag}:{number}"
        socket.next_ack += 1
        sent_at[text] = time.perf_counter()
        # Ids and texts are plain ASCII words: no JSON escaping needed.
        socket.send_text(
            f'42{socket.next_ack}["sendMessage",{{"receiverId":"{receiver_id}","text":"{text}","clientId":"{text}"}}]')
    send_seconds = time.perf_counter() - started
    deadline = time.perf_counter() + 5
    while (len(delivered) < total or len(acked) + errors < total) and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    cpu = cpu_seconds_used() - cpu_before
    # Still connected: the bench samples CPU now, so that disconnecting is not charged either.
    await reached("done")
    for socket in sockets:
        socket.close()
    return {
        "sent": total,
        "send_seconds": send_seconds,
        "delivered": len(delivered),
        "acked": len(acked),
        "errors": errors,
        "duplicates": duplicates,
        "delivery_ms": sorted((delivered[t] - sent_at[t]) * 1000 for t in delivered),
        "ack_ms": sorted((acked[t] - sent_at[t]) * 1000 for t in acked),
        "cpu_seconds": cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--urls", required=True)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    result = uvloop.run(run(args))
    with open(args.out, "w") as out:
        json.dump(result, out)


if __name__ == "__main__":
    main()
