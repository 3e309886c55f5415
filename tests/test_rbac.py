"""deploy/rbac.yaml grants exactly what the Kubernetes runbook actions use.

`NEEDS` is the source of truth a reader can check: every `k8s.*` action of bot.actions.ACTIONS
with the (apiGroup, resource, verb) triples it needs. The tests keep it honest both ways:

* an action in ACTIONS that is missing from `NEEDS` (or from `SCENARIOS`) fails, so whoever adds
  one must state its permissions;
* each action runs, dry run and for real (with what an approved run reads before it, and the
  rollout following after it), through bot.action_runner and the real client against
  the Kubernetes fake (a real HTTP server that records every request), and the requests it made,
  as the API server's authorizer sees them, must equal its `NEEDS` entry;
* the Role (namespaced) and ClusterRole (cluster-scoped) rules must grant every needed triple and
  nothing else (least privilege), without wildcards or secrets, bound to the ServiceAccount.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot import reconcile
from bot.action_params import ParamContext
from bot.action_runner import run_action, validate_params
from bot.actions import ACTIONS, ActionContext
from bot.approvals import FOLLOWED
from integrations.kubernetes import KubernetesClient
from tests.fakes.kubernetes import FakeKubernetes, RecordedRequest

RBAC = Path(__file__).resolve().parent.parent / "deploy" / "rbac.yaml"
RBAC_GROUP = "rbac.authorization.k8s.io"
RBAC_VERSION = f"{RBAC_GROUP}/v1"
ACCOUNT = ("oncall-bot", "oncall-bot")  # ServiceAccount (namespace, name)
PLACEHOLDER = "prod"                    # the namespace the Role/RoleBinding template is written for

Triple = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)
CORE, APPS = "", "apps"

# Kept by hand, checked against the requests the actions really make (test_an_action_makes_...).
NEEDS: dict[str, frozenset[Triple]] = {
    "k8s.pods": frozenset({(CORE, "pods", "list")}),                                  # list_namespaced_pod
    "k8s.logs": frozenset({(CORE, "pods/log", "get")}),                               # read_namespaced_pod_log
    "k8s.events": frozenset({(CORE, "events", "list")}),                              # list_namespaced_event
    "k8s.deployment": frozenset({(APPS, "deployments", "get"),                        # read_namespaced_deployment
                                 (APPS, "replicasets", "list")}),                     # list_namespaced_replica_set
    "k8s.rollout_restart": frozenset({(APPS, "deployments", "get"),
                                      (APPS, "deployments", "patch")}),               # patch_namespaced_deployment
    "k8s.rollout_undo": frozenset({(APPS, "deployments", "get"), (APPS, "replicasets", "list"),
                                   (APPS, "deployments", "patch")}),
    "k8s.scale": frozenset({(APPS, "deployments/scale", "get"),                      # read_namespaced_deployment_scale
                            (APPS, "deployments/scale", "patch"),                    # patch_namespaced_deployment_scale
                            (APPS, "deployments", "get")}),                           # observed, then followed
    "k8s.delete_pod": frozenset({(CORE, "pods", "get"),                               # observed before the run
                                 (CORE, "pods", "delete")}),                          # delete_namespaced_pod
    "k8s.cordon": frozenset({(CORE, "nodes", "get"), (CORE, "nodes", "patch")}),      # read_node, patch_node
    "k8s.uncordon": frozenset({(CORE, "nodes", "get"), (CORE, "nodes", "patch")}),
}
# Cluster-scoped resources: granted by the ClusterRole; everything else by the per-namespace Role.
CLUSTER_SCOPED = frozenset({"nodes"})

# Parameters that take each action down its full path (every request it can make), in a world
# seeded by `seed`. A new k8s.* action needs an entry here too.
SCENARIOS: dict[str, dict[str, Any]] = {
    "k8s.pods": {"namespace": "prod", "selector": "app=web"},
    "k8s.logs": {"namespace": "prod", "pod": "debug", "tail_lines": 10},
    "k8s.events": {"namespace": "prod", "kind": "Deployment", "name": "web"},
    "k8s.deployment": {"namespace": "prod", "deployment": "web"},
    "k8s.rollout_restart": {"namespace": "prod", "deployment": "web"},
    "k8s.rollout_undo": {"namespace": "prod", "deployment": "web"},   # revision 2 -> 1: patches
    "k8s.scale": {"namespace": "prod", "deployment": "web", "replicas": 5},
    "k8s.delete_pod": {"namespace": "prod", "pod": "debug"},
    "k8s.cordon": {"node": "node-1"},                                 # schedulable: patched
    "k8s.uncordon": {"node": "node-2"},                               # cordoned: patched
}
PARAMS = ParamContext(namespaces=frozenset({"prod"}), nodes=("node-*",), scale=(0, 10))

K8S_ACTIONS = sorted(spec.name for spec in ACTIONS if spec.name.startswith("k8s."))


def seed(fake: FakeKubernetes) -> None:
    fake.add_node("node-1")
    fake.add_node("node-2", unschedulable=True)
    fake.add_deployment("prod", "web", image="registry/web:1.0", replicas=3)
    fake.set_image("prod", "web", "registry/web:1.1")  # revision 2, so there is one to roll back to
    fake.add_pod("prod", "debug", labels={"app": "web"}, logs="line 1\nline 2\n")
    fake.add_event("prod", "Deployment", "web", reason="ScalingReplicaSet", message="scaled up")


# -- what the API server's authorizer sees ------------------------------------------------------

_PATH = re.compile(r"^/(?:api/v1|apis/(?P<group>[a-z0-9.]+)/[a-z0-9]+)(?:/namespaces/(?P<ns>[^/]+)(?=/))?"
                   r"/(?P<resource>[a-z]+)(?:/(?P<name>[^/]+)(?:/(?P<sub>[a-z]+))?)?$")


def attributes(request: RecordedRequest) -> tuple[str | None, Triple]:
    """(namespace, (apiGroup, resource[/subresource], verb)) of a resource request, as the RBAC
    authorizer derives them: GET of a collection is list (watch with ?watch), DELETE of one is
    delete and of a collection deletecollection."""
    match = _PATH.match(request.path)
    assert match, f"not a resource request: {request.method} {request.path}"
    named = match["name"] is not None
    verb = {"GET": "get" if named else "watch" if request.query.get("watch") in ("true", "1") else "list",
            "PATCH": "patch", "PUT": "update", "POST": "create",
            "DELETE": "delete" if named else "deletecollection"}[request.method]
    resource = f"{match['resource']}/{match['sub']}" if match["sub"] else match["resource"]
    return match["ns"], (match["group"] or CORE, resource, verb)


@pytest.fixture
def fake() -> Iterator[FakeKubernetes]:
    with FakeKubernetes() as server:
        seed(server)
        yield server


@pytest.fixture
def kube(fake: FakeKubernetes, tmp_path: Path) -> Iterator[KubernetesClient]:
    with KubernetesClient.from_environment(str(fake.kubeconfig(tmp_path / "kubeconfig"))) as client:
        yield client


def recorded(fake: FakeKubernetes, kube: KubernetesClient, action: str) -> list[tuple[str | None, Triple]]:
    """Run the action as a dry run and then for real; the requests the fake received."""
    assert action in SCENARIOS, f"add a SCENARIOS entry that takes {action} down its full path"
    params = validate_params(action, SCENARIOS[action], PARAMS)
    before = len(fake.requests)
    for dry_run in (True, False):
        if not dry_run and action in reconcile.RECONCILABLE:  # what an approved run reads first (bot.reconcile)
            asyncio.run(reconcile.observe(kube, action, params.model_dump(mode="json")))
        asyncio.run(run_action(action, params, ActionContext(kubernetes=kube, dry_run=dry_run)))
    if action in FOLLOWED:  # then its rollout is followed (commands.approvals.follow)
        kube.rollout_status("prod", str(params.model_dump()["deployment"]))
    made = fake.requests[before:]
    assert made and all(200 <= r.status < 300 for r in made), [(r.method, r.path, r.status) for r in made]
    return [attributes(r) for r in made]


# -- the RBAC documents ---------------------------------------------------------------------------

def documents(text: str | None = None) -> list[dict[str, Any]]:
    docs = [doc for doc in yaml.safe_load_all(RBAC.read_text() if text is None else text) if doc is not None]
    assert all(isinstance(doc, dict) for doc in docs)
    return docs


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def granted(role: dict[str, Any]) -> set[Triple]:
    return {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def needed(cluster: bool) -> set[Triple]:
    return {t for triples in NEEDS.values() for t in triples if (t[1].split("/")[0] in CLUSTER_SCOPED) == cluster}


# -- every action is accounted for ----------------------------------------------------------------

def test_every_kubernetes_action_states_its_permissions() -> None:
    missing = sorted(set(K8S_ACTIONS) - set(NEEDS))
    assert not missing, f"add the (apiGroup, resource, verb) triples of {missing} to NEEDS and to deploy/rbac.yaml"
    gone = sorted(set(NEEDS) - set(K8S_ACTIONS))
    assert not gone, f"{gone} are no longer actions: drop them from NEEDS (and their rules if unused)"
    assert sorted(SCENARIOS) == K8S_ACTIONS, "every k8s.* action needs a SCENARIOS entry that exercises it"


@pytest.mark.parametrize("action", K8S_ACTIONS)
def test_an_action_makes_exactly_the_requests_in_its_table_entry(
        fake: FakeKubernetes, kube: KubernetesClient, action: str) -> None:
    made = recorded(fake, kube, action)
    assert {triple for _, triple in made} == NEEDS.get(action), f"update NEEDS[{action!r}] and deploy/rbac.yaml"
    for namespace, (_, resource, _) in made:
        cluster = resource.split("/")[0] in CLUSTER_SCOPED
        assert (namespace is None) == cluster, f"{resource} in {namespace}: fix CLUSTER_SCOPED"
        assert namespace in (None, *PARAMS.namespaces)


@pytest.mark.parametrize("action", K8S_ACTIONS)
def test_the_requests_an_action_makes_are_granted(fake: FakeKubernetes, kube: KubernetesClient, action: str) -> None:
    docs = documents()
    allowed: dict[str | None, set[Triple]] = {None: granted(one(docs, "ClusterRole")),
                                              PLACEHOLDER: granted(one(docs, "Role"))}
    denied = [(namespace, triple) for namespace, triple in recorded(fake, kube, action)
              if triple not in allowed[None if namespace is None else PLACEHOLDER]]
    assert not denied, f"{action} makes requests deploy/rbac.yaml does not grant: {denied}"


def test_the_role_grants_what_namespaced_actions_need_and_nothing_more() -> None:
    role = granted(one(documents(), "Role"))
    assert not needed(cluster=False) - role, f"not granted: {sorted(needed(cluster=False) - role)}"
    assert not role - needed(cluster=False), f"no action needs: {sorted(role - needed(cluster=False))}"


def test_the_cluster_role_grants_node_access_only() -> None:
    cluster_role = granted(one(documents(), "ClusterRole"))
    assert cluster_role == needed(cluster=True) == {(CORE, "nodes", "get"), (CORE, "nodes", "patch")}


# -- the documents are valid and point at each other ----------------------------------------------

KINDS = {"ServiceAccount": "v1", "Role": RBAC_VERSION, "RoleBinding": RBAC_VERSION,
         "ClusterRole": RBAC_VERSION, "ClusterRoleBinding": RBAC_VERSION}


def test_documents_are_rbac_objects_with_the_expected_scopes() -> None:
    docs = documents()
    assert sorted(doc["kind"] for doc in docs) == sorted(KINDS)
    for doc in docs:
        assert doc["apiVersion"] == KINDS[doc["kind"]], doc["kind"]
        assert set(doc) <= {"apiVersion", "kind", "metadata", "rules", "roleRef", "subjects"}, doc["kind"]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", doc["metadata"]["name"])
        namespaced = doc["kind"] in ("ServiceAccount", "Role", "RoleBinding")
        assert ("namespace" in doc["metadata"]) == namespaced, doc["kind"]
    account = one(docs, "ServiceAccount")
    assert (account["metadata"]["namespace"], account["metadata"]["name"]) == ACCOUNT
    assert {one(docs, kind)["metadata"]["namespace"] for kind in ("Role", "RoleBinding")} == {PLACEHOLDER}


def test_rules_have_no_wildcards_secrets_or_extras() -> None:
    for kind in ("Role", "ClusterRole"):
        role = one(documents(), kind)
        assert set(role) == {"apiVersion", "kind", "metadata", "rules"}, kind
        for rule in role["rules"]:
            assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no nonResourceURLs, no aggregation
            values = [*rule["apiGroups"], *rule["resources"], *rule["verbs"]]
            assert all(isinstance(v, str) for v in values) and not any("*" in v for v in values), rule
            assert not {"secrets", "serviceaccounts", "serviceaccounts/token"} & set(rule["resources"]), rule
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule


@pytest.mark.parametrize(("binding", "role"), [("RoleBinding", "Role"), ("ClusterRoleBinding", "ClusterRole")])
def test_bindings_bind_the_service_account_to_the_defined_role(binding: str, role: str) -> None:
    docs = documents()
    bound, target = one(docs, binding), one(docs, role)
    assert bound["roleRef"] == {"apiGroup": RBAC_GROUP, "kind": role, "name": target["metadata"]["name"]}
    if binding == "RoleBinding":
        assert bound["metadata"]["namespace"] == target["metadata"]["namespace"]
    assert bound["subjects"] == [{"kind": "ServiceAccount", "name": ACCOUNT[1], "namespace": ACCOUNT[0]}]


def test_the_documented_copy_to_another_namespace_moves_only_the_role_pair() -> None:
    """README.md, Kubernetes permissions: `sed 's/^  namespace: prod$/  namespace: staging/' deploy/rbac.yaml`."""
    moved = documents(re.sub(r"(?m)^  namespace: prod$", "  namespace: staging", RBAC.read_text()))
    original = documents()
    for before, after in zip(original, moved, strict=True):
        if before["kind"] in ("Role", "RoleBinding"):
            assert after["metadata"]["namespace"] == "staging"
            after = {**after, "metadata": {**after["metadata"], "namespace": PLACEHOLDER}}
        assert after == before
