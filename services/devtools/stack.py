"""Runs Parley's services as real processes: the whole system for `parley dev`, and for tests."""

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ..shared.web import TASKS_WRITTEN


@dataclass
class ServiceProcess:
    """One service process (`python -m services.<service>`) on ports of its own (public, internal)."""

    service: str
    name: str
    port: int
    internal_port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen | None = None
    started_before: bool = False
    # Where it runs: `python -m` imports `services` from there first (another release's tree, in
    # the rolling-upgrade test); None: here.
    cwd: Path | None = None

    @property
    def url(self) -> str:
        """The public listener."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def internal_url(self) -> str:
        """The internal listener: `/internal/*`, `/readyz`, `/metrics`."""
        return f"http://127.0.0.1:{self.internal_port}"

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # A new run starts a new log; a restart of the same process appends to it.
        log_file = open(self.log_path, "ab" if self.started_before else "wb")
        self.started_before = True
        env = {
            **os.environ, **self.env, "PORT": str(self.port), "INTERNAL_PORT": str(self.internal_port), "NODE_ID": self.name
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.service}"], env=env, stdout=log_file, stderr=log_file,
            cwd=self.cwd,
        )
        log_file.close()

    def wait_ready(self, timeout: float = 30, path: str = "/readyz") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log_path}. "
                                   f"Its log ends:\n{self.log_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.internal_url + path, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} was not ready within {timeout} s; see {self.log_path}. "
                           f"Where it was:\n{self.stack_dump()}")

    def stack_dump(self, wait_seconds: float = 2.0) -> str:
        """The running process's threads' stacks and asyncio tasks' awaits (it writes them to its
        log on SIGUSR1 and SIGUSR2: see services/shared/entrypoint.py), or why there are none.
        Asked only once a start has failed: a process still importing, before its handlers are
        set, is ended by the signal."""
        if not self.alive():
            return "(not running)"
        before = self.log_path.stat().st_size
        self.process.send_signal(signal.SIGUSR1)
        self.process.send_signal(signal.SIGUSR2)
        deadline, written = time.monotonic() + wait_seconds, ""
        while time.monotonic() < deadline:  # written by the process in its own time
            time.sleep(0.1)
            with open(self.log_path, "rb") as log_file:
                log_file.seek(before)
                written = log_file.read().decode(errors="replace")
            if "File " in written and TASKS_WRITTEN in written:
                break
        return written[-6000:] or f"(no stack written within {wait_seconds} s)"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            self.process.send_signal(signum)

    def wait(self, timeout: float) -> int | None:
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM (a graceful drain), then SIGKILL if it does not exit in time."""
        if not self.alive():
            return
        self.signal(signal.SIGTERM)
        if self.wait(timeout) is None:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Stack:
    """History, presence and N gateway nodes sharing one environment."""

    env: dict[str, str]
    log_dir: Path
    processes: dict[str, ServiceProcess] = field(default_factory=dict)

    def add(
        self, service: str, name: str, port: int, internal_port: int, extra_env: dict[str, str] | None = None
    ) -> ServiceProcess:
        process = ServiceProcess(
            service, name, port, internal_port, {**self.env, **(extra_env or {})}, self.log_dir / f"{name}.log"
        )
        self.processes[name] = process
        return process

    def start(self, timeout: float = 30) -> None:
        """Starts every process and waits until each is ready; if one fails to start or to get
        ready, stops those already started before raising (a caller's `stop` never runs then:
        they were left running, e.g. by a bench whose history failed at import)."""
        try:
            for process in self.processes.values():
                process.start()
            for process in self.processes.values():
                process.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            process.signal(signal.SIGTERM)
        for process in reversed(list(self.processes.values())):
            process.stop()

    def __getitem__(self, name: str) -> ServiceProcess:
        return self.processes[name]
