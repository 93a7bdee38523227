"""The `parley` command: the whole system for development, migrations, tokens and users."""

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
from pathlib import Path

import asyncpg

from ..history.migrations import apply_migrations
from ..history.store import MessageStore
from ..shared.auth import issue_dev_token
from ..history.models import UserProfile
from ..shared.push import generate_vapid_keys
from ..shared.settings import JwtSettings
from .stack import Stack
from .stores import find_stores

PROJECT_DIR = Path(__file__).resolve().parents[2]
RUN_DIR = PROJECT_DIR / ".run"

DEMO_USERS = [
    UserProfile(_id="665f1c2e8a1b2c3d4e5f0001", userName="ada", name="Ada Lovelace"),
    UserProfile(_id="665f1c2e8a1b2c3d4e5f0002", userName="grace", name="Grace Hopper"),
    UserProfile(_id="665f1c2e8a1b2c3d4e5f0003", userName="alan", name="Alan Turing"),
    UserProfile(_id="665f1c2e8a1b2c3d4e5f0004", userName="edsger", name="Edsger Dijkstra"),
]

# (public, internal) port of each process of `make run`.
DEV_PORTS = {"history": (8100, 8101), "presence": (8200, 8201), "media": (8300, 8301), "notifier": (8400, 8401),
             "gateway-a": (8000, 8090), "gateway-b": (8001, 8091)}


def database_url() -> str:
    if url := os.environ.get("DATABASE_URL"):
        return url
    stores = find_stores(RUN_DIR)
    return stores.database_url


async def migrate_and_add(url: str, profiles: list[UserProfile]) -> None:
    connection = await asyncpg.connect(url)
    try:
        await apply_migrations(connection)
    finally:
        await connection.close()
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        store = MessageStore(pool)
        store.schema_ready = True
        for profile in profiles:
            await store.upsert_user(profile)
    finally:
        await pool.close()


def dev_vapid_keys(path: Path) -> tuple[str, str]:
    """`make run`'s VAPID pair: generated once and kept under .run/, so the browsers that
    subscribed keep receiving pushes across runs (a new key would invalidate them)."""
    if path.exists():
        private, public = json.loads(path.read_text())
        return private, public
    private, public = generate_vapid_keys()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([private, public]))
    path.chmod(0o600)
    return private, public


def command_dev(args: argparse.Namespace) -> int:
    stores = find_stores(RUN_DIR)
    try:
        for note in stores.notes:
            print(note)
        asyncio.run(migrate_and_add(stores.database_url, DEMO_USERS))
        print(f"Migrations applied; {len(DEMO_USERS)} demo users ready.")
        vapid_private, vapid_public = dev_vapid_keys(RUN_DIR / "vapid-dev-keys.json")
        env = {
            "DATABASE_URL": stores.database_url,
            "REDIS_URL": stores.redis_url,
            "HISTORY_URL": f"http://127.0.0.1:{DEV_PORTS['history'][1]}",
            "HISTORY_API_URL": f"http://127.0.0.1:{DEV_PORTS['history'][0]}",
            "PRESENCE_URL": f"http://127.0.0.1:{DEV_PORTS['presence'][1]}",
            "MEDIA_API_URL": f"http://127.0.0.1:{DEV_PORTS['media'][0]}",
            # Uploads on disk under .run/ (issue 16); production sets s3://bucket.
            "STORAGE_URL": f"file://{(RUN_DIR / 'media').resolve()}",
            # Web Push (issue 18): the development pair; production takes them from a Secret.
            "VAPID_PRIVATE_KEY": vapid_private,
            "VAPID_PUBLIC_KEY": vapid_public,
            "DEV_MODE": "true",
            "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO"),
        }
        stack = Stack(env, RUN_DIR / "logs")
        for name, (port, internal_port) in DEV_PORTS.items():
            stack.add(name.split("-")[0], name, port, internal_port)
        stack.start()
        try:
            print_welcome(stack)
            wait_for_interrupt(stack)
        finally:
            print("\nStopping...")
            stack.stop()
    finally:
        stores.stop()
    print("Stopped.")
    return 0


def print_welcome(stack: Stack) -> None:
    settings = JwtSettings()
    print()
    for name in ("gateway-a", "gateway-b"):
        print(f"  {name}: http://localhost:{stack[name].port}")
    print(f"  logs:      {stack.log_dir}")
    print("\nDemo users (open one gateway per browser window and pick a user; or use these development tokens):")
    for profile in DEMO_USERS:
        print(f"  {profile.user_name:<8} {profile.id}  token={issue_dev_token(profile.id, settings)}")
    print("\nCtrl-C stops everything.")


def wait_for_interrupt(stack: Stack) -> None:
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    while not stopping.wait(1):
        for process in stack.processes.values():
            if not process.alive():
                print(f"{process.name} exited unexpectedly; see {process.log_path}", file=sys.stderr)
                return


def command_vapid_keys(args: argparse.Namespace) -> int:
    """A new VAPID pair for a deployment (issue 18), as environment lines: the private key goes
    in a Secret (VAPID_PRIVATE_KEY), the public one in the configuration (VAPID_PUBLIC_KEY)."""
    private, public = generate_vapid_keys()
    print(f"VAPID_PRIVATE_KEY={private}\nVAPID_PUBLIC_KEY={public}")
    return 0


def command_migrate(args: argparse.Namespace) -> int:
    asyncio.run(migrate_and_add(database_url(), []))
    print("Migrations applied.")
    return 0


def command_token(args: argparse.Namespace) -> int:
    print(issue_dev_token(args.user_id, JwtSettings(), ttl_seconds=args.ttl))
    return 0


def command_users_add(args: argparse.Namespace) -> int:
    profile = UserProfile(_id=args.user_id, userName=args.username, name=args.name or "", profileImage=args.image or "")
    asyncio.run(migrate_and_add(database_url(), [profile]))
    print(f"User {profile.id} ({profile.user_name}) saved.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="parley", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("dev", help="run the whole system: history, presence, media, notifier, gateways A and B").set_defaults(
        run=command_dev
    )
    commands.add_parser("migrate", help="apply the database migrations").set_defaults(run=command_migrate)
    commands.add_parser("vapid-keys", help="print a new VAPID key pair for Web Push (VAPID_PRIVATE_KEY, "
                                           "VAPID_PUBLIC_KEY)").set_defaults(run=command_vapid_keys)
    token = commands.add_parser("token", help="print a development JWT for a user id (valid only with DEV_MODE)")
    token.add_argument("user_id")
    token.add_argument("--ttl", type=int, default=7 * 24 * 3600, help="seconds the token is valid")
    token.set_defaults(run=command_token)
    users = commands.add_parser("users", help="manage user profiles").add_subparsers(dest="users", required=True)
    add = users.add_parser("add", help="add or update a profile")
    add.add_argument("user_id")
    add.add_argument("--username", required=True)
    add.add_argument("--name")
    add.add_argument("--image")
    add.set_defaults(run=command_users_add)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
