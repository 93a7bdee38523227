"""Query-string parameters, validated with errors that name the parameter."""

from collections.abc import Mapping
from typing import NamedTuple

from .errors import InvalidField
from .limits import MAX_IDS_PER_PRESENCE_QUERY, USER_ID_RULE, valid_user_id

MAX_CURSOR = 2**63 - 1


class PageSize(NamedTuple):
    """A route's `limit`: what it answers without one, and the most it answers."""

    default: int
    most: int


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


def limit_param(query: Mapping[str, str], size: PageSize) -> int:
    return int_param(query, "limit", default=size.default, low=1, high=size.most)


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


def user_id_param(value: object, name: str) -> str:
    """A user id (path, query or event field): the one rule of limits.py, refused naming the field."""
    if not valid_user_id(value):
        raise InvalidField(name, USER_ID_RULE)
    return value


def user_ids_param(query: Mapping[str, str], name: str = "ids") -> list[str]:
    """`?ids=a,b,c`: up to MAX_IDS_PER_PRESENCE_QUERY user ids, each once, in order."""
    ids = [part.strip() for part in query.get(name, "").split(",") if part.strip()]
    if len(ids) > MAX_IDS_PER_PRESENCE_QUERY:
        raise InvalidField(name, f"at most {MAX_IDS_PER_PRESENCE_QUERY} ids")
    if not all(valid_user_id(user_id) for user_id in ids):
        raise InvalidField(name, f"each id {USER_ID_RULE}")
    return list(dict.fromkeys(ids))
