"""The scaled-out mode's manifests (deploy/k8s-scaled-out), checked offline.

The overlay is rendered here as kustomize renders it (`kubectl kustomize` is not part of the
development machines or CI): `resources` only, files and directories with a kustomization.yaml,
recursively; any other kustomize field fails the render, so the day the overlay grows a patch
this renderer must grow with it (checked by hand against kubectl 1.32's kustomize 5.5: the same
31 documents). The rendered documents go through kubernetes-validate like the base.

The operators' resources (operator-examples/: a RedisCluster of the OT-Container-Kit Redis
operator, a CloudNativePG Cluster) are custom resources, whose schemas kubernetes-validate does
not have: they are checked structurally (apiVersion, kind, the fields their CRDs require, and
the names Parley's Secret and network policies rely on), not against the operators' schemas.
"""

from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from tests.deploy.test_deploy_files import K8S_DIR, PROJECT_DIR, k8s, k8s_manifest_files, run_kubernetes_validate

OVERLAY_DIR = PROJECT_DIR / "deploy" / "k8s-scaled-out"
EXAMPLES_DIR = OVERLAY_DIR / "operator-examples"
# Applied on their own (deploy/README.md): the Secret's placeholders, and the migration Job before each rollout.
NOT_IN_THE_BASE = {"secret.example.yaml", "migrate-job.yaml"}
EXAMPLE_HEADER = "# THE OPERATOR'S RESOURCE, AN EXAMPLE: not part of Parley's manifests, not applied by the overlay."


class UnsupportedKustomization(ValueError):
    pass


