"""Wire models accept the guide's payloads and name the field they refuse."""

from datetime import datetime, timezone

import json

import pytest

from services.gateway.models import SendMessage
from services.history.models import (
    MessageOut,
    MessagesRead,
    UserProfile,
    iso,
    message_json,
    messages_read_json,
    profile_json,
)
from services.shared.errors import BadRequest, InvalidField, parse_model
from services.shared.params import cursor_param, int_param


def test_send_message_trims_text_and_keeps_guide_names():
    message = parse_model(SendMessage, {"receiverId": "u2", "text": "  hi  ", "extra": 1})
    assert (message.receiver_id, message.text, message.client_id) == ("u2", "hi", None)


def test_a_user_id_is_never_trimmed_into_another():
    with pytest.raises(InvalidField) as refused:
        parse_model(SendMessage, {"receiverId": " u2 ", "text": "hi"})
    assert refused.value.code == "invalid_receiverId"


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"receiverId": "u2", "text": "   "}, "invalid_text"),
        ({"receiverId": "u2", "text": "x" * 4001}, "invalid_text"),
        ({"receiverId": "", "text": "hi"}, "invalid_receiverId"),
        ({"text": "hi"}, "invalid_receiverId"),
        ({"receiverId": "u2", "text": "hi", "clientId": "c" * 65}, "invalid_clientId"),
    ],
)
def test_bad_fields_are_named_in_the_code(payload, code):
    with pytest.raises(InvalidField) as refused:
        parse_model(SendMessage, payload)
    assert refused.value.code == code


@pytest.mark.parametrize("payload", [None, "text", 3, ["a"]])
def test_a_payload_that_is_not_an_object_is_refused(payload):
    with pytest.raises(BadRequest) as refused:
        parse_model(SendMessage, payload)
    assert refused.value.code == "invalid_payload"


MOMENT = datetime(2026, 11, 24, 10, 0, 0, 123456, tzinfo=timezone.utc)
MESSAGE_ROW = {
    "id": 42, "sender_id": "u1", "receiver_id": "u2", "text": "hi", "client_id": None, "is_read": False,
    "read_at": None, "created_at": MOMENT, "updated_at": MOMENT,
    "s_user_name": "ada", "s_name": "Ada", "s_profile_image": "", "r_user_name": "grace", "r_name": "",
    "r_profile_image": "", "reply_to_id": None, "edited_at": None, "q_sender_id": None, "q_text": None,
    "q_deleted_at": None,
}


# Written by a builder only when there is something to say (a message without attachments has no
# key; only a call's message has `type` and `call`).
CALL_WIRE_NAMES = {"type", "call"}
OPTIONAL_WIRE_NAMES = {"attachments", *CALL_WIRE_NAMES}
ATTACHMENT = {"id": "0" * 32, "name": "cat.jpg", "size": 10, "content_type": "image/jpeg", "width": 8, "height": 6,
              "has_thumbnail": True}


def wire_names(model) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


def test_a_message_with_attachments_carries_them_all_in_order():
    second = {**ATTACHMENT, "id": "1" * 32, "content_type": "text/plain", "width": None, "height": None,
              "has_thumbnail": False}
    body = message_json({**MESSAGE_ROW, "attachments": json.dumps([ATTACHMENT, second])})
    assert set(body) == wire_names(MessageOut) - CALL_WIRE_NAMES
    MessageOut.model_validate(body)
    assert body["attachments"] == [
        {"_id": "0" * 32, "name": "cat.jpg", "size": 10, "contentType": "image/jpeg", "width": 8, "height": 6,
         "url": f"/api/attachments/{'0' * 32}", "thumbnailUrl": f"/api/attachments/{'0' * 32}/thumbnail"},
        {"_id": "1" * 32, "name": "cat.jpg", "size": 10, "contentType": "text/plain",
         "url": f"/api/attachments/{'1' * 32}"},
    ]


def test_a_calls_message_says_what_happened_in_type_and_call():
    row = {**MESSAGE_ROW, "text": "Missed video call", "call_kind": "video", "call_status": "missed",
           "call_duration_seconds": 0}
    body = message_json(row)
    assert set(body) == wire_names(MessageOut) - {"attachments"}
    assert (body["type"], body["call"]) == ("call", {"kind": "video", "status": "missed", "durationSeconds": 0})
    MessageOut.model_validate(body)


def test_stored_rows_become_valid_message_objects():
    moment = MOMENT
    body = message_json(MESSAGE_ROW)
    assert MessageOut.model_validate(body).id == "42"
    assert body["createdAt"] == iso(moment) == "2026-11-24T10:00:00.123Z"


@pytest.mark.parametrize(
    ("model", "body"),
    [
        (MessageOut, message_json(MESSAGE_ROW)),
        (UserProfile, message_json(MESSAGE_ROW)["sender"]),
        (UserProfile, profile_json({"id": "u1", "user_name": "ada", "name": "", "profile_image": ""})),
        (MessagesRead, messages_read_json("u2", 3, "42")),
    ],
)
def test_each_builder_writes_exactly_the_fields_of_its_model(model, body):
    assert set(body) == wire_names(model) - OPTIONAL_WIRE_NAMES
    model.model_validate(body)


@pytest.mark.parametrize("raw", ["-1", "1.5", "abc", "١٢", "9" * 20, " 1"])
def test_cursors_are_digits_only(raw):
    with pytest.raises(InvalidField) as refused:
        cursor_param({"after": raw}, "after")
    assert refused.value.code == "invalid_after"


def test_limits_are_bounded():
    assert int_param({}, "limit", default=50, low=1, high=200) == 50
    assert int_param({"limit": "200"}, "limit", default=50, low=1, high=200) == 200
    with pytest.raises(InvalidField):
        int_param({"limit": "201"}, "limit", default=50, low=1, high=200)
