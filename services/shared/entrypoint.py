"""What `python -m services.<service>` does, the same for every service: settings, logging, serve."""

from collections.abc import Callable

from aiohttp import web

from .logs import configure_logging
from .settings import ServiceSettings, load_settings
from .web import run_service


def serve(service: str, settings_class: type[ServiceSettings], create_app: Callable[..., web.Application]) -> None:
    """Reads the settings (exiting with one line when a secret is unfit), then serves until stopped."""
    settings = load_settings(settings_class)
    configure_logging(service, settings.node_id, settings.log_level)
    run_service(create_app(settings), settings)
