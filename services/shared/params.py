"""Query-string parameters, validated with errors that name the parameter."""

from collections.abc import Mapping

from .errors import InvalidField

MAX_CURSOR = 2**63 - 1


def text_param(value: str, name: str, *, low: int, high: int) -> str:
    """A text parameter (query or path) bound for Postgres: a length range, and no NUL."""
    value = value.strip()
    if not low <= len(value) <= high or "\x00" in value:
        raise InvalidField(name, f"must be {low} to {high} characters, without NUL")
    return value


def int_param(query: Mapping[str, str], name: str, *, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 6:
        raise InvalidField(name, f"must be a whole number from {low} to {high}")
    value = int(raw)
    if not low <= value <= high:
        raise InvalidField(name, f"must be a whole number from {low} to {high}")
    return value


def cursor_param(query: Mapping[str, str], name: str) -> int | None:
    """A message id used as a cursor (`before`, `after`): digits only, or absent."""
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    return message_id(raw, name)


def message_id(raw: str, name: str = "messageId") -> int:
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or int(raw) > MAX_CURSOR:
        raise InvalidField(name, "must be a message id (digits)")
    return int(raw)
