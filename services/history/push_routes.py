"""Push notifications' public routes (issue 18), reached through a gateway with the user's token.

Who may call: any signed-in user, on their own subscriptions, mutes and setting only (the user
is the token's; no route takes another user's id). Cost: a subscription is written once per
browser and a mute once per click, one indexed statement each; 10x the users is 10x these rare
writes. Bad input: 400 naming the field (`invalid_endpoint`, `invalid_p256dh`, `invalid_auth`,
`invalid_until`, `invalid_hideText`, `invalid_conversationId`); an 11th subscription 409
`too_many_subscriptions`; a group I am not in 404 `unknown_group`.
"""

from datetime import timezone

from aiohttp import web

from ..shared.errors import InvalidField, ServiceUnavailable, parse_model
from ..shared.fast_json import json_response
from ..shared.push import MAX_ENDPOINT_LENGTH, parse_conversation, parse_subscription
from ..shared.web import json_body
from .app_keys import PUSH, SETTINGS
from .push_models import Mute, NotificationSettings
from .routes import current_user

push_routes = web.RouteTableDef()


@push_routes.get("/api/push/vapid-public-key")
async def vapid_public_key(request: web.Request) -> web.Response:
    """The application server key a browser subscribes with (`pushManager.subscribe`)."""
    current_user(request)
    key = request.app[SETTINGS].vapid_public_key
    if not key:
        raise ServiceUnavailable("Push notifications are not configured (VAPID_PUBLIC_KEY)")
    return json_response({"publicKey": key})


@push_routes.post("/api/push/subscriptions")
async def add_subscription(request: web.Request) -> web.Response:
    me = current_user(request)
    settings = request.app[SETTINGS]
    subscription = parse_subscription(await json_body(request), settings.push_host_list, settings.push_loopback_allowed)
    created = await request.app[PUSH].add_subscription(me, subscription)
    return json_response({"endpoint": subscription.endpoint}, status=201 if created else 200)


@push_routes.delete("/api/push/subscriptions")
async def remove_subscription(request: web.Request) -> web.Response:
    me = current_user(request)
    body = await json_body(request)
    endpoint = body.get("endpoint") if isinstance(body, dict) else None
    if not isinstance(endpoint, str) or not endpoint or len(endpoint) > MAX_ENDPOINT_LENGTH or "\x00" in endpoint:
        # Any endpoint the user stored may be removed, even one a later rule would refuse.
        raise InvalidField("endpoint", "must be the endpoint of one of your subscriptions")
    removed = await request.app[PUSH].remove_subscription(me, endpoint)
    return json_response({"endpoint": endpoint, "removed": removed})


def path_conversation(request: web.Request) -> tuple[str, str]:
    return parse_conversation(request.match_info["conversationId"])


@push_routes.put("/api/conversations/{conversationId}/mute")
async def mute(request: web.Request) -> web.Response:
    me = current_user(request)
    kind, target = path_conversation(request)
    payload = parse_model(Mute, await json_body(request) if request.can_read_body else {})
    until = payload.until
    if until is not None and until.tzinfo is None:
        raise InvalidField("until", "must carry a time zone (e.g. 2026-12-02T10:00:00Z)")
    await request.app[PUSH].mute(me, kind, target, until)
    return json_response({"conversationId": f"{kind}:{target}", "muted": True,
                          "until": None if until is None else until.astimezone(timezone.utc).isoformat()})


@push_routes.delete("/api/conversations/{conversationId}/mute")
async def unmute(request: web.Request) -> web.Response:
    me = current_user(request)
    kind, target = path_conversation(request)
    await request.app[PUSH].unmute(me, kind, target)
    return json_response({"conversationId": f"{kind}:{target}", "muted": False, "until": None})


@push_routes.get("/api/push/settings")
async def get_settings(request: web.Request) -> web.Response:
    return json_response(await request.app[PUSH].settings(current_user(request)))


@push_routes.put("/api/push/settings")
async def put_settings(request: web.Request) -> web.Response:
    me = current_user(request)
    body = await json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("hideText"), bool):
        raise InvalidField("hideText", "must be true or false")
    payload = parse_model(NotificationSettings, body)
    return json_response(await request.app[PUSH].set_settings(me, payload.hide_text))
