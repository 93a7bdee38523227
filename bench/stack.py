"""The services a benchmark runs: production settings (strong secrets, no DEV_MODE), ports of their own."""

from pathlib import Path

from services.devtools.stack import Stack
from services.devtools.stores import free_port
from services.shared.settings import JwtSettings

BENCH_JWT = JwtSettings(jwt_secret="bench-jwt-secret-long-enough-for-hs256-0123456789")
GATEWAY_TOKEN = "bench-gateway-internal-token-0123456789abcdef"
PRESENCE_TOKEN = "bench-presence-internal-token-0123456789abcdef"
ADMIN_TOKEN = "bench-admin-internal-token-0123456789abcdef"
SECRETS = {
    "JWT_SECRET": BENCH_JWT.jwt_secret,
    "INTERNAL_TOKEN": GATEWAY_TOKEN,  # a gateway's own; presence gets its own in `bench_stack`
    "GATEWAY_INTERNAL_TOKEN": GATEWAY_TOKEN,
    "PRESENCE_INTERNAL_TOKEN": PRESENCE_TOKEN,
    "ADMIN_INTERNAL_TOKEN": ADMIN_TOKEN,
}


def bench_stack(env: dict[str, str], log_dir: Path, names: list[str]) -> Stack:
    """A stack of the named processes (`history`, `presence`, `media`, `gateway-<x>`), wired to each other."""
    ports = {name: (free_port(), free_port()) for name in names}
    wiring = {}
    if "history" in ports:
        wiring["HISTORY_URL"] = f"http://127.0.0.1:{ports['history'][1]}"
        wiring["HISTORY_API_URL"] = f"http://127.0.0.1:{ports['history'][0]}"
    if "presence" in ports:
        wiring["PRESENCE_URL"] = f"http://127.0.0.1:{ports['presence'][1]}"
    if "media" in ports:
        wiring["MEDIA_API_URL"] = f"http://127.0.0.1:{ports['media'][0]}"
    stack = Stack({**SECRETS, **wiring, **env}, log_dir)
    for name, (port, internal_port) in ports.items():
        own = {"INTERNAL_TOKEN": PRESENCE_TOKEN} if name == "presence" else {}
        stack.add(name.split("-")[0], name, port, internal_port, own)
    return stack
