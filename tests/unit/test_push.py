"""Web Push's pure parts (issue 18): endpoint rules, key checks, answers of push services, the
notification a burst makes, topics."""

import time
from email.utils import formatdate

import pytest

from services.notifier.consumer import Job, notification
from services.notifier.push import Outcome, classify, retry_after_seconds, topic_of
from services.shared.errors import InvalidField
from services.shared.push import (DEFAULT_PUSH_HOSTS, endpoint_allowed, generate_vapid_keys, parse_conversation,
                                  vapid_public_key)


@pytest.mark.parametrize(("endpoint", "loopback", "allowed"), [
    ("https://fcm.googleapis.com/fcm/send/abc", False, True),
    ("https://updates.push.services.mozilla.com/wpush/v2/x", False, True),
    ("https://web.push.apple.com/QO", False, True),
    ("https://wns2-par02p.notify.windows.com/w/?token=x", False, True),
    ("http://fcm.googleapis.com/fcm/send/abc", False, False),
    ("https://fcm.googleapis.com.evil.example/x", False, False),
    ("https://evilfcm.googleapis.com.example/x", False, False),
    ("https://notfcm.googleapis.com/x", False, False),
    ("https://142.250.0.1/x", False, False),
    ("https://user@fcm.googleapis.com/x", False, False),
    ("https://fcm.googleapis.com:99999/x", False, False),
    ("http://127.0.0.1:8080/push/1", False, False),
    ("http://127.0.0.1:8080/push/1", True, True),
    ("http://localhost:8080/push/1", True, False),
    ("https://127.0.0.1/push/1", True, False),
])
def test_endpoints_are_push_services_over_https(endpoint, loopback, allowed):
    assert endpoint_allowed(endpoint, DEFAULT_PUSH_HOSTS, loopback) is allowed


def test_a_vapid_pair_is_consistent():
    private, public = generate_vapid_keys()
    assert vapid_public_key(private) == public and len(public) == 87


@pytest.mark.parametrize("value", ["user:ada", "group:17", "user:17"])
def test_conversation_ids(value):
    assert ":".join(parse_conversation(value)) == value


@pytest.mark.parametrize("value", ["ada", "group:x", "user:", "team:1", "user:a/b", "group:" + "1" * 19])
def test_bad_conversation_ids(value):
    with pytest.raises(InvalidField):
        parse_conversation(value)


@pytest.mark.parametrize(("status", "outcome"), [(201, Outcome.DELIVERED), (202, Outcome.DELIVERED),
                                                 (404, Outcome.GONE), (410, Outcome.GONE),
                                                 (429, Outcome.RETRY), (500, Outcome.RETRY), (503, Outcome.RETRY),
                                                 (400, Outcome.REFUSED), (413, Outcome.REFUSED)])
def test_answers_of_push_services(status, outcome):
    assert classify(status, None).outcome is outcome


def test_retry_after_in_seconds_or_as_a_date():
    assert retry_after_seconds("7") == 7.0
    assert 28 <= retry_after_seconds(formatdate(time.time() + 30, usegmt=True)) <= 30
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_a_topic_per_conversation_fits_rfc_8030():
    topic = topic_of("user:" + "a" * 64)
    assert len(topic) <= 32 and topic.replace("-", "").replace("_", "").isalnum()
    assert topic_of("user:a") != topic_of("user:b") and topic_of("group:1") == topic_of("group:1")


def job(n: int, text: str | None = "hi", group: str | None = None) -> Job:
    conversation = f"group:{9}" if group else "user:ada"
    return Job(f"{n}-0", str(n), "grace", conversation, "Ada", "", group, text, 0)


def test_one_message_shows_its_text_several_show_a_count():
    assert notification([job(1, "lunch?")], 1)["body"] == "lunch?"
    many = notification([job(2), job(3)], 3)
    assert many["body"] == "3 new messages from Ada" and many["messageIds"] == ["2", "3"]
    assert many["tag"] == "user:ada" and many["conversation"] == {"kind": "user", "id": "ada"}


def test_hidden_text_and_groups():
    assert notification([job(1, None)], 1)["body"] == "New message"
    grouped = notification([job(1, "x", "Engines"), job(2, "y", "Engines")], 2)
    assert grouped["title"] == "Ada in Engines" and grouped["body"] == "2 new messages in Engines"
