"""Raw request lines that try to walk from a public prefix of the gateway to history's internal API.

Each variant is sent against every public prefix, aimed at each internal target, as a signed-in
user (the strongest outsider). Every answer must be a 4xx; history's internal listener must
have answered none of them (its `/internal/*` request counters do not move), and no forged
message may exist afterwards.
"""

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from services.devtools.stores import free_port
from tests.security import rawhttp
from tests.security.categories import PATH_TRAVERSAL
from tests.security.conftest import forged_messages, internal_route_requests
from tests.tally import ATTACK

PUBLIC_PREFIXES = ("/api/", "/api/messages/", "/api/users/", "/socket.io/", "/static/", "/vendor/", "/dev/")
# Requests a variant sends at once: enough to finish quickly, few enough for a 2-core machine.
CONCURRENCY = 8
# What a leaked answer would contain: the user directory, a stored message, metrics, readiness.
LEAK_MARKERS = ('"userName":', "parley_history_", '"ready"', '"created":')


@dataclass(frozen=True)
class Target:
    """One internal route of history's, written relative to the root (no leading slash)."""

    method: str
    path: str
    forged: bool = False  # carries a forged message as its body


TARGETS = (
    Target("GET", "internal/users?limit=3"),
    Target("POST", "internal/messages", forged=True),
    Target("GET", "metrics"),
    Target("GET", "readyz"),
)


@dataclass(frozen=True)
class Shot:
    """What one variant makes of a prefix and a target: the request target, extra headers."""

    target: str
    headers: tuple[tuple[str, str], ...] = ()


def depth(prefix: str) -> int:
    """Segments to climb from `prefix` back to the root."""
    return len([segment for segment in prefix.split("/") if segment])


def climb(up: str, separator: str = "/", target_separator: str = "/") -> Callable:
    """`prefix` + (`up` + `separator`) once per prefix segment + the target, its own slashes
    written as `target_separator`."""

    def build(prefix: str, target: str, internal: str) -> Shot:
        path, _, query = target.partition("?")
        tail = path.replace("/", target_separator) + (f"?{query}" if query else "")
        return Shot(prefix + (up + separator) * depth(prefix) + tail)

    return build


def absolute_form(up: str) -> Callable:
    """`GET http://<history internal>/api/../internal/users`: the authority of the internal listener."""

    def build(prefix: str, target: str, internal: str) -> Shot:
        return Shot(f"http://{internal}" + climb(up)(prefix, target, internal).target)

    return build


def host_header(up: str) -> Callable:
    """A traversal whose Host header names history's internal listener."""

    def build(prefix: str, target: str, internal: str) -> Shot:
        return Shot(climb(up)(prefix, target, internal).target, (("Host", internal),))

    return build


def rewrite_header(name: str) -> Callable:
    """The prefix itself, with a proxy's rewrite header naming the internal target."""

    def build(prefix: str, target: str, internal: str) -> Shot:
        return Shot(prefix, ((name, "/" + target),))

    return build


def authority_in_path(prefix: str, target: str, internal: str) -> Shot:
    return Shot(prefix + f"/{internal}/" + target)


def userinfo_in_path(prefix: str, target: str, internal: str) -> Shot:
    return Shot(prefix.rstrip("/") + f"@{internal}/" + target)


def network_path(prefix: str, target: str, internal: str) -> Shot:
    """`//host:port/...`: a network-path reference that a naive URL join treats as an authority."""
    return Shot(f"//{internal}" + prefix + "../" * depth(prefix) + target)


def after(marker: str) -> Callable:
    """A segment ending in `marker` (`%3f`, `#`), then one climb more than the prefix needs.

    (A raw `?` is not here: what follows it is a query string, which the gateway re-encodes from
    its parsed form, so `/api/messages/x?/../internal` is a conversation page, rightly a 200.)"""

    def build(prefix: str, target: str, internal: str) -> Shot:
        return Shot(prefix + f"x{marker}/" + "../" * (depth(prefix) + 1) + target)

    return build


def trailing_dot(prefix: str, target: str, internal: str) -> Shot:
    """`internal./users`: a name some file systems and proxies treat as `internal`."""
    return Shot(prefix + "../" * depth(prefix) + target.replace("internal/", "internal./", 1).replace(
        "metrics", "metrics.").replace("readyz", "readyz."))


def upper_case(prefix: str, target: str, internal: str) -> Shot:
    path, _, query = target.partition("?")
    return Shot(prefix + "../" * depth(prefix) + path.upper() + (f"?{query}" if query else ""))


def nul_suffix(prefix: str, target: str, internal: str) -> Shot:
    path, _, query = target.partition("?")
    return Shot(prefix + "../" * depth(prefix) + path + "%00.json" + (f"?{query}" if query else ""))


FULLWIDTH_DOT = "\uff0e"

