"""What a browser is told: the page runs only its own scripts and cannot be framed; API answers
are never sniffed into another type nor kept by a cache."""

import re

import pytest

from tests.security import rawhttp
from tests.security.categories import SECURITY_HEADERS
from tests.tally import ATTACK

SCRIPT_TAG = re.compile(rb"<script\b([^>]*)>(.*?)</script\s*>", re.IGNORECASE | re.DOTALL)
EVENT_HANDLER_ATTRIBUTE = re.compile(rb"<[^>]*\son[a-z]+\s*=", re.IGNORECASE)


def directives(policy: str) -> dict[str, list[str]]:
    parsed = {}
    for directive in policy.split(";"):
        name, *values = directive.split()
        parsed[name.lower()] = values
    return parsed


@pytest.fixture
async def page(secure_cluster) -> rawhttp.RawAnswer:
    answer = await rawhttp.request(secure_cluster.gateway_url("a"), "GET", "/")
    assert answer.status == 200, answer
    return answer


@pytest.mark.tally(ATTACK, SECURITY_HEADERS)
async def test_page_runs_only_scripts_of_its_own_origin(page):
    policy = directives(page.header("Content-Security-Policy") or "")
    script_sources = policy.get("script-src", policy.get("default-src"))
    assert script_sources == ["'self'"], policy


@pytest.mark.tally(ATTACK, SECURITY_HEADERS)
async def test_page_cannot_be_framed(page):
    policy = directives(page.header("Content-Security-Policy") or "")
    assert policy.get("frame-ancestors") == ["'none'"], policy


@pytest.mark.tally(ATTACK, SECURITY_HEADERS)
async def test_page_has_no_inline_script(page):
    inline = [match.group(0)[:80] for match in SCRIPT_TAG.finditer(page.body)
              if b"src=" not in match.group(1).lower() or match.group(2).strip()]
    assert not inline, inline
    assert not EVENT_HANDLER_ATTRIBUTE.search(page.body)


@pytest.mark.tally(ATTACK, SECURITY_HEADERS)
async def test_page_is_not_sniffed_and_leaks_no_referrer(page):
    assert page.header("X-Content-Type-Options") == "nosniff"
    assert page.header("Referrer-Policy") in ("no-referrer", "same-origin", "strict-origin",
                                              "strict-origin-when-cross-origin")


# Answers of every kind the public API gives: data, and each error status.
API_REQUESTS = {
    "200 conversations": ("GET", "/api/messages/conversations", True),
    "200 presence": ("GET", "/api/presence?ids=nobody", True),
    "200 mark read": ("PUT", "/api/messages/read/nobody", True),
    "400 bad query": ("GET", "/api/messages/search", True),
    "400 bad path": ("GET", "/api/%2e%2e/internal/users", True),
    "401 no token": ("GET", "/api/messages/conversations", False),
    "401 presence, no token": ("GET", "/api/presence?ids=nobody", False),
    "404 no such user": ("GET", "/api/users/lookup?userName=sec-nobody", True),
    "404 no such route": ("GET", "/api/nothing-here", True),
    "405 wrong method": ("POST", "/api/messages/conversations", True),
}


@pytest.mark.tally(ATTACK, SECURITY_HEADERS)
@pytest.mark.parametrize("case", list(API_REQUESTS))
@pytest.mark.parametrize("listener", ["gateway", "history"])
async def test_every_api_answer_is_nosniff_and_no_store(secure_cluster, cast, listener, case):
    method, target, signed_in = API_REQUESTS[case]
    if listener == "history" and target.startswith("/api/presence"):
        target = "/api/messages/conversations"  # presence is the gateway's own route
    url = secure_cluster.gateway_url("a") if listener == "gateway" else secure_cluster.history_api_url
    headers = [("Authorization", f"Bearer {cast.mallory.token}")] if signed_in else []
    answer = await rawhttp.request(url, method, target, headers)
    # History answers its own statuses (it has no raw-path guard of the gateway's); never a 5xx.
    assert answer.status == int(case[:3]) if listener == "gateway" else answer.status < 500, answer
    assert answer.header("X-Content-Type-Options") == "nosniff", answer
    assert answer.header("Cache-Control") == "no-store", answer
