"""Limits every service checks the same way, each named once: the shapes of ids and sizes of lists."""

import re

# A user id is what the social app's tokens carry in `id` (Mongo ObjectIds, uuids, slugs): 1 to
# 64 characters from a set that cannot spell a header, a Redis pattern or SQL, and never the
# path segments "." or "..". Never trimmed: " ada" is not "ada", it is refused.
MAX_USER_ID_LENGTH = 64
USER_ID_PATTERN = r"^(?!\.{1,2}$)[A-Za-z0-9_.\-]{1,64}$"
_USER_ID = re.compile(USER_ID_PATTERN)
USER_ID_RULE = "must be 1 to 64 letters, digits, '_', '-' or '.' (not '.' or '..')"

# The other ids a client or a node chooses: long enough for a uuid or a host name, short enough
# to stay cheap as a Redis hash field and in a unique index.
MAX_CLIENT_ID_LENGTH = 64  # the sender's own id of a message, which makes a retry harmless
MAX_NODE_ID_LENGTH = 64  # a gateway node (its host name)
MAX_SOCKET_ID_LENGTH = 64  # a Socket.IO sid (python-socketio's are 20 characters)

MAX_USER_NAME_LENGTH = 64
MAX_TEXT_LENGTH = 4000  # characters of one message
# Distinct emoji one user may put on one message (issue 16): a reaction bar, not a text channel.
MAX_REACTIONS_PER_USER = 20
# Characters of the replied message quoted in a reply's `replyTo.text`.
REPLY_QUOTE_LENGTH = 200

# Ids in one presence query (`?ids=a,b,c`): 100 ids of MAX_USER_ID_LENGTH characters stay under
# the 8 KB request line a server accepts. A caller with more asks in chunks of this size.
MAX_IDS_PER_PRESENCE_QUERY = 100
MAX_WATCHED_USERS = 500  # users one socket may watch with `watchPresence`

MAX_STORE_BATCH = 256  # messages in one group commit (`POST /internal/messages/batch`)
# Recovering sockets whose replays one `POST /internal/replay` reads (each up to RECOVERY_MAX_EVENTS
# events): a node's reconnecting sockets share calls, and no answer grows past a few MB.
MAX_REPLAYS_PER_CALL = 32
MAX_REPLAY_EVENTS = 10_000  # RECOVERY_MAX_EVENTS's ceiling, and a replay route's `limit`: the changes one replay may carry
MAX_SOCKETS_PER_CALL = 100_000  # sockets in one presence report (a node's full list)
MAX_USERS_PER_PARTNERS_QUERY = 10_000  # users in one `POST /internal/partners`

# A group id is a decimal digit string ("17"), as a message id is: a Postgres bigint.
GROUP_ID_PATTERN = r"^[0-9]{1,18}$"
_GROUP_ID = re.compile(GROUP_ID_PATTERN)
GROUP_ID_RULE = "must be a group id (up to 18 digits)"


# A message id is a decimal digit string ("42"): a Postgres bigint.
MESSAGE_ID_PATTERN = r"^[0-9]{1,18}$"
_MESSAGE_ID = re.compile(MESSAGE_ID_PATTERN)
MESSAGE_ID_RULE = "must be a message id (up to 18 digits)"


def valid_message_id(value: object) -> bool:
    return isinstance(value, str) and _MESSAGE_ID.fullmatch(value) is not None


def valid_group_id(value: object) -> bool:
    return isinstance(value, str) and _GROUP_ID.fullmatch(value) is not None


def valid_user_id(value: object) -> bool:
    return isinstance(value, str) and _USER_ID.fullmatch(value) is not None


# An attachment id: 128 random bits in hex, unguessable, and a shape that cannot spell a path.
ATTACHMENT_ID_PATTERN = r"^[0-9a-f]{32}$"
_ATTACHMENT_ID = re.compile(ATTACHMENT_ID_PATTERN)
ATTACHMENT_ID_RULE = "must be an attachment id (32 hexadecimal digits)"
MAX_ATTACHMENTS_PER_MESSAGE = 10
MAX_ATTACHMENT_NAME_LENGTH = 255


def valid_attachment_id(value: object) -> bool:
    return isinstance(value, str) and _ATTACHMENT_ID.fullmatch(value) is not None


# --- calls (issue 17) ---
# A call id: 128 random bits in hex, drawn by the gateway that placed the call. Unguessable, so
# it is no capability: every event on a call is checked against its two parties anyway.
CALL_ID_PATTERN = r"^[0-9a-f]{32}$"
_CALL_ID = re.compile(CALL_ID_PATTERN)
CALL_ID_RULE = "must be a call id (32 hexadecimal digits)"
CALL_KINDS = ("audio", "video")
# An SDP offer or answer, in characters. Chromium's video offer with every codec is about 6 KB,
# Firefox's a little more; 16 KiB leaves room and keeps a relay through Redis small (the
# engine.io packet limit, MAX_PAYLOAD_BYTES, is 64 KiB).
MAX_SDP_LENGTH = 16 * 1024
# One ICE candidate line ("candidate:... typ relay raddr ..."): under 300 characters in practice.
MAX_CANDIDATE_LENGTH = 1024
MAX_SDP_MID_LENGTH = 64  # the media section's id ("0", "audio")
MAX_SDP_MLINE_INDEX = 64  # media sections in one session
MAX_UFRAG_LENGTH = 256  # ICE allows 4 to 256 characters


def valid_call_id(value: object) -> bool:
    return isinstance(value, str) and _CALL_ID.fullmatch(value) is not None
