"""`python -m services.presence`: the presence service."""

from ..shared.logs import configure_logging
from ..shared.settings import load_settings
from ..shared.web import run_service
from .app import create_app
from .settings import PresenceSettings


def main() -> None:
    settings = load_settings(PresenceSettings)
    configure_logging("presence", settings.node_id, settings.log_level)
    run_service(create_app(settings), settings)


if __name__ == "__main__":
    main()
