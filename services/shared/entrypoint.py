"""What `python -m services.<service>` does, the same for every service: settings, logging, serve."""

import faulthandler
import signal
from collections.abc import Callable

from aiohttp import web

from .logs import configure_logging
from .settings import ServiceSettings, load_settings
from .web import run_service


def serve(service: str, settings_class: type[ServiceSettings], create_app: Callable[..., web.Application]) -> None:
    """Reads the settings (exiting with one line when a secret is unfit), then serves until stopped.
    SIGUSR1 writes every thread's stack to stderr, and SIGUSR2 (once the event loop runs: see
    `write_task_stacks`) every asyncio task's awaits: what a process that hangs (not ready, never
    listening, never stopping) is doing, asked without stopping it (`Stack.wait_ready` does on
    its timeout)."""
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # before the loop's handler: not a reason to die
    settings = load_settings(settings_class)
    configure_logging(service, settings.node_id, settings.log_level)
    run_service(create_app(settings), settings)