VARIANTS: dict[str, Callable] = {
    "dot-dot": climb(".."),
    "%2e%2e": climb("%2e%2e"),
    "%2E%2E": climb("%2E%2E"),
    "%2E%2e mixed case": climb("%2E%2e"),
    ".%2e": climb(".%2e"),
    "%2e.": climb("%2e."),
    ".%2E": climb(".%2E"),
    "%252e%252e double encoding": climb("%252e%252e"),
    "%252E%252E double encoding": climb("%252E%252E"),
    "%25252e%25252e triple encoding": climb("%25252e%25252e"),
    "..%2f": climb("..", "%2f", "%2f"),
    "..%2F": climb("..", "%2F", "%2F"),
    "%2e%2e%2f": climb("%2e%2e", "%2f", "%2f"),
    "..%252f double-encoded slash": climb("..", "%252f", "%252f"),
    "..%5c": climb("..", "%5c", "%5c"),
    "..%5C": climb("..", "%5C", "%5C"),
    "..\\ backslash": climb("..", "\\", "\\"),
    "%2e%2e\\": climb("%2e%2e", "\\"),
    "..%5c%2f": climb("..", "%5c%2f"),
    "..;/ path parameter": climb("..;"),
    "..;x=1/ path parameter": climb("..;x=1"),
    "..%3b/": climb("..%3b"),
    "//internal": climb("", "/"),
    "....// filter bypass": climb("....", "//"),
    "./.. dot slash dot-dot": climb("./.."),
    "../. dot-dot slash dot": climb("../."),
    "... three dots": climb("..."),
    "full-width dots, raw UTF-8": climb(FULLWIDTH_DOT * 2),
    "full-width dots, %ef%bc%8e": climb("%ef%bc%8e%ef%bc%8e"),
    "full-width dots, %EF%BC%8E": climb("%EF%BC%8E%EF%BC%8E"),
    "dot + full-width dot": climb("." + FULLWIDTH_DOT),
    "one-dot leader U+2024": climb("%e2%80%a4%e2%80%a4"),
    "%u002e IIS unicode": climb("%u002e%u002e"),
    "overlong UTF-8 %c0%ae": climb("%c0%ae%c0%ae"),
    "overlong UTF-8 slash %c0%af": climb("..", "%c0%af", "%c0%af"),
    "overlong 3-byte %e0%80%ae": climb("%e0%80%ae%e0%80%ae"),
    "..%00 NUL": climb("..%00"),
    "NUL suffix": nul_suffix,
    "..%09 tab": climb("..%09"),
    "raw tab": climb("..\t"),
    "..%20 space": climb("..%20"),
    "raw space": climb(".. "),
    "trailing dots internal./": trailing_dot,
    "upper-case target": upper_case,
    "%3f then climb": after("%3f"),
    "# then climb": after("#"),
    "absolute-form to internal listener": absolute_form(".."),
    "absolute-form, %2e%2e": absolute_form("%2e%2e"),
    "Host: internal listener": host_header("%2e%2e"),
    "X-Original-URL": rewrite_header("X-Original-URL"),
    "X-Rewrite-URL": rewrite_header("X-Rewrite-URL"),
    "authority in path": authority_in_path,
    "userinfo in path": userinfo_in_path,
    "network-path //host": network_path,
}


def forged_text(variant: str) -> str:
    return f"forged via {variant}"


def forged_body(cast, variant: str) -> bytes:
    return json.dumps({"senderId": cast.ada.id, "receiverId": cast.grace.id, "text": forged_text(variant)}).encode()


async def fire(cluster, cast, variant: str, prefix: str, target: Target) -> tuple[str, rawhttp.RawAnswer]:
    internal = "{}:{}".format(*rawhttp.host_port(cluster.history_url))
    shot = VARIANTS[variant](prefix, target.path, internal)
    headers = [("Authorization", f"Bearer {cast.mallory.token}"), *shot.headers]
    body = b""
    if target.forged:
        headers.append(("Content-Type", "application/json"))
        body = forged_body(cast, variant)
    gateway = cluster.gateway_url("a")
    host = "{}:{}".format(*rawhttp.host_port(gateway))
    raw = rawhttp.request_bytes(target.method, shot.target, headers, body, host=host)
    return f"{target.method} {shot.target!r} {shot.headers}", await rawhttp.send_raw(gateway, raw)


def test_there_are_at_least_forty_variants():
    assert len(VARIANTS) >= 40


@pytest.mark.tally(ATTACK, PATH_TRAVERSAL)
@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_no_path_variant_reaches_the_internal_api(secure_cluster, cast, variant):
    before = await internal_route_requests(secure_cluster)
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(prefix: str, target: Target):
        async with limit:
            return await fire(secure_cluster, cast, variant, prefix, target)

    answers = await asyncio.gather(*(one(prefix, target) for prefix in PUBLIC_PREFIXES for target in TARGETS))

    let_through = [f"{sent} -> {answer}" for sent, answer in answers if not 400 <= answer.status < 500]
    assert not let_through, "answered other than 4xx:\n" + "\n".join(let_through)
    leaked = [f"{sent} -> {answer}" for sent, answer in answers
              if any(marker in answer.text for marker in LEAK_MARKERS)]
    assert not leaked, "internal data in an answer:\n" + "\n".join(leaked)
    assert await internal_route_requests(secure_cluster) == before, "history's internal listener answered one"
    assert await forged_messages(secure_cluster, cast, forged_text(variant)) == []


async def test_a_bare_public_prefix_is_refused_without_an_error_in_the_log(secure_cluster):
    """What the rewrite-header variants send (the prefix alone): a 4xx, and no error line that an
    anonymous client could write into the gateway's log. A node of its own: a library that logs
    an error only once per process must not have done so already for another test."""
    gateway = secure_cluster.stack.add("gateway", "gateway-bare", free_port(), free_port())
    gateway.start()
    await asyncio.to_thread(gateway.wait_ready)
    answers = {prefix: await rawhttp.request(gateway.url, "GET", prefix) for prefix in PUBLIC_PREFIXES}
    assert all(400 <= answer.status < 500 for answer in answers.values()), answers
    errors = [line for line in gateway.log_text().splitlines() if '"level": "error"' in line]
    assert not errors, errors
