"""The OpenAPI document says exactly what each service's router answers."""

import pytest

from services.gateway.app import create_app as create_gateway
from services.gateway.settings import GatewaySettings
from services.history.app import create_app as create_history
from services.history.settings import HistorySettings
from services.media.app import create_app as create_media
from services.media.settings import MediaSettings
from services.notifier.app import create_app as create_notifier
from services.notifier.settings import NotifierSettings
from services.presence.app import create_app as create_presence
from services.presence.settings import PresenceSettings
from services.devtools.openapi import FRAGMENTS, REGENERATE, document_text, openapi_document
from services.history.openapi import OPENAPI_DOCUMENT
from services.shared.web import INTERNAL_APP

# Gateway routes that are not HTTP API: Socket.IO, and the web client's page and files.
GATEWAY_UNDOCUMENTED_PREFIXES = ("/socket.io/", "/static", "/vendor", "/dev/", "/", "/sw.js")


def router_operations(app, skip_prefixes=()) -> set[tuple[str, str]]:
    operations = set()
    for route in app.router.routes():
        path = route.resource.canonical
        if route.method in ("HEAD", "OPTIONS") or any(
            path == prefix or (prefix != "/" and path.startswith(prefix)) for prefix in skip_prefixes
        ):
            continue
        operations.add((path, route.method.lower()))
    return operations


def operations(paths: dict) -> set[tuple[str, str]]:
    return {(path, method) for path, item in paths.items() for method in item}


def documented_operations(service: str, listener: str) -> set[tuple[str, str]]:
    fragment = FRAGMENTS[service]
    if listener == "internal":
        return operations(fragment.internal_paths())
    return operations(fragment.public_paths()) | {(route, method.lower()) for method, route in fragment.forwarded}


@pytest.mark.parametrize(
    ("service", "app_factory", "skip"),
    [
        ("history", lambda: create_history(HistorySettings()), ()),
        ("gateway", lambda: create_gateway(GatewaySettings()), GATEWAY_UNDOCUMENTED_PREFIXES),
        ("presence", lambda: create_presence(PresenceSettings()), ()),
        ("media", lambda: create_media(MediaSettings()), ()),
        ("notifier", lambda: create_notifier(NotifierSettings()), ()),
    ],
)
def test_every_route_is_documented_and_every_documented_route_exists(service, app_factory, skip):
    app = app_factory()
    assert router_operations(app, skip) == documented_operations(service, "public")
    assert router_operations(app[INTERNAL_APP]) == documented_operations(service, "internal")


@pytest.mark.parametrize(
    "app_factory",
    [lambda: create_history(HistorySettings()), lambda: create_gateway(GatewaySettings()),
     lambda: create_presence(PresenceSettings()), lambda: create_media(MediaSettings()),
     lambda: create_notifier(NotifierSettings())],
)
def test_no_internal_route_or_probe_is_on_a_public_listener(app_factory):
    public = {path for path, _ in router_operations(app_factory())}
    assert not {path for path in public if path.startswith("/internal") or path in ("/readyz", "/metrics")}


def test_the_gateway_forwards_exactly_the_public_api_of_history_and_media():
    public_api = {(path, method) for service in ("history", "media")
                  for path, method in operations(FRAGMENTS[service].public) if path.startswith("/api/")}
    assert {(route, method.lower()) for method, route in FRAGMENTS["gateway"].forwarded} == public_api


def test_the_document_history_serves_is_current():
    assert OPENAPI_DOCUMENT.read_text() == document_text(), f"stale: run `{REGENERATE}`"


def test_document_is_openapi_3_with_errors_and_security_on_every_operation():
    document = openapi_document()
    assert document["openapi"].startswith("3.")
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert operation["summary"], (path, method)
            if path.startswith(("/api/", "/internal/")):
                assert operation["security"], (path, method)
                assert "400" in operation["responses"] and "503" in operation["responses"], (path, method)
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path":
                    assert "{" + parameter["name"] + "}" in path


def test_document_references_resolve():
    document = openapi_document()
    schemas = document["components"]["schemas"]

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                assert node["$ref"].removeprefix("#/components/schemas/") in schemas, node["$ref"]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
