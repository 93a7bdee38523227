"""The errors of group conversations, with the codes issue 15's clients code against."""

from ..shared.errors import ParleyError


class UnknownGroup(ParleyError):
    status = 404
    code = "unknown_group"


class NotAMember(ParleyError):
    """Acting in a group one is not, or no longer, a member of."""

    status = 403
    code = "not_a_member"


class GroupFull(ParleyError):
    """The change would take a group past MAX_GROUP_MEMBERS."""

    status = 409
    code = "group_full"


class LastAdmin(ParleyError):
    """The last admin may not leave, or be demoted, while other members remain."""

    status = 409
    code = "last_admin"


def unknown_group() -> UnknownGroup:
    return UnknownGroup("No such group")


def not_a_member() -> NotAMember:
    return NotAMember("You are not a member of this group")
