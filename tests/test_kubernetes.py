"""integrations/kubernetes.py against the Kubernetes fake, over real HTTP.

The fake is the project's own API server (tests/fakes/kubernetes.py); the last tests run the
machine's kubectl against it and check that our client sends what kubectl sends.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import kubernetes
import pytest

from integrations.kubernetes import (
    BadRequestError,
    ConfigurationError,
    ForbiddenError,
    InvalidError,
    KubernetesClient,
    KubernetesError,
    NotFoundError,
    RolloutRefusedError,
    UnauthorizedError,
)
from tests.conftest import IN_CI
from tests.fakes.kubernetes import FakeKubernetes
from tests.fakes.kubernetes_store import RESTARTED_AT, REVISION, REVISION_HISTORY

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
DEPLOYMENTS = "/apis/apps/v1/namespaces/prod/deployments"


@pytest.fixture
def fake() -> Iterator[FakeKubernetes]:
    with FakeKubernetes() as server:
        server.add_node("node-1")
        server.add_node("node-2")
        yield server


@pytest.fixture
def kubeconfig(fake: FakeKubernetes, tmp_path: Path) -> Path:
    return fake.kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def kube(kubeconfig: Path) -> Iterator[KubernetesClient]:
    with KubernetesClient.from_environment(str(kubeconfig)) as client:
        yield client


@pytest.fixture
def web(fake: FakeKubernetes) -> dict[str, Any]:
    """prod/web at revision 2 (image 1.0, then 1.1), three pods."""
    fake.add_deployment("prod", "web", image="registry/web:1.0", replicas=3,
                        annotations={"kubernetes.io/change-cause": "deploy 1.0"})
    return fake.set_image("prod", "web", "registry/web:1.1", annotations={"kubernetes.io/change-cause": "deploy 1.1"})


def patches(fake: FakeKubernetes, path: str) -> list[Any]:
    return fake.requests_for("PATCH", path)


def template(fake: FakeKubernetes, namespace: str = "prod", name: str = "web") -> dict[str, Any]:
    return fake.get("deployments", namespace, name)["spec"]["template"]


def revisions(fake: FakeKubernetes, namespace: str = "prod", name: str = "web") -> dict[str, tuple[str, str | None]]:
    """ReplicaSet name -> (revision, revision-history)."""
    return {rs["metadata"]["name"]: (rs["metadata"]["annotations"][REVISION],
                                     rs["metadata"]["annotations"].get(REVISION_HISTORY))
            for rs in fake.replica_sets(namespace, name)}


# -- configuration and transport --------------------------------------------------------------

def test_from_environment_reads_the_kubeconfig_and_leaves_the_global_default_alone(
        fake: FakeKubernetes, kubeconfig: Path) -> None:
    default_host = kubernetes.client.Configuration.get_default_copy().host
    with KubernetesClient.from_environment(str(kubeconfig)) as kube:
        assert kube.list_pods("prod", "app=none") == []
    assert kubernetes.client.Configuration.get_default_copy().host == default_host
    request = fake.requests[-1]
    assert request.headers["authorization"] == "Bearer fake-token"
    assert request.path == "/api/v1/namespaces/prod/pods"


def test_from_environment_falls_back_to_the_kubeconfig_variable(fake: FakeKubernetes, kubeconfig: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    fake.add_pod("prod", "solo")
    with KubernetesClient.from_environment() as kube:
        assert [pod.name for pod in kube.list_pods("prod", "")] == ["solo"]


def test_an_explicit_kubeconfig_wins_over_the_in_cluster_environment(fake: FakeKubernetes, kubeconfig: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with KubernetesClient.from_environment(str(kubeconfig)) as kube:
        kube.list_pods("prod", "app=web")
    assert fake.requests[-1].path == "/api/v1/namespaces/prod/pods"


def test_missing_configuration_is_a_configuration_error(tmp_path: Path, kubeconfig: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError) as missing:
        KubernetesClient.from_environment(str(tmp_path / "nope"))
    assert missing.value.status == 0 and "nope" in missing.value.message
    with pytest.raises(ConfigurationError, match="staging"):
        KubernetesClient.from_environment(str(kubeconfig), context="staging")
    if Path("/var/run/secrets/kubernetes.io/serviceaccount/token").exists():
        return  # really in a pod: in-cluster config would load
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(ConfigurationError, match="in-cluster service account"):
        KubernetesClient.from_environment()


def test_https_kubeconfig_carries_the_fake_ca(tmp_path: Path) -> None:
    with FakeKubernetes(tls=True) as server:
        server.add_pod("prod", "solo", phase="Pending")
        with KubernetesClient.from_environment(str(server.kubeconfig(tmp_path / "kubeconfig"))) as kube:
            assert [(p.name, p.phase, p.ready) for p in kube.list_pods("prod", "")] == [("solo", "Pending", "0/1")]
        assert server.base_url.startswith("https://")


def test_a_rejected_token_is_unauthorized(fake: FakeKubernetes, kube: KubernetesClient) -> None:
    fake.token = "rotated"
    with pytest.raises(UnauthorizedError) as error:
        kube.list_pods("prod", "app=web")
    assert (error.value.status, error.value.reason) == (401, "Unauthorized")
    assert fake.requests[-1].status == 401


def test_no_server_is_a_retryable_connection_error(fake: FakeKubernetes, kube: KubernetesClient) -> None:
    fake.stop()
    with pytest.raises(KubernetesError) as error:
        kube.events("prod")
    assert (error.value.status, error.value.reason) == (0, "ConnectionError")
    assert error.value.retryable


def test_a_response_missing_required_fields_is_a_kubernetes_error(fake: FakeKubernetes, kube: KubernetesClient,
                                                                   web: dict[str, Any]) -> None:
    broken = fake.get("deployments", "prod", "web")
    del broken["spec"]["selector"]  # required by the 37.x models (platform.md §0 #5)
    fake.put_raw("deployments", broken)
    with pytest.raises(KubernetesError) as error:
        kube.deployment_status("prod", "web")
    assert (error.value.status, error.value.reason) == (0, "ValidationError")
    assert "selector" in error.value.message and not error.value.retryable


# -- diagnostics ------------------------------------------------------------------------------

def test_list_pods_summarises_like_kubectl_get_pods(fake: FakeKubernetes, kube: KubernetesClient) -> None:
    fake.add_deployment("prod", "api", replicas=3, ready_replicas=2)
    fake.add_pod("prod", "api-debug", labels={"app": "api"}, containers=["app", "sidecar"],
                 restarts={"app": 2, "sidecar": 1}, node="node-2", created=datetime.now(UTC) - timedelta(hours=1))
    fake.add_pod("prod", "other", labels={"app": "other"})

    pods = kube.list_pods("prod", "app=api")

    assert [pod.name for pod in pods] == sorted(pod.name for pod in pods) and len(pods) == 4
    debug = next(pod for pod in pods if pod.name == "api-debug")
    assert (debug.phase, debug.ready, debug.restarts, debug.node, debug.reason) == ("Running", "2/2", 3, "node-2", None)
    assert 3600 <= debug.age_seconds < 3700
    crashing = [pod for pod in pods if pod.ready == "0/1"]
    assert len(crashing) == 1 and crashing[0].reason == "CrashLoopBackOff" and crashing[0].restarts == 5
    assert fake.requests[-1].query == {"labelSelector": "app=api", "limit": "500"}


def test_list_pods_follows_continue_tokens(fake: FakeKubernetes, kube: KubernetesClient) -> None:
    for index in range(503):
        fake.add_pod("bulk", f"pod-{index:03d}", labels={"app": "bulk"})
    pods = kube.list_pods("bulk", "app=bulk")
    assert [pod.name for pod in pods] == [f"pod-{index:03d}" for index in range(503)]
    pages = fake.requests_for("GET", "/api/v1/namespaces/bulk/pods")
    assert len(pages) == 2 and "continue" in pages[1].query


def test_list_pods_with_a_malformed_selector_is_a_bad_request(kube: KubernetesClient) -> None:
    with pytest.raises(BadRequestError) as error:
        kube.list_pods("prod", "app in (web")
    assert (error.value.status, error.value.reason) == (400, "BadRequest")


def test_pod_logs_tail_and_previous_container(fake: FakeKubernetes, kube: KubernetesClient) -> None:
    fake.add_pod("prod", "web-1", containers=["web"], restarts=1,
                 logs="".join(f"line {n}\n" for n in range(1, 6)), previous_logs="panic: boom\nexit 2\n")

    assert kube.pod_logs("prod", "web-1", tail_lines=2) == "line 4\nline 5\n"
    assert kube.pod_logs("prod", "web-1", previous=True) == "panic: boom\nexit 2\n"
    assert fake.requests[-1].query == {"previous": "true", "tailLines": "100"}
    assert fake.requests[-2].query == {"tailLines": "2"}


def test_pod_logs_errors_are_status_errors(fake: FakeKubernetes, kube: KubernetesClient) -> None:
    fake.add_pod("prod", "multi", containers=["app", "proxy"], logs={"app": "a\n", "proxy": "p\n"})
    assert kube.pod_logs("prod", "multi", container="proxy") == "p\n"
    with pytest.raises(BadRequestError,
                       match=r"a container name must be specified for pod multi, choose one of: \[app proxy\]"):
        kube.pod_logs("prod", "multi")
    with pytest.raises(BadRequestError, match='previous terminated container "app" in pod "multi" not found'):
        kube.pod_logs("prod", "multi", container="app", previous=True)
    with pytest.raises(NotFoundError) as missing:
        kube.pod_logs("prod", "gone")
    assert (missing.value.status, missing.value.reason, missing.value.message) == \
        (404, "NotFound", 'pods "gone" not found')


def test_events_newest_first_filtered_and_limited(fake: FakeKubernetes, kube: KubernetesClient) -> None:
    base = datetime(2024, 5, 1, 11, 0, tzinfo=UTC)
    fake.add_event("prod", "Pod", "web-1", reason="Scheduled", message="assigned", last_seen=base)
    fake.add_event("prod", "Pod", "web-1", reason="BackOff", message="Back-off restarting failed container",
                   type="Warning", count=7, last_seen=base + timedelta(minutes=5), first_seen=base)
    fake.add_event("prod", "Pod", "web-1", reason="Pulled", message="image pulled",
                   last_seen=base + timedelta(minutes=1))
    fake.add_event("prod", "Pod", "web-2", reason="Killing", message="stopping", last_seen=base + timedelta(minutes=9))
    fake.add_event("prod", "Deployment", "web", reason="ScalingReplicaSet", message="scaled up",
                   component="deployment-controller", last_seen=base + timedelta(minutes=2))

    events = kube.events("prod", kind="Pod", name="web-1")
    assert [(e.reason, e.object, e.type, e.count) for e in events] == [
        ("BackOff", "Pod/web-1", "Warning", 7), ("Pulled", "Pod/web-1", "Normal", 1),
        ("Scheduled", "Pod/web-1", "Normal", 1)]
    assert events[0].last_seen == base + timedelta(minutes=5)
    assert fake.requests[-1].query["fieldSelector"] == "involvedObject.kind=Pod,involvedObject.name=web-1"

    assert [e.reason for e in kube.events("prod", limit=2)] == ["Killing", "BackOff"]
    assert [e.object for e in kube.events("prod", kind="Deployment")] == ["Deployment/web"]


def test_events_with_an_unsupported_field_selector_get_a_400_status(fake: FakeKubernetes, kubeconfig: Path) -> None:
    """What the API server says for a field it cannot select events on, via the official client."""
    api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig), persist_config=False)
    with api:
        core = kubernetes.client.CoreV1Api(api)
        assert core.list_namespaced_event("prod", field_selector="type=Warning,source=kubelet").items == []
        with pytest.raises(kubernetes.client.ApiException) as error:
            core.list_namespaced_event("prod", field_selector="involvedObject.color=red")
    status = json.loads(error.value.body)
    assert error.value.status == 400
    assert (status["kind"], status["reason"], status["message"]) == (
        "Status", "BadRequest", "field label not supported: involvedObject.color")


def test_deployment_status(fake: FakeKubernetes, kube: KubernetesClient, web: dict[str, Any]) -> None:
    fake.add_deployment("prod", "web-canary", labels={"app": "web", "track": "canary"}, replicas=1)

    status = kube.deployment_status("prod", "web")

    assert (status.desired_replicas, status.ready_replicas, status.updated_replicas,
            status.available_replicas) == (3, 3, 3, 3)
    assert (status.revision, status.paused, status.images, status.rolled_out) == (2, False, ["registry/web:1.1"], True)
    assert {(c.type, c.status) for c in status.conditions} == {("Available", "True"), ("Progressing", "True")}
    # newest first; the canary's ReplicaSet matches app=web but is not controlled by web
    assert [(rs.revision, rs.replicas, rs.images) for rs in status.replica_sets] == [
        (2, 3, ["registry/web:1.1"]), (1, 0, ["registry/web:1.0"])]
    assert fake.requests[-1].query["labelSelector"] == "app=web"


def test_deployment_status_of_an_unhealthy_deployment(fake: FakeKubernetes, kube: KubernetesClient) -> None:
    fake.add_deployment("prod", "api", replicas=4, ready_replicas=1)
    status = kube.deployment_status("prod", "api")
    assert (status.ready_replicas, status.available_replicas, status.rolled_out) == (1, 1, False)
    available = next(c for c in status.conditions if c.type == "Available")
    assert (available.status, available.reason) == ("False", "MinimumReplicasUnavailable")


def test_deployment_status_errors(fake: FakeKubernetes, kube: KubernetesClient, web: dict[str, Any]) -> None:
    with pytest.raises(NotFoundError) as missing:
        kube.deployment_status("prod", "nope")
    assert missing.value.message == 'deployments.apps "nope" not found'
    fake.forbid("list", "replicasets", "prod")
    with pytest.raises(ForbiddenError) as forbidden:
        kube.deployment_status("prod", "web")
    assert (forbidden.value.status, forbidden.value.reason) == (403, "Forbidden")
    assert 'cannot list resource "replicasets" in API group "apps" in the namespace "prod"' in forbidden.value.message


# -- remediations -----------------------------------------------------------------------------

def test_rollout_restart_patches_like_kubectl_and_makes_a_revision(fake: FakeKubernetes, kube: KubernetesClient,
                                                                   web: dict[str, Any]) -> None:
    old_pods = {p["metadata"]["name"] for p in fake.list("pods", "prod")}

    result = kube.rollout_restart("prod", "web", now=NOW)

    assert (result.action, result.changed, result.dry_run, result.restarted_at) == ("rollout_restart", True, False,
                                                                                     "2024-05-01T12:00:00Z")
    assert result.summary == "deployment.apps/web in prod restarted"
    [patch] = patches(fake, f"{DEPLOYMENTS}/web")
    assert patch.content_type == "application/strategic-merge-patch+json"
    assert patch.query == {"fieldManager": "kubectl-rollout"}
    assert patch.body == {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: "2024-05-01T12:00:00Z"}}}}}
    assert template(fake)["metadata"]["annotations"] == {RESTARTED_AT: "2024-05-01T12:00:00Z"}
    assert fake.get("deployments", "prod", "web")["metadata"]["annotations"][REVISION] == "3"
    assert sorted(rev for rev, _ in revisions(fake).values()) == ["1", "2", "3"]
    new_pods = {p["metadata"]["name"] for p in fake.list("pods", "prod")}
    assert len(new_pods) == 3 and not new_pods & old_pods


def test_rollout_restart_with_an_offset_clock_keeps_the_offset(fake: FakeKubernetes, kube: KubernetesClient,
                                                               web: dict[str, Any]) -> None:
    tokyo = timezone(timedelta(hours=9))
    assert kube.rollout_restart("prod", "web", now=NOW.astimezone(tokyo)).restarted_at == "2024-05-01T21:00:00+09:00"


def test_rollout_restart_dry_run_persists_nothing(fake: FakeKubernetes, kube: KubernetesClient,
                                                  web: dict[str, Any]) -> None:
    before = fake.get("deployments", "prod", "web")
    result = kube.rollout_restart("prod", "web", now=NOW, dry_run=True)
    assert result.dry_run and result.summary.endswith("(server dry run)")
    assert patches(fake, f"{DEPLOYMENTS}/web")[0].query == {"fieldManager": "kubectl-rollout", "dryRun": "All"}
    assert fake.get("deployments", "prod", "web") == before
    assert len(fake.replica_sets("prod", "web")) == 2


def test_rollout_restart_twice_in_one_second_is_refused(fake: FakeKubernetes, kube: KubernetesClient,
                                                        web: dict[str, Any]) -> None:
    kube.rollout_restart("prod", "web", now=NOW)
    with pytest.raises(RolloutRefusedError) as refused:
        kube.rollout_restart("prod", "web", now=NOW + timedelta(milliseconds=400))
    assert (refused.value.status, refused.value.reason) == (409, "AlreadyRestarted")
    assert len(patches(fake, f"{DEPLOYMENTS}/web")) == 1


def test_restart_then_undo_lands_on_the_previous_template(fake: FakeKubernetes, kube: KubernetesClient,
                                                          web: dict[str, Any]) -> None:
    before = template(fake)
    kube.rollout_restart("prod", "web", now=NOW)
    restarted = template(fake)
    by_revision = {rev: name for name, (rev, _) in revisions(fake).items()}

    result = kube.rollout_undo("prod", "web")

    assert (result.action, result.revision, result.changed) == ("rollout_undo", 2, True)
    assert result.summary == "deployment.apps/web in prod rolled back to revision 2"
    assert template(fake) == before  # the restartedAt annotation is gone again
    [patch] = patches(fake, f"{DEPLOYMENTS}/web")[1:]
    assert patch.content_type == "application/json-patch+json" and patch.query == {}
    assert [(op["op"], op["path"]) for op in patch.body] == [("replace", "/spec/template"),
                                                             ("replace", "/metadata/annotations")]
    assert "pod-template-hash" not in patch.body[0]["value"]["metadata"]["labels"]
    # the ReplicaSet of revision 2 was adopted again as revision 4 and remembers its old number
    assert revisions(fake)[by_revision["2"]] == ("4", "2")
    assert fake.get("deployments", "prod", "web")["metadata"]["annotations"][REVISION] == "4"
    assert kube.deployment_status("prod", "web").revision == 4

    # undo again: back to the restarted template (revision 3 becomes 5)
    assert kube.rollout_undo("prod", "web").revision == 3
    assert template(fake) == restarted
    assert revisions(fake)[by_revision["3"]] == ("5", "3")


def test_rollout_undo_to_a_given_revision_and_a_missing_one(fake: FakeKubernetes, kube: KubernetesClient,
                                                            web: dict[str, Any]) -> None:
    fake.set_image("prod", "web", "registry/web:1.2", annotations={"kubernetes.io/change-cause": "deploy 1.2"})
    fake.get("deployments", "prod", "web")  # revision 3 now
    with pytest.raises(RolloutRefusedError) as missing:
        kube.rollout_undo("prod", "web", to_revision=7)
    assert (missing.value.status, missing.value.reason) == (404, "RevisionNotFound")
    assert missing.value.message == "unable to find specified revision 7 in history"
    assert patches(fake, f"{DEPLOYMENTS}/web") == []

    result = kube.rollout_undo("prod", "web", to_revision=1)

    assert result.revision == 1
    dep = fake.get("deployments", "prod", "web")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "registry/web:1.0"
    # annotations: the ReplicaSet's change-cause comes back, the Deployment keeps its revision bookkeeping
    assert dep["metadata"]["annotations"] == {"kubernetes.io/change-cause": "deploy 1.0", REVISION: "4"}
    assert sorted(rev for rev, _ in revisions(fake).values()) == ["2", "3", "4"]


def test_rollout_undo_skips_when_the_template_already_matches(fake: FakeKubernetes, kube: KubernetesClient,
                                                              web: dict[str, Any]) -> None:
    result = kube.rollout_undo("prod", "web", to_revision=2)
    assert (result.changed, result.revision) == (False, 2)
    assert "skipped rollback (current template already matches revision 2)" in result.summary
    assert patches(fake, f"{DEPLOYMENTS}/web") == []


def test_rollout_undo_without_history_is_refused(fake: FakeKubernetes, kube: KubernetesClient) -> None:
    fake.add_deployment("prod", "fresh")
    with pytest.raises(RolloutRefusedError) as refused:
        kube.rollout_undo("prod", "fresh")
    assert (refused.value.status, refused.value.reason) == (404, "NoRolloutHistory")


def test_rollout_undo_dry_run_persists_nothing(fake: FakeKubernetes, kube: KubernetesClient,
                                               web: dict[str, Any]) -> None:
    before, history = fake.get("deployments", "prod", "web"), revisions(fake)
    result = kube.rollout_undo("prod", "web", dry_run=True)
    assert (result.dry_run, result.revision) == (True, 1)
    assert patches(fake, f"{DEPLOYMENTS}/web")[0].query == {"dryRun": "All"}
    assert fake.get("deployments", "prod", "web") == before and revisions(fake) == history


def test_paused_deployments_are_neither_restarted_nor_rolled_back(fake: FakeKubernetes,
                                                                  kube: KubernetesClient) -> None:
    fake.add_deployment("prod", "frozen", image="registry/frozen:1")
    fake.set_image("prod", "frozen", "registry/frozen:2")
    dep = fake.get("deployments", "prod", "frozen")
    dep["spec"]["paused"] = True
    fake.write_deployment(dep, spec_changed=True)

    with pytest.raises(RolloutRefusedError) as restart:
        kube.rollout_restart("prod", "frozen")
    assert (restart.value.status, restart.value.reason) == (409, "DeploymentPaused")
    assert "can't restart paused deployment (run rollout resume first)" in restart.value.message
    with pytest.raises(RolloutRefusedError, match="you cannot rollback a paused deployment"):
        kube.rollout_undo("prod", "frozen")
    assert patches(fake, f"{DEPLOYMENTS}/frozen") == []
    assert kube.deployment_status("prod", "frozen").paused


def test_scale_merge_patches_the_scale_subresource(fake: FakeKubernetes, kube: KubernetesClient,
                                                   web: dict[str, Any]) -> None:
    history = revisions(fake)

    result = kube.scale("prod", "web", 5)

    assert (result.previous_replicas, result.replicas, result.changed) == (3, 5, True)
    assert result.summary == "deployment.apps/web in prod scaled from 3 to 5 replicas"
    [patch] = patches(fake, f"{DEPLOYMENTS}/web/scale")
    assert (patch.content_type, patch.body, patch.query) == \
        ("application/merge-patch+json", {"spec": {"replicas": 5}}, {})
    assert fake.get("deployments", "prod", "web")["spec"]["replicas"] == 5
    assert len(kube.list_pods("prod", "app=web")) == 5
    assert revisions(fake) == history  # scaling is not a new revision


def test_scale_dry_run_leaves_state_unchanged(fake: FakeKubernetes, kube: KubernetesClient,
                                              web: dict[str, Any]) -> None:
    before = fake.get("deployments", "prod", "web")
    result = kube.scale("prod", "web", 0, dry_run=True)
    assert (result.dry_run, result.previous_replicas, result.replicas) == (True, 3, 0)
    assert patches(fake, f"{DEPLOYMENTS}/web/scale")[0].query == {"dryRun": "All"}
    assert fake.get("deployments", "prod", "web") == before
    assert len(kube.list_pods("prod", "app=web")) == 3


def test_scale_errors(fake: FakeKubernetes, kube: KubernetesClient, web: dict[str, Any]) -> None:
    with pytest.raises(InvalidError) as invalid:
        kube.scale("prod", "web", -1)
    assert (invalid.value.status, invalid.value.reason) == (422, "Invalid")
    assert "spec.replicas: Invalid value: -1: must be greater than or equal to 0" in invalid.value.message
    fake.forbid("patch", "deployments/scale", "prod")
    with pytest.raises(ForbiddenError, match='cannot patch resource "deployments/scale"'):
        kube.scale("prod", "web", 10)
    with pytest.raises(NotFoundError):
        kube.scale("prod", "nope", 1)
    assert fake.get("deployments", "prod", "web")["spec"]["replicas"] == 3


def test_delete_pod_dry_run_then_for_real(fake: FakeKubernetes, kube: KubernetesClient, web: dict[str, Any]) -> None:
    victim = kube.list_pods("prod", "app=web")[0].name

    dry = kube.delete_pod("prod", victim, grace_period_seconds=10, dry_run=True)
    assert dry.dry_run and dry.summary == f"pod/{victim} in prod deleted (grace period 10s) (server dry run)"
    assert victim in [pod.name for pod in kube.list_pods("prod", "app=web")]

    real = kube.delete_pod("prod", victim, grace_period_seconds=10)
    assert (real.action, real.kind, real.changed) == ("delete_pod", "Pod", True)
    names = [pod.name for pod in kube.list_pods("prod", "app=web")]
    assert victim not in names and len(names) == 3  # the ReplicaSet replaced it
    dry_request, real_request = fake.requests_for("DELETE")
    assert dry_request.query == {"gracePeriodSeconds": "10", "dryRun": "All"}
    assert real_request.query == {"gracePeriodSeconds": "10"}
    assert real_request.status == 200

    with pytest.raises(NotFoundError):
        kube.delete_pod("prod", victim)
    fake.forbid("delete", "pods")
    with pytest.raises(ForbiddenError):
        kube.delete_pod("prod", names[0])
    assert names[0] in [pod.name for pod in kube.list_pods("prod", "app=web")]


def test_delete_pod_returns_the_terminating_pod(fake: FakeKubernetes, kubeconfig: Path) -> None:
    fake.add_pod("prod", "solo")
    api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig), persist_config=False)
    with api:
        pod = kubernetes.client.CoreV1Api(api).delete_namespaced_pod("solo", "prod", grace_period_seconds=15)
    assert pod.metadata.name == "solo" and pod.metadata.deletion_grace_period_seconds == 15
    assert pod.metadata.deletion_timestamp is not None


def test_cordon_and_uncordon(fake: FakeKubernetes, kube: KubernetesClient) -> None:
    assert kube.cordon("node-1", dry_run=True).summary == "node/node-1 cordoned (server dry run)"
    assert "unschedulable" not in fake.get("nodes", "", "node-1")["spec"]

    assert kube.cordon("node-1").changed
    node = fake.get("nodes", "", "node-1")
    assert node["spec"]["unschedulable"] is True
    assert node["spec"]["taints"] == [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]
    again = kube.cordon("node-1")
    assert (again.changed, again.summary) == (False, "node/node-1 already cordoned")

    assert kube.uncordon("node-1").summary == "node/node-1 uncordoned"
    assert "unschedulable" not in fake.get("nodes", "", "node-1")["spec"]
    assert [p.body for p in fake.requests_for("PATCH")] == [
        {"spec": {"unschedulable": True}}, {"spec": {"unschedulable": True}}, {"spec": {"unschedulable": None}}]
    assert {p.content_type for p in fake.requests_for("PATCH")} == {"application/strategic-merge-patch+json"}
    with pytest.raises(NotFoundError, match='nodes "node-9" not found'):
        kube.cordon("node-9")


# -- the fake's own API semantics (raw HTTP) --------------------------------------------------

@pytest.fixture
def http(fake: FakeKubernetes) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.base_url, headers={"Authorization": f"Bearer {fake.token}"}) as client:
        yield client


def test_patch_content_types(fake: FakeKubernetes, http: httpx.Client, web: dict[str, Any]) -> None:
    url = f"{DEPLOYMENTS}/web"
    unsupported = http.patch(url, content=b"{}", headers={"Content-Type": "application/json"})
    assert unsupported.status_code == 415 and unsupported.json()["reason"] == "UnsupportedMediaType"

    sidecar = {"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "envoy:1"}]}}}}
    merged = http.patch(url, json=sidecar, headers={"Content-Type": "application/strategic-merge-patch+json"})
    assert [c["name"] for c in merged.json()["spec"]["template"]["spec"]["containers"]] == ["web", "sidecar"]

    replaced = http.patch(url, json=sidecar, headers={"Content-Type": "application/merge-patch+json"})
    assert [c["name"] for c in replaced.json()["spec"]["template"]["spec"]["containers"]] == ["sidecar"]

    missing = http.patch(url, json=[{"op": "replace", "path": "/spec/nothing/here", "value": 1}],
                         headers={"Content-Type": "application/json-patch+json"})
    assert missing.status_code == 422 and missing.json()["reason"] == "Invalid"

    stale = http.patch(url, json={"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 1}},
                       headers={"Content-Type": "application/merge-patch+json"})
    assert stale.status_code == 409 and stale.json()["reason"] == "Conflict"
    assert "the object has been modified" in stale.json()["message"]

    no_image = http.patch(url, json=[{"op": "remove", "path": "/spec/template/spec/containers/0/image"}],
                          headers={"Content-Type": "application/json-patch+json"})
    assert no_image.status_code == 422
    assert no_image.json()["details"]["causes"][0]["field"] == "spec.template.spec.containers[0].image"


def test_scale_subresource_put_checks_resource_version(fake: FakeKubernetes, http: httpx.Client,
                                                       web: dict[str, Any]) -> None:
    scale = http.get(f"{DEPLOYMENTS}/web/scale").json()
    assert (scale["kind"], scale["spec"], scale["status"]) == \
        ("Scale", {"replicas": 3}, {"replicas": 3, "selector": "app=web"})
    scale["spec"]["replicas"] = 4
    assert http.put(f"{DEPLOYMENTS}/web/scale", json=scale).json()["spec"]["replicas"] == 4
    conflict = http.put(f"{DEPLOYMENTS}/web/scale", json=scale)  # the resourceVersion is stale now
    assert conflict.status_code == 409
    assert fake.get("deployments", "prod", "web")["spec"]["replicas"] == 4


def test_unknown_paths_and_watch_are_status_errors(http: httpx.Client) -> None:
    assert http.get("/apis/batch/v1/namespaces/prod/jobs").json()["reason"] == "NotFound"
    watch = http.get("/api/v1/namespaces/prod/pods", params={"watch": "true"})
    assert watch.status_code == 405 and watch.json()["kind"] == "Status"
    assert http.get("/api/v1/namespaces/prod/pods", params={"dryRun": "Some"}).status_code == 400


# -- fidelity: kubectl against the same fake ----------------------------------------------------

@dataclass
class Kubectl:
    binary: str
    fake: FakeKubernetes
    config: Path
    home: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(self.home), "TZ": "UTC",
               "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        return subprocess.run([self.binary, "--kubeconfig", str(self.config), "--cache-dir", str(self.home / "cache"),
                               *args], capture_output=True, text=True, env=env, timeout=60)

    def __call__(self, *args: str) -> str:
        done = self.run(*args)
        assert done.returncode == 0, f"kubectl {' '.join(args)} failed: {done.stderr}"
        return done.stdout


@pytest.fixture
def kubectl(tmp_path: Path) -> Iterator[Kubectl]:
    """The machine's kubectl against an HTTPS fake (client-go's clientcmd sends no credentials
    to an http:// server, so the token would never arrive)."""
    binary = shutil.which("kubectl")
    if binary is None:
        message = "kubectl is not on PATH: the fidelity check compares our client with kubectl"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    with FakeKubernetes(tls=True) as server:
        yield Kubectl(binary, server, server.kubeconfig(tmp_path / "kubeconfig"), tmp_path)


