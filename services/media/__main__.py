"""`python -m services.media`: the media service (attachments)."""

from ..shared.entrypoint import serve
from .app import create_app
from .settings import MediaSettings

if __name__ == "__main__":
    serve("media", MediaSettings, create_app)
