"""Limits every service checks the same way, each named once: the shapes of ids and sizes of lists."""

import re

# A user id is what the social app's tokens carry in `id` (Mongo ObjectIds, uuids, slugs): 1 to
# 64 characters from a set that cannot spell a path, a header, a Redis pattern or SQL.
MAX_USER_ID_LENGTH = 64
USER_ID_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"
_USER_ID = re.compile(USER_ID_PATTERN)
USER_ID_RULE = "must be 1 to 64 letters, digits, '_', '-' or '.'"

# A group id is a decimal digit string ("17"), as a message id is: a Postgres bigint.
GROUP_ID_PATTERN = r"^[0-9]{1,18}$"
_GROUP_ID = re.compile(GROUP_ID_PATTERN)
GROUP_ID_RULE = "must be a group id (up to 18 digits)"


def valid_group_id(value: object) -> bool:
    return isinstance(value, str) and _GROUP_ID.fullmatch(value) is not None


def valid_user_id(value: object) -> bool:
    return isinstance(value, str) and _USER_ID.fullmatch(value) is not None
