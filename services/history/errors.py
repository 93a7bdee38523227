"""The errors of history's own rules (groups, issue 15; reactions and edits, issue 16), with the codes clients code against."""

from ..shared.errors import ErrorCode, ParleyError


class UnknownGroup(ParleyError):
    status = 404
    code = ErrorCode.UNKNOWN_GROUP


class GroupFull(ParleyError):
    """The change would take a group past MAX_GROUP_MEMBERS."""

    status = 409
    code = ErrorCode.GROUP_FULL


class LastAdmin(ParleyError):
    """The last admin may not leave, or be demoted, while other members remain."""

    status = 409
    code = ErrorCode.LAST_ADMIN


class TooManyReactions(ParleyError):
    """A user already put MAX_REACTIONS_PER_USER distinct emoji on this message."""

    status = 409
    code = ErrorCode.TOO_MANY_REACTIONS


class EditWindowClosed(ParleyError):
    """A message may be edited for EDIT_WINDOW_SECONDS after it was sent, not later."""

    status = 403
    code = ErrorCode.EDIT_WINDOW_CLOSED


def unknown_group() -> UnknownGroup:
    return UnknownGroup("No such group")

