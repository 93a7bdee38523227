"""Outside DEV_MODE a service with a weak secret refuses to start: a non-zero exit and one line
on stderr naming the setting, before it listens on anything."""

import os
import re
import socket
import subprocess
import sys
import time

import pytest

from services.devtools.stores import free_port
from services.shared.push import generate_vapid_keys
from services.shared.settings import DEV_INTERNAL_TOKENS, DEV_JWT_SECRET
from tests.security.categories import WEAK_SECRETS
from tests.support import PROJECT_DIR
from tests.tally import ATTACK

# The secrets each service uses (DESIGN-13): its own outgoing token, the tokens it admits, the JWT key.
SECRETS = {
    "gateway": ("JWT_SECRET", "INTERNAL_TOKEN"),
    "history": ("JWT_SECRET", "GATEWAY_INTERNAL_TOKEN", "PRESENCE_INTERNAL_TOKEN", "ADMIN_INTERNAL_TOKEN"),
    "presence": ("INTERNAL_TOKEN", "GATEWAY_INTERNAL_TOKEN"),
    "notifier": ("VAPID_PRIVATE_KEY",),
}
EVERY_SECRET = sorted({name for names in SECRETS.values() for name in names} | {"DEV_LOGIN_SECRET"})
STRONG = {name: f"{name.lower()}-7f3a9c1e5b2d4f6a8c0e1b3d5f7a9c2e" for name in EVERY_SECRET}
STRONG["VAPID_PRIVATE_KEY"], STRONG["VAPID_PUBLIC_KEY"] = generate_vapid_keys()  # a key, not a passphrase
# Values a deployment could carry by mistake: each must stop the service.
WEAK = {
    "unset": None,
    "empty": "",
    "development default": "dev",  # replaced per setting below
    "contains CHANGE-ME": "CHANGE-ME-a-long-random-service-token-0123456789",
    "31 bytes": "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d",
}
# The development defaults the code and `make run` use; a deployment that kept one is not secret.
DEVELOPMENT_DEFAULTS = {
    "JWT_SECRET": DEV_JWT_SECRET,
    "INTERNAL_TOKEN": DEV_INTERNAL_TOKENS["gateway"],
    "GATEWAY_INTERNAL_TOKEN": DEV_INTERNAL_TOKENS["gateway"],
    "PRESENCE_INTERNAL_TOKEN": DEV_INTERNAL_TOKENS["presence"],
    "ADMIN_INTERNAL_TOKEN": DEV_INTERNAL_TOKENS["admin"],
}
START_TIMEOUT_SECONDS = 20.0
STOP_TIMEOUT_SECONDS = 15.0
# Settings that switch the checks off or would leak in from the developer's shell.
SCRUBBED = ("DEV_MODE", "TURN_URLS", "TURN_SECRET", "VAPID_PUBLIC_KEY", *EVERY_SECRET)


def service_env(stores, **settings: str | None) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in SCRUBBED}
    env.update(STRONG)
    env.update({
        "DATABASE_URL": stores.database_url, "REDIS_URL": stores.redis_url,
        "REDIS_PREFIX": f"{stores.redis_prefix}-secrets", "HOST": "127.0.0.1", "INTERNAL_HOST": "127.0.0.1",
        "PORT": str(free_port()), "INTERNAL_PORT": str(free_port()), "LOG_LEVEL": "INFO",
    })
    for name, value in settings.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def start(service: str, env: dict[str, str]) -> tuple[int | None, str]:
    """Runs the service until it exits or listens: (exit status, or None if it listened; stderr)."""
    ports = [int(env["PORT"]), int(env["INTERNAL_PORT"])]
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    status = None
    with subprocess.Popen([sys.executable, "-m", f"services.{service}"], env=env, cwd=PROJECT_DIR,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as process:
        try:
            while time.monotonic() < deadline:
                if (status := process.poll()) is not None or any(listening(port) for port in ports):
                    break
                time.sleep(0.05)  # polling a child process: there is no event to wait on
            else:
                raise AssertionError(f"{service} neither exited nor listened within {START_TIMEOUT_SECONDS} s")
        finally:
            if process.poll() is None:
                process.terminate()
        try:
            _, stderr = process.communicate(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:  # killed, not left running behind the suite
            process.kill()
            _, stderr = process.communicate()
            raise AssertionError(f"{service} did not exit within {STOP_TIMEOUT_SECONDS} s of SIGTERM: {stderr}")
    return status, stderr


def names_setting(line: str, setting: str) -> bool:
    """`INTERNAL_TOKEN` is named by itself, not as the tail of `GATEWAY_INTERNAL_TOKEN`."""
    return re.search(rf"(?<![A-Z_]){setting}(?![A-Z_])", line) is not None


# No development VAPID key exists to keep by mistake: `make run` generates one per checkout.
CASES = [(service, setting, weakness) for service, names in SECRETS.items() for setting in names for weakness in WEAK
         if (setting, weakness) != ("VAPID_PRIVATE_KEY", "development default")]


@pytest.mark.tally(ATTACK, WEAK_SECRETS)
@pytest.mark.parametrize("service, setting, weakness", CASES)
def test_service_refuses_to_start_with_a_weak_secret(stores, service, setting, weakness):
    value = DEVELOPMENT_DEFAULTS[setting] if weakness == "development default" else WEAK[weakness]
    status, stderr = start(service, service_env(stores, **{setting: value}))
    assert status is not None, f"{service} started with {setting} {weakness}"
    assert status != 0
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {lines}"
    assert names_setting(lines[0], setting), lines[0]


@pytest.mark.parametrize("service", list(SECRETS))
def test_service_starts_with_strong_secrets(stores, service):
    """The control: the same environment with every secret strong starts (and listens)."""
    status, stderr = start(service, service_env(stores))
    assert status is None, f"{service} exited with {status}: {stderr}"


@pytest.mark.parametrize("service", list(SECRETS))
def test_development_mode_starts_without_any_secret(stores, service):
    """`make run` needs no secrets: DEV_MODE keeps the development defaults working."""
    status, stderr = start(service, service_env(stores, DEV_MODE="true", **{name: None for name in EVERY_SECRET}))
    assert status is None, f"{service} exited with {status}: {stderr}"


@pytest.mark.tally(ATTACK, WEAK_SECRETS)
@pytest.mark.parametrize("weakness", [weakness for weakness in WEAK if weakness != "development default"])
def test_a_gateway_with_turn_refuses_a_weak_turn_secret(stores, weakness):
    """TURN is optional (no TURN_URLS: no secret needed, as above); once configured, coturn's
    shared secret signs every user's TURN credentials and is held to the rule of every secret."""
    env = service_env(stores, TURN_URLS="turn:turn.example.com:3478", TURN_SECRET=WEAK[weakness])
    status, stderr = start("gateway", env)
    assert status is not None and status != 0, f"the gateway started with TURN_SECRET {weakness}"
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and names_setting(lines[0], "TURN_SECRET"), lines
