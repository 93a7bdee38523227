"""`python -m services.notifier`: the notifier (Web Push for people who are not looking, issue 18)."""

from ..shared.entrypoint import serve
from .app import create_app
from .settings import NotifierSettings

if __name__ == "__main__":
    serve("notifier", NotifierSettings, create_app)
