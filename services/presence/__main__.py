"""`python -m services.presence`: the presence service."""

from ..shared.entrypoint import serve
from .app import create_app
from .settings import PresenceSettings

if __name__ == "__main__":
    serve("presence", PresenceSettings, create_app)
