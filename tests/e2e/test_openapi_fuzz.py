"""schemathesis over every documented REST route, public and internal: never a 5xx."""

import asyncio

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from services.devtools.openapi import openapi_document
from tests.support import ADMIN_TOKEN, GATEWAY_TOKEN, create_user
from tests.tally import BAD_INPUT, example

SCHEMA = schemathesis.openapi.from_dict(openapi_document())


@pytest.fixture(scope="module")
def fuzz_user(cluster):
    return asyncio.run(create_user(cluster.history_url))


@pytest.mark.tally(BAD_INPUT, "REST calls generated from the OpenAPI document (schemathesis)", per_example=True)
@SCHEMA.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_documented_route_answers_5xx(case, cluster, fuzz_user):
    if case.path.startswith("/api/"):
        base_url = cluster.gateway_url("a")
    elif case.path.startswith("/internal/presence/"):
        base_url = cluster.presence_url
    elif case.path == "/openapi.json":
        base_url = cluster.history_api_url
    else:
        base_url = cluster.history_url
    # The caller each internal route admits: profiles are the social app's (admin), the rest gateways'.
    caller_token = ADMIN_TOKEN if case.path == "/internal/users/{userId}" else GATEWAY_TOKEN
    headers = {"Authorization": f"Bearer {fuzz_user.token}", "X-Internal-Token": caller_token}
    response = case.call(base_url=base_url, headers=headers, timeout=10)
    assert response.status_code < 500, (case.method, case.formatted_path, response.status_code, response.text[:300])
    if response.status_code >= 400:
        body = response.json()
        assert set(body) >= {"message", "code"}, body
    example(BAD_INPUT, "REST calls generated from the OpenAPI document (schemathesis)")
