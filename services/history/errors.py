"""The errors of group conversations, with the codes issue 15's clients code against."""

from ..shared.errors import ErrorCode, NotAMember, ParleyError


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


def unknown_group() -> UnknownGroup:
    return UnknownGroup("No such group")


def not_a_member() -> NotAMember:
    return NotAMember()
