"""A real coturn for tests, and the smallest TURN client that asks it for an allocation (RFC 5766
Allocate with RFC 5389 long-term credentials), to prove from outside which credentials it takes."""

import contextlib
import hashlib
import hmac
import os
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

from services.devtools.stores import free_port

TURNSERVER = "/usr/bin/turnserver"
MAGIC_COOKIE = 0x2112A442
ALLOCATE_REQUEST, ALLOCATE_SUCCESS, ALLOCATE_ERROR = 0x0003, 0x0103, 0x0113
BINDING_REQUEST, BINDING_SUCCESS = 0x0001, 0x0101
USERNAME, MESSAGE_INTEGRITY, ERROR_CODE, REALM, NONCE, REQUESTED_TRANSPORT = 0x6, 0x8, 0x9, 0x14, 0x15, 0x19
UDP = bytes([17, 0, 0, 0])


def _attribute(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * ((4 - len(value) % 4) % 4)


def _message(kind: int, attributes: list[tuple[int, bytes]], key: bytes | None = None) -> bytes:
    transaction = os.urandom(12)
    body = b"".join(_attribute(name, value) for name, value in attributes)
    if key is not None:  # MESSAGE-INTEGRITY over the header (its length counting the attribute) and body
        header = struct.pack("!HHI12s", kind, len(body) + 24, MAGIC_COOKIE, transaction)
        body += _attribute(MESSAGE_INTEGRITY, hmac.new(key, header + body, hashlib.sha1).digest())
    return struct.pack("!HHI12s", kind, len(body), MAGIC_COOKIE, transaction) + body


def _parse(data: bytes) -> tuple[int, dict[int, bytes]]:
    kind, length, _, _ = struct.unpack("!HHI12s", data[:20])
    attributes, offset = {}, 20
    while offset < 20 + length:
        name, size = struct.unpack("!HH", data[offset:offset + 4])
        attributes.setdefault(name, data[offset + 4:offset + 4 + size])
        offset += 4 + size + (4 - size % 4) % 4
    return kind, attributes


def _ask(udp: socket.socket, address: tuple[str, int], message: bytes) -> tuple[int, dict[int, bytes]]:
    udp.sendto(message, address)
    return _parse(udp.recvfrom(4096)[0])


def _udp() -> socket.socket:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.settimeout(2)
    return udp


def allocate(address: tuple[str, int], username: str, credential: str) -> int:
    """Asks for a relay with these credentials: 0 when coturn allocated one, else its error code
    (401: not authenticated). The first request, without credentials, fetches realm and nonce
    (bound to this client's address and port: both go from one socket)."""
    with _udp() as udp:
        kind, attributes = _ask(udp, address, _message(ALLOCATE_REQUEST, [(REQUESTED_TRANSPORT, UDP)]))
        assert kind == ALLOCATE_ERROR and _error(attributes) == 401, (kind, attributes)
        realm, nonce = attributes[REALM], attributes[NONCE]
        key = hashlib.md5(username.encode() + b":" + realm + b":" + credential.encode()).digest()
        kind, attributes = _ask(udp, address, _message(
            ALLOCATE_REQUEST,
            [(USERNAME, username.encode()), (REALM, realm), (NONCE, nonce), (REQUESTED_TRANSPORT, UDP)], key))
    return 0 if kind == ALLOCATE_SUCCESS else _error(attributes)


def _error(attributes: dict[int, bytes]) -> int:
    value = attributes[ERROR_CODE]
    return value[2] * 100 + value[3]


def answers_stun(address: tuple[str, int]) -> bool:
    try:
        with _udp() as udp:
            return _ask(udp, address, _message(BINDING_REQUEST, []))[0] == BINDING_SUCCESS
    except OSError:
        return False


@contextlib.contextmanager
def running_turnserver(secret: str, log_dir: Path) -> Iterator[tuple[str, int]]:
    """coturn on 127.0.0.1 with the TURN REST API's shared secret (as deploy/ runs it), relaying
    between loopback peers (two browsers of one machine); stopped afterwards. Yields its address."""
    assert Path(TURNSERVER).exists(), "coturn is installed by scripts/system-deps.sh test (make test)"
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    relay_low = 20000 + port % 20000
    command = [TURNSERVER, "-n", "--listening-ip=127.0.0.1", f"--listening-port={port}", "--relay-ip=127.0.0.1",
               f"--min-port={relay_low}", f"--max-port={relay_low + 200}", "--use-auth-secret",
               f"--static-auth-secret={secret}", "--realm=parley", "--fingerprint", "--no-cli", "--no-tls",
               "--no-dtls", "--allow-loopback-peers", "--no-multicast-peers", f"--pidfile={log_dir / 'turn.pid'}",
               f"--log-file={log_dir / 'turnserver.log'}", "--simple-log", "--verbose"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield "127.0.0.1", port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
