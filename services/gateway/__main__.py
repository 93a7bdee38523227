"""`python -m services.gateway`: one gateway node."""

from ..shared.entrypoint import serve
from .app import create_app
from .settings import GatewaySettings

if __name__ == "__main__":
    serve("gateway", GatewaySettings, create_app)
