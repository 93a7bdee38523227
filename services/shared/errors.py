"""Domain errors with stable codes, and the one JSON error body every service answers with."""

import logging
from enum import StrEnum
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from .fast_json import json_response

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


class ErrorCode(StrEnum):
    INVALID_PAYLOAD = "invalid_payload"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    UNKNOWN_RECEIVER = "unknown_receiver"
    UNKNOWN_SENDER = "unknown_sender"
    UNKNOWN_GROUP = "unknown_group"
    NOT_A_MEMBER = "not_a_member"
    GROUP_FULL = "group_full"
    LAST_ADMIN = "last_admin"
    TOO_MANY_REACTIONS = "too_many_reactions"
    EDIT_WINDOW_CLOSED = "edit_window_closed"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    RATE_LIMITED = "rate_limited"
    STORE_UNAVAILABLE = "store_unavailable"
    SERVICE_UNAVAILABLE = "service_unavailable"
    SHUTTING_DOWN = "shutting_down"
    INTERNAL = "internal"


class ParleyError(Exception):
    """An error a client may see: a status, a stable code and a message without internals."""

    status = 400
    code: str = ErrorCode.INVALID_PAYLOAD

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def body(self) -> dict:
        return {"message": self.message, "code": str(self.code)}


class BadRequest(ParleyError):
    status = 400


class InvalidField(BadRequest):
    """Bad input in one field: the code names the field (`invalid_text`, `invalid_receiverId`)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}", code=f"invalid_{field}")
        self.field = field


class Unauthorized(ParleyError):
    status = 401
    code = ErrorCode.UNAUTHORIZED


class Forbidden(ParleyError):
    status = 403
    code = ErrorCode.FORBIDDEN


class NotFound(ParleyError):
    status = 404
    code = ErrorCode.NOT_FOUND


class UnknownUser(NotFound):
    pass


class NotAMember(Forbidden):
    """Acting in a group one is not, or no longer, a member of (history and gateways refuse it)."""

    code = ErrorCode.NOT_A_MEMBER

    def __init__(self, message: str = "You are not a member of this group"):
        super().__init__(message)


class RateLimited(ParleyError):
    status = 429
    code = ErrorCode.RATE_LIMITED

    def __init__(self, message: str = "Too many requests, slow down", retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = retry_after


class StoreUnavailable(ParleyError):
    status = 503
    code = ErrorCode.STORE_UNAVAILABLE


class ServiceUnavailable(ParleyError):
    status = 503
    code = ErrorCode.SERVICE_UNAVAILABLE


def parse_model(model: type[M], data: object) -> M:
    """Validate `data` as `model`, turning the first pydantic error into an `InvalidField`."""
    if not isinstance(data, dict):
        raise BadRequest("The payload must be a JSON object", code=ErrorCode.INVALID_PAYLOAD)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_field_from(exc) from None


def invalid_field_from(exc: ValidationError) -> InvalidField:
    first = exc.errors(include_url=False, include_input=False)[0]
    field = ".".join(str(part) for part in first["loc"]) or "payload"
    return InvalidField(field, first["msg"])


_CODE_BY_STATUS = {
    400: ErrorCode.INVALID_PAYLOAD,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    429: ErrorCode.RATE_LIMITED,
}


def error_response(status: int, message: str, code: str, headers: dict | None = None) -> web.Response:
    return json_response({"message": message, "code": code}, status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Every error leaves as `{"message", "code"}`; an unexpected one is logged once, answered 500."""
    try:
        return await handler(request)
    except ParleyError as exc:
        headers = {"Retry-After": str(max(1, round(exc.retry_after)))} if isinstance(exc, RateLimited) else None
        return error_response(exc.status, exc.message, exc.code, headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _CODE_BY_STATUS.get(exc.status, ErrorCode.INVALID_PAYLOAD)
        return error_response(exc.status, exc.reason, code)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "Internal error", ErrorCode.INTERNAL)
