"""Group payloads: each builder writes exactly its model's fields, and a 1:1 message stays as it was."""

from datetime import datetime, timezone

import pytest

from services.history.group_models import CreateGroup, GroupMember, GroupOut, member_json, group_json
from services.history.models import GroupMessageOut, MessageOut, deletion_json, message_json
from services.shared.errors import InvalidField, parse_model
from services.shared.models import StoreMessage

MOMENT = datetime(2026, 11, 24, 10, 0, 0, 123456, tzinfo=timezone.utc)
ROW = {
    "id": 43, "sender_id": "u1", "receiver_id": None, "group_id": 17, "text": "hi all", "client_id": "c-1",
    "is_read": False, "read_at": None, "created_at": MOMENT, "updated_at": MOMENT,
    "s_user_name": "ada", "s_name": "Ada", "s_profile_image": "", "r_user_name": None, "r_name": None,
    "r_profile_image": None, "reply_to_id": None, "edited_at": None, "q_sender_id": None, "q_text": None,
    "q_deleted_at": None,
}
MEMBER_ROW = {"id": "u1", "user_name": "ada", "name": "Ada", "profile_image": "", "role": "admin", "read_up_to": 43}
GROUP_ROW = {"id": 17, "name": "Climbing", "image": "", "created_by": "u1", "created_at": MOMENT}


def wire_names(model) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


@pytest.mark.parametrize(("model", "body"), [
    (GroupMessageOut, message_json(ROW)),
    (GroupMember, member_json(MEMBER_ROW)),
    (GroupOut, group_json(GROUP_ROW, [member_json(MEMBER_ROW)])),
])
def test_each_group_builder_writes_exactly_the_fields_of_its_model(model, body):
    # `attachments` (`type` and `call`) are written only for a message that has some (a call's) (tests/unit/test_models.py).
    assert set(body) == wire_names(model) - {"attachments", "type", "call"}
    model.model_validate(body)


def test_a_group_message_has_no_receiver_and_a_string_group_id():
    body = message_json(ROW)
    assert (body["receiver"], body["groupId"], body["isRead"]) == (None, "17", False)
    assert deletion_json(43, "u1", None, 17) == {"_id": "43", "sender": "u1", "receiver": None, "groupId": "17"}


def test_a_1to1_message_keeps_the_guides_fields_without_group_id():
    one_to_one = {**ROW, "receiver_id": "u2", "group_id": None, "r_user_name": "grace", "r_name": "", "r_profile_image": ""}
    assert set(message_json(one_to_one)) == wire_names(MessageOut) - {"attachments", "type", "call"}
    assert deletion_json(42, "u1", "u2") == {"_id": "42", "sender": "u1", "receiver": "u2"}


@pytest.mark.parametrize(("payload", "code"), [
    ({"senderId": "u1", "text": "hi"}, "invalid_receiverId"),
    ({"senderId": "u1", "receiverId": "u2", "groupId": "17", "text": "hi"}, "invalid_receiverId"),
    ({"senderId": "u1", "groupId": "17x", "text": "hi"}, "invalid_groupId"),
    ({"senderId": "u1", "groupId": 17, "text": "hi"}, "invalid_groupId"),
    ({"senderId": "u1", "groupId": "1" * 19, "text": "hi"}, "invalid_groupId"),
])
def test_a_stored_message_names_exactly_one_conversation(payload, code):
    with pytest.raises(InvalidField) as refused:
        parse_model(StoreMessage, payload)
    assert refused.value.code == code


def test_group_creation_is_bounded():
    with pytest.raises(InvalidField) as refused:
        parse_model(CreateGroup, {"name": " ", "memberIds": ["u2"]})
    assert refused.value.code == "invalid_name"
    assert parse_model(CreateGroup, {"name": " Climbing ", "memberIds": ["u2"]}).name == "Climbing"