def _comparable(value: Any) -> Any:
    """Go serialises unset fields as null / {} (creationTimestamp, resources): drop them."""
    if isinstance(value, dict):
        pruned = {k: _comparable(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value


def test_kubectl_and_our_client_send_the_same_requests(kubectl: Kubectl) -> None:
    fake: FakeKubernetes = kubectl.fake
    for namespace in ("by-kubectl", "by-client"):
        fake.add_deployment(namespace, "web", image="registry/web:1.0", replicas=3,
                            annotations={"kubernetes.io/change-cause": "deploy 1.0", "team": "payments"})
        fake.set_image(namespace, "web", "registry/web:1.1", annotations={"kubernetes.io/change-cause": "deploy 1.1"})
        fake.add_pod(namespace, "web-logs", containers=["web"], logs="one\ntwo\nthree\n", previous_logs="crash\n",
                     restarts=1)
        fake.add_event(namespace, "Pod", "web-logs", reason="BackOff", message="Back-off", type="Warning",
                       last_seen=NOW + timedelta(minutes=2))
        fake.add_event(namespace, "Pod", "web-logs", reason="Started", message="Started", last_seen=NOW)
    fake.add_node("node-a")
    fake.add_node("node-b")
    kube = KubernetesClient.from_environment(str(kubectl.config))

    def last_request(method: str, path: str) -> Any:
        return fake.requests_for(method, path)[-1]

    def deployments(namespace: str) -> str:
        return f"/apis/apps/v1/namespaces/{namespace}/deployments/web"

    # get pods -o json == list_pods
    listed = json.loads(kubectl("get", "pods", "-n", "by-kubectl", "-l", "app=web", "-o", "json"))
    assert sorted(item["metadata"]["name"] for item in listed["items"]) == \
        [pod.name for pod in kube.list_pods("by-kubectl", "app=web")]
    assert last_request("GET", "/api/v1/namespaces/by-kubectl/pods").query == \
        {"labelSelector": "app=web", "limit": "500"}

    # rollout restart: the same strategic merge patch, field manager and resulting revision
    assert "deployment.apps/web restarted" in kubectl("rollout", "restart", "deployment/web", "-n", "by-kubectl")
    kube.rollout_restart("by-client", "web")
    theirs, ours = last_request("PATCH", deployments("by-kubectl")), last_request("PATCH", deployments("by-client"))
    assert (theirs.content_type, theirs.query) == (ours.content_type, ours.query) == (
        "application/strategic-merge-patch+json", {"fieldManager": "kubectl-rollout"})
    stamp = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)$")
    for body in (theirs.body, ours.body):
        assert list(body["spec"]["template"]["metadata"]["annotations"]) == [RESTARTED_AT]
        assert stamp.match(body["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT])
    assert revisions(fake, "by-kubectl").values() and \
        sorted(revisions(fake, "by-kubectl").values()) == sorted(revisions(fake, "by-client").values())

    # rollout undo: the same JSON patch (ops, template, annotations) and the same end state
    assert "rolled back" in kubectl("rollout", "undo", "deployment/web", "-n", "by-kubectl")
    assert kube.rollout_undo("by-client", "web").revision == 2
    theirs, ours = last_request("PATCH", deployments("by-kubectl")), last_request("PATCH", deployments("by-client"))
    assert theirs.content_type == ours.content_type == "application/json-patch+json"
    assert theirs.query == ours.query == {}
    assert _comparable(theirs.body) == _comparable(ours.body)
    assert ours.body[1]["value"] == {"kubernetes.io/change-cause": "deploy 1.1", "team": "payments", REVISION: "3"}
    assert _comparable(template(fake, "by-kubectl")) == _comparable(template(fake, "by-client"))
    assert sorted(revisions(fake, "by-kubectl").values()) == sorted(revisions(fake, "by-client").values()) == [
        ("1", None), ("3", None), ("4", "2")]
    # ...and to an explicit revision
    kubectl("rollout", "undo", "deployment/web", "-n", "by-kubectl", "--to-revision=1")
    kube.rollout_undo("by-client", "web", to_revision=1)
    theirs, ours = last_request("PATCH", deployments("by-kubectl")), last_request("PATCH", deployments("by-client"))
    assert _comparable(theirs.body) == _comparable(ours.body)
    assert template(fake, "by-kubectl")["spec"]["containers"][0]["image"] == "registry/web:1.0"

    # scale: a merge patch on the scale subresource, no new revision
    before = revisions(fake, "by-kubectl")
    assert "scaled" in kubectl("scale", "deployment/web", "--replicas=5", "-n", "by-kubectl")
    kube.scale("by-client", "web", 5)
    theirs = last_request("PATCH", deployments("by-kubectl") + "/scale")
    ours = last_request("PATCH", deployments("by-client") + "/scale")
    assert (theirs.content_type, theirs.body, theirs.query) == (ours.content_type, ours.body, ours.query) == (
        "application/merge-patch+json", {"spec": {"replicas": 5}}, {})
    assert revisions(fake, "by-kubectl") == before
    assert fake.get("deployments", "by-kubectl", "web")["spec"]["replicas"] == 5
    assert len(kube.list_pods("by-kubectl", "app=web")) == len(kube.list_pods("by-client", "app=web")) == 5

    # logs, including the previous container and a tail
    assert kubectl("logs", "web-logs", "-n", "by-kubectl") == kube.pod_logs("by-kubectl", "web-logs") == \
        "one\ntwo\nthree\n"
    assert kubectl("logs", "web-logs", "-n", "by-kubectl", "--previous", "--tail=1") == \
        kube.pod_logs("by-kubectl", "web-logs", previous=True, tail_lines=1) == "crash\n"
    assert last_request("GET", "/api/v1/namespaces/by-kubectl/pods/web-logs/log").query["previous"] == "true"

    # events: the same objects through the same field selector
    selector = "involvedObject.kind=Pod,involvedObject.name=web-logs"
    events = json.loads(kubectl("get", "events", "-n", "by-kubectl", "--field-selector", selector, "-o", "json"))
    assert last_request("GET", "/api/v1/namespaces/by-kubectl/events").query["fieldSelector"] == selector
    ours_events = kube.events("by-kubectl", kind="Pod", name="web-logs")
    assert [e.reason for e in ours_events] == ["BackOff", "Started"]
    assert fake.requests[-1].query["fieldSelector"] == selector
    assert sorted(item["reason"] for item in events["items"]) == sorted(e.reason for e in ours_events)

    # cordon / uncordon: the same node patches
    assert "cordoned" in kubectl("cordon", "node-a")
    kube.cordon("node-b")
    theirs, ours = last_request("PATCH", "/api/v1/nodes/node-a"), last_request("PATCH", "/api/v1/nodes/node-b")
    assert (theirs.content_type, theirs.body) == (ours.content_type, ours.body)
    assert "uncordoned" in kubectl("uncordon", "node-a")
    kube.uncordon("node-b")
    theirs, ours = last_request("PATCH", "/api/v1/nodes/node-a"), last_request("PATCH", "/api/v1/nodes/node-b")
    assert (theirs.content_type, theirs.body) == (ours.content_type, ours.body) == (
        "application/strategic-merge-patch+json", {"spec": {"unschedulable": None}})
    kube.close()


def test_kubectl_sees_status_errors_from_the_fake(kubectl: Kubectl) -> None:
    kubectl.fake.add_deployment("prod", "web")
    kubectl.fake.forbid("patch", "deployments/scale", "prod")
    forbidden = kubectl.run("scale", "deployment/web", "--replicas=2", "-n", "prod")
    assert forbidden.returncode != 0
    assert 'cannot patch resource "deployments/scale" in API group "apps"' in forbidden.stderr
    assert kubectl.fake.get("deployments", "prod", "web")["spec"]["replicas"] == 3
    missing = kubectl.run("get", "deployment", "nope", "-n", "prod")
    assert missing.returncode != 0 and 'deployments.apps "nope" not found' in missing.stderr
