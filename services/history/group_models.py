"""Group payloads: what clients send to the group routes (pydantic, the parsers and the OpenAPI
schemas), and the builders of the group object and its members from stored rows."""

from typing import Any, Literal

from pydantic import Field

from ..shared.models import Text, UserId, WireModel
from .models import iso

MAX_GROUP_NAME_LENGTH = 100
MAX_GROUP_IMAGE_LENGTH = 2048  # a URL
# Ids in one request: the member limit is a setting (checked by the store), this only bounds the body.
MAX_IDS_PER_REQUEST = 10_000

GroupName = Text(1, MAX_GROUP_NAME_LENGTH)
GroupImage = Text(0, MAX_GROUP_IMAGE_LENGTH)
Role = Literal["admin", "member"]
Row = Any  # an asyncpg.Record


class CreateGroup(WireModel):
    """`POST /api/groups`: `{"name": "Climbing", "memberIds": ["u2", "u3"], "image": ""}` (I become its admin)."""

    name: GroupName
    member_ids: list[UserId] = Field(alias="memberIds", min_length=1, max_length=MAX_IDS_PER_REQUEST)
    image: GroupImage = ""


class UpdateGroup(WireModel):
    """`PATCH /api/groups/{groupId}` (admins): `{"name": "Bouldering"}`, `{"image": "https://..."}` or both."""

    name: GroupName | None = None
    image: GroupImage | None = None


class AddMembers(WireModel):
    """`POST /api/groups/{groupId}/members` (admins): `{"userIds": ["u4"]}`."""

    user_ids: list[UserId] = Field(alias="userIds", min_length=1, max_length=MAX_IDS_PER_REQUEST)


class SetRole(WireModel):
    """`PUT /api/groups/{groupId}/members/{userId}` (admins): `{"role": "admin"}`."""

    role: Role


class GroupMember(WireModel):
    """`{"_id": "u2", "userName": "ada", "name": "Ada", "profileImage": "", "role": "member", "readUpTo": "42"}`."""

    id: str = Field(alias="_id")
    user_name: str = Field(alias="userName")
    name: str
    profile_image: str = Field(alias="profileImage")
    role: Role
    read_up_to: str | None = Field(alias="readUpTo")


class GroupOut(WireModel):
    """`{"_id": "17", "name": "Climbing", "image": "", "createdBy": "u1", "createdAt": "...", "members": [...]}`."""

    id: str = Field(alias="_id")
    name: str
    image: str
    created_by: str = Field(alias="createdBy")
    created_at: str = Field(alias="createdAt")
    members: list[GroupMember]


def member_json(row: Row) -> dict:
    """A `GroupMember`, from a `users` row joined with its `group_members` row."""
    read_up_to = row["read_up_to"]
    return {
        "_id": row["id"],
        "userName": row["user_name"],
        "name": row["name"],
        "profileImage": row["profile_image"],
        "role": row["role"],
        "readUpTo": str(read_up_to) if read_up_to is not None else None,
    }


def group_json(row: Row, members: list[dict]) -> dict:
    """A `GroupOut`, from a `groups` row and its members (built by `member_json`)."""
    return {
        "_id": str(row["id"]),
        "name": row["name"],
        "image": row["image"],
        "createdBy": row["created_by"],
        "createdAt": iso(row["created_at"]),
        "members": members,
    }
