"""`python -m services.gateway`: one gateway node."""

from ..shared.logs import configure_logging
from ..shared.web import run_service
from .app import create_app
from .settings import GatewaySettings


def main() -> None:
    settings = GatewaySettings()
    configure_logging("gateway", settings.node_id, settings.log_level)
    run_service(create_app(settings), settings.host, settings.port, settings.shutdown_grace_seconds)


if __name__ == "__main__":
    main()
