"""Readiness (services/shared/web.py): a pod is kept out of the load balancer while it starts and
while it drains; a shared dependency failing later is reported, and the pod stays in (issue 19)."""

from prometheus_client import CollectorRegistry

from services.shared.web import Readiness


class Dependency:
    def __init__(self):
        self.up = False

    async def __call__(self) -> None:
        if not self.up:
            raise ConnectionError("refused")


def gauge(registry: CollectorRegistry, name: str) -> float:
    return registry.get_sample_value("parley_gateway_dependency_up", {"dependency": name})


async def test_not_ready_until_every_dependency_answered_once_then_degraded_not_unready():
    registry, redis, history = CollectorRegistry(), Dependency(), Dependency()
    readiness = Readiness("gateway", registry)
    readiness.add("redis", redis)
    readiness.add("history", history)

    redis.up = True
    status, body = await readiness.answer()
    assert status == 503 and body["status"] == "starting" and list(body["failures"]) == ["history"]
    assert (gauge(registry, "redis"), gauge(registry, "history")) == (1, 0)

    history.up = True
    assert await readiness.answer() == (200, {"status": "ready"})

    redis.up = False  # Redis fails for every pod at once: each stays in, says so, and counts it
    status, body = await readiness.answer()
    assert status == 200 and body["status"] == "degraded" and list(body["failures"]) == ["redis"]
    assert gauge(registry, "redis") == 0

    redis.up = True
    assert await readiness.answer() == (200, {"status": "ready"})
    assert gauge(registry, "redis") == 1


async def test_draining_is_unready_whatever_the_dependencies_say():
    readiness = Readiness("gateway", CollectorRegistry())
    readiness.add("redis", Dependency())
    readiness.draining = True
    assert await readiness.answer() == (503, {"status": "unavailable", "failures": {"process": "draining"}})
