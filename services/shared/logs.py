"""One JSON line per log record, carrying the service, node and request id or socket id."""

import contextvars
import itertools
import json
import logging
import os
import sys
import time

from aiohttp.http_exceptions import HttpProcessingError

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
sid_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("sid", default=None)

# Request ids: random per process, then a counter. Unique across the cluster like a uuid4, without
# reading 16 random bytes from the kernel for every socket event.
_ID_PREFIX = os.urandom(8).hex()
_id_counter = itertools.count()


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_id_counter):08x}"


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str, node: str):
        super().__init__()
        self._static = {"service": service, "node": node}

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **self._static,
        }
        if (request_id := request_id_var.get()) is not None:
            line["request_id"] = request_id
        if (sid := sid_var.get()) is not None:
            line["sid"] = sid
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


class ClientFaultFilter(logging.Filter):
    """aiohttp logs a malformed HTTP request (a 4xx it answers itself) at ERROR with a traceback:
    a client's fault, and a cheap way to flood the error log. Make it one warning line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if record.levelno >= logging.ERROR and isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 0) < 500:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = f"refused a malformed request: {exc.code} {exc.message}", ()
            record.exc_info = record.exc_text = None
        return True


def configure_logging(service: str, node: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service, node))
    handler.addFilter(ClientFaultFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Access logs are replaced by our own request metrics; probes must not flood the log.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
