"""Finds Postgres and Redis for development and tests, or starts private ones.

Order: the URL in `DATABASE_URL` / `REDIS_URL`; else the local server on the default port when
it answers; else a private server started here on a data dir of its own. Postgres refuses to
run as root, so as root the private cluster runs as the `postgres` user.
"""

import asyncio
import glob
import os
import pwd
import random
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass
class Stores:
    database_url: str
    redis_url: str
    notes: list[str] = field(default_factory=list)
    private: list["PrivateServer"] = field(default_factory=list)

    def stop(self) -> None:
        for server in reversed(self.private):
            server.stop()


# Ports handed out by this process, not handed out again: a caller listens on its port later.
_HANDED_OUT: set[int] = set()
PORTS_BELOW_EPHEMERAL = 10_000


def free_port() -> int:
    """A port nothing listens on now, for a process to listen on soon, below the kernel's ephemeral
    range (net.ipv4.ip_local_port_range), from which every outgoing connection takes its local
    port. A port from that range (bind to port 0) could be taken by a client's connection before
    the service bound it: one full run saw a media service exit with "address already in use"."""
    lowest_ephemeral = _lowest_ephemeral_port()
    candidates = range(max(1024, lowest_ephemeral - PORTS_BELOW_EPHEMERAL), lowest_ephemeral)
    if len(_HANDED_OUT) > len(candidates) // 2:  # a long run: the earliest are long released
        _HANDED_OUT.clear()
    for _ in range(len(candidates)):
        port = random.choice(candidates)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:  # in use (a listener, or a connection still closing)
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free port found in {candidates.start}-{candidates.stop - 1}")


def _lowest_ephemeral_port() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):  # not Linux: IANA's dynamic range
        return 49152


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def postgres_answers(url: str) -> bool:
    async def probe() -> None:
        connection = await asyncpg.connect(url, timeout=3)
        await connection.close()

    try:
        asyncio.run(probe())
        return True
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False


def redis_answers(url: str) -> bool:
    """Whether one Redis server answers a PING. Synchronous (tests start private servers from
    inside their event loop), so not through `redis_client`: it only ever probes one server
    (the default one, or a private one being started); a cluster's URL is taken as given."""
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def ensure_database(admin_url: str, database: str) -> str:
    """Creates `database` if missing; its URL."""

    async def create() -> None:
        connection = await asyncpg.connect(admin_url, timeout=5)
        try:
            exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
            if not exists:
                await connection.execute(f'CREATE DATABASE "{database}"')
        finally:
            await connection.close()

    asyncio.run(create())
    return with_database(admin_url, database)


def drop_database(admin_url: str, database: str) -> None:
    async def drop() -> None:
        connection = await asyncpg.connect(admin_url, timeout=5)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        finally:
            await connection.close()

    asyncio.run(drop())


def find_stores(run_dir: Path, database: str = "parley") -> Stores:
    """Postgres (with `database` created) and Redis, saying in `notes` which ones and why."""
    stores = Stores(database_url="", redis_url="")
    if url := os.environ.get("DATABASE_URL"):
        stores.notes.append(f"Postgres: DATABASE_URL ({_safe(url)})")
        stores.database_url = url
    elif postgres_answers(DEFAULT_POSTGRES_URL):
        stores.notes.append("Postgres: the local server on 127.0.0.1:5432")
        stores.database_url = ensure_database(DEFAULT_POSTGRES_URL, database)
    else:
        server = PrivatePostgres(run_dir / "postgres")
        server.start()
        stores.private.append(server)
        stores.notes.append(f"Postgres: none answered on 5432, started a private one ({server.describe()})")
        stores.database_url = ensure_database(server.admin_url, database)
    if url := os.environ.get("REDIS_URL"):
        stores.notes.append(f"Redis: REDIS_URL ({_safe(url)})")
        stores.redis_url = url
    elif redis_answers(DEFAULT_REDIS_URL):
        stores.notes.append("Redis: the local server on 127.0.0.1:6379")
        stores.redis_url = DEFAULT_REDIS_URL
    else:
        server = PrivateRedis(run_dir / "redis")
        server.start()
        stores.private.append(server)
        stores.notes.append(f"Redis: none answered on 6379, started a private one ({server.describe()})")
        stores.redis_url = server.url
    return stores