def render(directory: Path) -> list[dict]:
    """The documents `kubectl kustomize directory` prints, for kustomizations of `resources` only."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - {"apiVersion", "kind", "resources"}
    if unsupported or kustomization["kind"] != "Kustomization":
        raise UnsupportedKustomization(f"{directory}: {sorted(unsupported)} (extend tests/deploy/test_scaled_out.py)")
    documents = []
    for resource in kustomization["resources"]:
        path = (directory / resource).resolve()
        if path.is_dir():
            documents += render(path)
        else:
            documents += [document for document in yaml.safe_load_all(path.read_text()) if document]
    return documents


def load(path: Path) -> list[dict]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def example(kind: str) -> dict:
    [found] = [document for path in sorted(EXAMPLES_DIR.glob("*.yaml")) for document in load(path)
               if document["kind"] == kind]
    return found


def overlay_policies() -> list[dict]:
    return load(OVERLAY_DIR / "datastores-networkpolicy.yaml")


def selected_names(selector: dict) -> set[str]:
    """The app.kubernetes.io/name values a pod selector picks (matchLabels or an `In` expression)."""
    names = {selector["matchLabels"]["app.kubernetes.io/name"]} if "matchLabels" in selector else set()
    for expression in selector.get("matchExpressions", []):
        assert expression["key"] == "app.kubernetes.io/name" and expression["operator"] == "In", expression
        names |= set(expression["values"])
    return names


def base_users_of(label: str, port: int) -> set[str]:
    """The workloads whose base policies let them reach the datastore pods labelled `label`."""
    users = set()
    for policy in k8s("NetworkPolicy"):
        for rule in policy["spec"].get("egress", []):
            peers = [peer.get("podSelector", {}).get("matchLabels", {}) for peer in rule.get("to", [])]
            if any(labels.get("app.kubernetes.io/name") == label for labels in peers):
                assert {entry["port"] for entry in rule["ports"]} == {port}, policy["metadata"]["name"]
                users |= selected_names(policy["spec"]["podSelector"])
    return users


def test_the_base_kustomization_holds_every_manifest_but_the_secret_example_and_the_job():
    listed = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(path.name for path in k8s_manifest_files() if path.name not in NOT_IN_THE_BASE)


def test_the_overlay_is_the_base_and_its_datastore_policies_and_valid_for_kubernetes(tmp_path):
    rendered = render(OVERLAY_DIR)
    base = render(K8S_DIR)
    assert rendered == base + overlay_policies()
    assert all(document["metadata"].get("namespace") == "parley" for document in rendered
               if document["kind"] != "Namespace")
    assert not [document for document in rendered if document["kind"] in ("Secret", "Job")]
    out = tmp_path / "scaled-out.yaml"
    out.write_text(yaml.safe_dump_all(rendered))
    result = run_kubernetes_validate(out, OVERLAY_DIR / "secret-urls.example.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (result.stdout + result.stderr).count("passed for resource") == len(rendered) + 1


def test_the_renderer_refuses_kustomize_fields_it_does_not_implement(tmp_path):
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: []\n"
        "patches:\n  - path: gateway-replicas.yaml\n")
    with pytest.raises(UnsupportedKustomization, match="patches"):
        render(tmp_path)


def test_the_operators_pods_are_reachable_by_exactly_who_reaches_the_base_datastores():
    redis, postgres = example("RedisCluster"), example("Cluster")
    by_name = {policy["metadata"]["name"]: policy for policy in overlay_policies()}
    expected = {
        "redis-cluster-egress": (base_users_of("redis", 6379), 6379, redis["metadata"]["namespace"],
                                 {"matchExpressions": [{"key": "app", "operator": "In", "values": [
                                     f"{redis['metadata']['name']}-leader", f"{redis['metadata']['name']}-follower"]}]}),
        "postgres-cluster-egress": (base_users_of("postgresql", 5432), 5432, postgres["metadata"]["namespace"],
                                    {"matchLabels": {"cnpg.io/cluster": postgres["metadata"]["name"]}}),
    }
    assert set(by_name) == set(expected)
    for name, (users, port, namespace, pods) in expected.items():
        spec = by_name[name]["spec"]
        assert users and selected_names(spec["podSelector"]) == users, name
        assert spec["policyTypes"] == ["Egress"] and "ingress" not in spec
        [rule] = spec["egress"]
        assert rule["ports"] == [{"protocol": "TCP", "port": port}]
        assert rule["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                               "podSelector": pods}]


def test_the_secret_urls_name_the_services_the_operators_create():
    [secret] = load(OVERLAY_DIR / "secret-urls.example.yaml")
    [base_secret] = load(K8S_DIR / "secret.example.yaml")
    urls = secret["stringData"]
    assert secret["metadata"] == base_secret["metadata"] and set(urls) <= set(base_secret["stringData"])
    redis, postgres = example("RedisCluster"), example("Cluster")

    redis_url = urlsplit(urls["redis-url"])
    assert redis_url.scheme == "redis+cluster" and redis_url.port == 6379 and redis_url.password == "CHANGE-ME"
    assert redis_url.hostname == f"{redis['metadata']['name']}-leader.{redis['metadata']['namespace']}.svc.cluster.local"

    initdb = postgres["spec"]["bootstrap"]["initdb"]
    for key, service in (("database-url", "rw"), ("database-read-url", "ro")):
        url = urlsplit(urls[key])
        assert url.scheme == "postgresql" and url.port == 5432 and url.password == "CHANGE-ME", key
        assert url.hostname == f"{postgres['metadata']['name']}-{service}.{postgres['metadata']['namespace']}.svc.cluster.local"
        assert url.username == initdb["owner"] and url.path == f"/{initdb['database']}", key


@pytest.mark.parametrize("path", sorted(EXAMPLES_DIR.glob("*.yaml")), ids=lambda path: path.name)
def test_operator_examples_are_labelled_as_the_operators_and_not_applied(path):
    assert path.read_text().startswith(EXAMPLE_HEADER)
    [document] = load(path)
    assert "parley.io/example" in document["metadata"]["annotations"]
    assert document["metadata"]["namespace"] == "databases"  # where the base's policies expect datastores
    assert document not in render(OVERLAY_DIR)


def test_the_redis_cluster_example_has_what_its_crd_requires():
    redis = example("RedisCluster")
    assert redis["apiVersion"] == "redis.redis.opstreelabs.in/v1beta2"
    spec = redis["spec"]
    assert isinstance(spec["clusterSize"], int) and spec["clusterSize"] >= 3  # a Redis Cluster's minimum of masters
    assert spec["redisLeader"]["replicas"] == spec["clusterSize"] and spec["redisFollower"]["replicas"] >= 1
    config = spec["kubernetesConfig"]
    assert isinstance(config["image"], str) and config["redisSecret"].keys() == {"name", "key"}
    # Redis 7 or newer (sharded pub/sub).
    assert spec["clusterVersion"] == "v7" and int(config["image"].rsplit(":v", 1)[1].split(".")[0]) >= 7


def test_the_postgres_cluster_example_has_what_its_crd_requires_and_a_replica():
    postgres = example("Cluster")
    assert postgres["apiVersion"] == "postgresql.cnpg.io/v1"
    spec = postgres["spec"]
    assert isinstance(spec["instances"], int) and spec["instances"] >= 2  # a primary and a streaming replica
    assert isinstance(spec["storage"]["size"], str)
    parameters = spec["postgresql"]["parameters"]
    assert all(isinstance(value, str) for value in parameters.values())  # the CRD's map of strings
    assert parameters["hot_standby_feedback"] == "on"
    assert int(spec["imageName"].rsplit(":", 1)[1].split(".")[0]) >= 13  # deploy/README.md: Postgres 13 or newer