def _safe(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@"))
    return urlunsplit(parts)


class PrivateServer:
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def describe(self) -> str: ...


class PrivatePostgres(PrivateServer):
    """A throwaway cluster from Debian's binaries: fsync off, so it survives a killed server, not a crashed machine."""

    def __init__(self, data_dir: Path, port: int | None = None):
        self.port = port or free_port()
        self.bin_dir = postgres_bin_dir()
        self.as_root = os.geteuid() == 0
        self.data_dir = self._reachable_dir(data_dir)
        self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def describe(self) -> str:
        return f"port {self.port}, data in {self.data_dir}"

    def _reachable_dir(self, wanted: Path) -> Path:
        # As root the server runs as `postgres`, which must be able to reach its data dir:
        # a project under a private home (mode 700) cannot hold it, so use a temp dir then.
        if not self.as_root or _reachable_by("postgres", wanted.parent):
            return wanted
        return Path(tempfile.gettempdir()) / f"parley-postgres-{abs(hash(str(wanted.resolve()))) % 10**8}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = list(args)
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True)

    def start(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if not (self.data_dir / "PG_VERSION").exists():
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir.mkdir(parents=True)
            if self.as_root:
                shutil.chown(self.data_dir, "postgres", "postgres")
            self._run(f"{self.bin_dir}/initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "--no-sync")
        options = (
            # fsync off risks data only if the machine itself crashes; commits still reach the
            # WAL before they return, so a killed or restarted server loses nothing committed.
            f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        self._run(f"{self.bin_dir}/pg_ctl", "-D", str(self.data_dir), "-l", str(self.data_dir / "log"), "-w",
                  "-t", "30", "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(f"{self.bin_dir}/pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop", check=False)

    def sql(self, statement: str, database: str = "postgres") -> str:
        """One statement through psql (as the server's user), its single value."""
        answer = self._run(f"{self.bin_dir}/psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                           "-d", database, "-Atc", statement)
        return answer.stdout.strip()


class PrivateReplica(PrivatePostgres):
    """A streaming replica of a `PrivatePostgres`: a base backup that follows the primary
    (`pg_basebackup -R` writes its connection and `standby.signal`), read-only, hot standby."""

    def __init__(self, primary: PrivatePostgres, data_dir: Path, port: int | None = None):
        super().__init__(data_dir, port)
        self.primary = primary
        # A new replica each time: an old one's connection names a primary port of the past.
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def start(self) -> None:
        if not (self.data_dir / "PG_VERSION").exists():
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
            self.data_dir.mkdir(mode=0o700)
            if self.as_root:
                shutil.chown(self.data_dir, "postgres", "postgres")
            self._run(f"{self.bin_dir}/pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary.port),
                      "-U", "postgres", "-D", str(self.data_dir), "-R", "-X", "stream", "--no-sync")
            for lock in self.data_dir.glob(".s.PGSQL.*"):  # the primary's socket lock, copied along
                lock.unlink()
        super().start()

    def restart(self) -> None:
        self.stop()
        self.start()


class PrivateRedis(PrivateServer):
    def __init__(self, data_dir: Path, port: int | None = None):
        self.port = port or free_port()
        self.data_dir = data_dir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def describe(self) -> str:
        return f"port {self.port}"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run `make deps` (apt-get install redis-server)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.data_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not redis_answers(self.url):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"private redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


class PrivateRedisCluster(PrivateServer):
    """A real Redis Cluster on 127.0.0.1: `masters` masters, each with one replica, on free ports,
    no persistence. A failed master's replica takes over within about `node_timeout_ms`."""

    def __init__(self, data_dir: Path, masters: int = 3, node_timeout_ms: int = 1000):
        self.data_dir = data_dir
        self.ports = _cluster_ports(2 * masters)
        self.node_timeout_ms = node_timeout_ms
        self.processes: dict[int, subprocess.Popen] = {}
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def describe(self) -> str:
        return "ports " + ", ".join(map(str, self.ports))

    def start(self, timeout: float = 30) -> None:
        binary = shutil.which("redis-server")
        if binary is None or shutil.which("redis-cli") is None:
            raise RuntimeError("redis-server / redis-cli are not installed: run `make deps` (apt-get install redis-server)")
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.data_dir.mkdir(parents=True)
        deadline = time.monotonic() + timeout
        try:
            for port in self.ports:
                self.start_node(port)
            for port in self.ports:
                while not redis_answers(f"redis://127.0.0.1:{port}/0"):
                    self._check(port, deadline)
            subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{port}" for port in self.ports),
                            "--cluster-replicas", "1", "--cluster-yes"],
                           check=True, capture_output=True, timeout=max(1.0, deadline - time.monotonic()))
            self.wait_healthy(deadline - time.monotonic())
        except BaseException:
            self.stop()
            raise

    def start_node(self, port: int) -> None:
        """Starts (or starts again, with the cluster it knew) the node on `port`."""
        self.processes[port] = subprocess.Popen(
            [shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.data_dir), "--cluster-enabled", "yes",
             "--cluster-config-file", f"nodes-{port}.conf", "--cluster-node-timeout", str(self.node_timeout_ms),
             "--logfile", str(self.data_dir / f"{port}.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _check(self, port: int, deadline: float) -> None:
        if time.monotonic() > deadline or self.processes[port].poll() is not None:
            raise RuntimeError(f"redis-server (cluster node) did not start on port {port}; see {self.data_dir}")
        time.sleep(0.05)

    def node(self, port: int) -> redis.Redis:
        """A client of one node (not of the cluster): CLUSTER commands, INFO."""
        return redis.Redis(port=port, socket_timeout=5, socket_connect_timeout=2, decode_responses=True)

    def roles(self) -> dict[int, str]:
        """port -> "master" or "slave", as each live node says."""
        roles = {}
        for port, process in self.processes.items():
            if process.poll() is None:
                with self.node(port) as client:
                    roles[port] = client.execute_command("ROLE")[0]
        return roles

    def masters(self) -> list[int]:
        return sorted(port for port, role in self.roles().items() if role == "master")

    def replica_of(self, master_port: int) -> int:
        with self.node(master_port) as client:
            master_id = client.execute_command("CLUSTER", "MYID")
            line = client.execute_command("CLUSTER", "REPLICAS", master_id)[0]
        return int(line.split()[1].split("@")[0].rsplit(":", 1)[1])

    def wait_healthy(self, timeout: float = 30) -> None:
        """Until every live node says `cluster_state:ok` with every slot served, and, when every
        node is up, every master has its replica again (a restarted node as a replica, in sync)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                states, roles = [], []
                for port, process in self.processes.items():
                    if process.poll() is None:
                        with self.node(port) as client:
                            info = client.execute_command("CLUSTER", "INFO")
                            roles.append(client.execute_command("ROLE"))
                        states.append("cluster_state:ok" in info and "cluster_slots_ok:16384" in info)
                replicas = [role for role in roles if role[0] == "slave"]
                paired = (len(roles) < len(self.processes)
                          or (2 * len(replicas) == len(roles) and all(role[3] == "connected" for role in replicas)
                              and all(len(role[2]) == 1 for role in roles if role[0] == "master")))
                if states and all(states) and paired:
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Redis Cluster was not healthy within {timeout:.0f} s; see {self.data_dir}")
            time.sleep(0.1)

    def kill(self, port: int) -> None:
        """SIGKILL for one node."""
        process = self.processes[port]
        process.kill()
        process.wait(timeout=10)

    def cpu_seconds(self) -> float:
        """used_cpu_sys + used_cpu_user, summed over the live nodes."""
        total = 0.0
        for port, process in self.processes.items():
            if process.poll() is None:
                with self.node(port) as client:
                    info = client.info("cpu")
                total += float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
        return total

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()


def _cluster_ports(count: int) -> list[int]:
    """Free ports P with P + 10000 free too (a cluster node's bus port): P <= 55535."""
    ports: list[int] = []
    for _ in range(200):
        port = random.randint(20000, 55535)
        if port in ports:
            continue
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise RuntimeError("no free ports for a Redis Cluster")


def postgres_bin_dir() -> str:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda path: int(path.split("/")[4]))
    if not candidates:
        raise RuntimeError(
            "No Postgres answers and no Postgres binaries were found under /usr/lib/postgresql: "
            "run `make deps` (apt-get install postgresql) or set DATABASE_URL"
        )
    return os.path.dirname(candidates[-1])


def _reachable_by(user: str, folder: Path) -> bool:
    """Whether `user` can traverse every folder down to `folder` (checked by mode bits)."""
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        return False
    folder = folder.resolve()
    for part in [folder, *folder.parents]:
        if not part.exists():
            continue
        mode = part.stat()
        if mode.st_uid == uid:
            if not mode.st_mode & 0o100:
                return False
        elif not mode.st_mode & 0o001:
            return False
    return True
