"""Kubernetes: a small typed client over the official `kubernetes` client (37.x).

Knows nothing of incidents. Diagnostics read pods, logs, events and deployments; remediations
do what kubectl does for `rollout restart`, `rollout undo`, `scale`, `delete pod`, `cordon` and
`uncordon` (same requests, same refusals; platform.md §3.3), each optionally as a server-side
dry run (dryRun=All: validated by the API server, persisted nowhere).

Synchronous, like the library: call it through `asyncio.to_thread`. Every failure leaves this
module as `KubernetesError` (or a subclass); library exceptions never do.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal

import pydantic
import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException, OpenApiException
from kubernetes.config.config_exception import ConfigException
from pydantic import BaseModel, ConfigDict

from integrations.errors import IntegrationError

__all__ = [
    "KubernetesClient",
    "KubernetesError", "BadRequestError", "UnauthorizedError", "ForbiddenError", "NotFoundError",
    "ConflictError", "InvalidError", "RolloutRefusedError", "ConfigurationError",
    "PodSummary", "EventSummary", "DeploymentCondition", "ReplicaSetRevision", "DeploymentStatus",
    "RemediationResult", "RemediationAction", "RolloutStatus",
]

REVISION = "deployment.kubernetes.io/revision"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
_HASH_LABEL = "pod-template-hash"
# kubectl rollout undo keeps these from the Deployment and copies every other annotation from the
# ReplicaSet (kubectl pkg/polymorphichelpers/rollback.go, annotationsToSkip).
_KEPT_ON_UNDO = frozenset({
    "kubectl.kubernetes.io/last-applied-configuration", REVISION, "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas", "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
})
_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
            409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType", 422: "Invalid", 429: "TooManyRequests",
            500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}
_SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
_LIST_CHUNK = 500


# -- errors -----------------------------------------------------------------------------------

class KubernetesError(IntegrationError):
    """A failed Kubernetes operation. `status` is the HTTP status and `reason` the API's
    `Status.reason` (NotFound, Forbidden, Invalid, ...), `message` its message. Status 0 means no
    usable response: reason ConnectionError (retryable), ValidationError (a response missing
    required fields), ClientError or ConfigurationError."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if status else f"{reason}: {message}")
        self.status, self.reason, self.message = status, reason, message
        # the same request may succeed later: no response, throttled, server trouble
        self.retryable = (status, reason) == (0, "ConnectionError") or status in (429, 500, 502, 503, 504)


class BadRequestError(KubernetesError):
    """400: the request itself is wrong (unknown field selector, several containers and none named)."""


class UnauthorizedError(KubernetesError):
    """401: the credentials were not accepted."""


class ForbiddenError(KubernetesError):
    """403: RBAC does not allow the verb on the resource."""


class NotFoundError(KubernetesError):
    """404: the object (or the namespace) does not exist."""


class ConflictError(KubernetesError):
    """409: the object changed underneath us; re-read and retry."""


class InvalidError(KubernetesError):
    """422: the API server rejected the resulting object (validation, unappliable patch)."""


class RolloutRefusedError(KubernetesError):
    """Refused before sending anything, as kubectl refuses: paused deployment (409 DeploymentPaused),
    restart already triggered this second (409 AlreadyRestarted), no such revision (404
    RevisionNotFound) or no previous revision (404 NoRolloutHistory)."""


class ConfigurationError(KubernetesError):
    """No usable kubeconfig or in-cluster service account (status 0)."""


_BY_STATUS: dict[int, type[KubernetesError]] = {400: BadRequestError, 401: UnauthorizedError, 403: ForbiddenError,
                                                404: NotFoundError, 409: ConflictError, 422: InvalidError}


def _from_api_exception(exc: ApiException) -> KubernetesError:
    status = int(exc.status or 0)
    reason, message = _REASONS.get(status, str(exc.reason or "Error")), str(exc.reason or "")
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status":
        reason = body.get("reason") or reason
        message = body.get("message") or message
    elif exc.body:
        message = str(exc.body).strip()[:500]
    if status == 0:
        reason = "ClientError"
    return _BY_STATUS.get(status, KubernetesError)(status, reason, message)


@contextmanager
def _converted(what: str) -> Iterator[None]:
    """The boundary: library, transport and decoding failures become KubernetesError."""
    try:
        yield
    except ApiException as exc:
        raise _from_api_exception(exc) from exc
    except urllib3.exceptions.HTTPError as exc:
        raise KubernetesError(0, "ConnectionError", f"{what}: {exc}") from exc
    except pydantic.ValidationError as exc:  # a response missing required fields, or a bad argument
        raise KubernetesError(0, "ValidationError", f"{what}: {exc}") from exc
    except OpenApiException as exc:
        raise KubernetesError(0, "ClientError", f"{what}: {exc}") from exc


# -- models -----------------------------------------------------------------------------------

class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PodSummary(_Model):
    name: str
    phase: str                       # Pending, Running, Succeeded, Failed, Unknown
    ready: str                       # "1/2": ready containers / containers, as kubectl shows it
    restarts: int                    # sum over the containers
    age_seconds: int
    node: str | None = None
    reason: str | None = None        # why it is not running normally: CrashLoopBackOff, OOMKilled, Terminating, ...


class EventSummary(_Model):
    type: str                        # Normal or Warning
    reason: str
    object: str                      # "Pod/web-1"
    message: str
    count: int
    last_seen: datetime | None = None


class DeploymentCondition(_Model):
    type: str
    status: str
    reason: str | None = None
    message: str | None = None


class ReplicaSetRevision(_Model):
    name: str
    revision: int
    replicas: int                    # pods it has now (status.replicas)
    images: list[str]


class DeploymentStatus(_Model):
    namespace: str
    name: str
    desired_replicas: int
    ready_replicas: int
    updated_replicas: int
    available_replicas: int
    revision: int
    paused: bool
    images: list[str]                # of the current pod template
    conditions: list[DeploymentCondition]
    replica_sets: list[ReplicaSetRevision]  # controlled by the deployment, newest revision first

    @property
    def rolled_out(self) -> bool:
        return self.updated_replicas == self.desired_replicas == self.available_replicas


class RolloutStatus(_Model):
    """One look at a Deployment's rollout, judged as `kubectl rollout status` does."""

    done: bool                       # every replica updated and available
    failed: bool                     # the controller gave up: ProgressDeadlineExceeded
    message: str                     # kubectl's line ("Waiting for deployment ... 1 of 3 updated replicas ...")
    progress_deadline_seconds: int   # spec.progressDeadlineSeconds (600 when unset, the API default)
    updated_replicas: int
    available_replicas: int
    desired_replicas: int


RemediationAction = Literal["rollout_restart", "rollout_undo", "scale", "delete_pod", "cordon", "uncordon"]


class RemediationResult(_Model):
    action: RemediationAction
    kind: Literal["Deployment", "Pod", "Node"]
    namespace: str | None            # None for nodes
    name: str
    dry_run: bool
    changed: bool                    # False when nothing needed doing (already cordoned, template already matches)
    summary: str                     # one line, kubectl-like
    restarted_at: str | None = None  # rollout_restart: the restartedAt annotation value
    revision: int | None = None      # rollout_undo: the revision whose template was restored
    previous_replicas: int | None = None  # scale
    replicas: int | None = None           # scale: the new desired count


# -- helpers ----------------------------------------------------------------------------------

def _rfc3339(moment: datetime) -> str:
    """Go's time.RFC3339 at second precision, as kubectl writes restartedAt."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    text = moment.replace(microsecond=0).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _selector_string(selector: k8s.V1LabelSelector | None) -> str:
    """A LabelSelector as apimachinery renders it (requirements sorted by key)."""
    if selector is None:
        return ""
    parts = [(key, f"{key}={value}") for key, value in (selector.match_labels or {}).items()]
    for expr in selector.match_expressions or []:
        values = ",".join(sorted(expr.values or []))
        rendered = {"In": f"{expr.key} in ({values})", "NotIn": f"{expr.key} notin ({values})",
                    "Exists": expr.key, "DoesNotExist": f"!{expr.key}"}.get(expr.operator)
        if rendered is None:
            raise KubernetesError(0, "ClientError", f"unsupported selector operator {expr.operator!r}")
        parts.append((expr.key, rendered))
    return ",".join(rendered for _, rendered in sorted(parts))


def _escape_field_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


def _prune(value: Any) -> Any:
    """Drop nulls and empty maps/lists: Go's semantic equality treats them as unset."""
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def _revision(meta: k8s.V1ObjectMeta | None) -> int | None:
    """deploymentutil.Revision: a missing annotation is 0, an unparsable one is skipped (None)."""
    value = ((meta.annotations if meta else None) or {}).get(REVISION)
    if value is None:
        return 0
    try:
        return int(value)
    except ValueError:
        return None


def _controlled_by(meta: k8s.V1ObjectMeta | None, uid: str | None) -> bool:
    return meta is not None and bool(uid) and any(ref.controller and ref.uid == uid
                                                  for ref in meta.owner_references or [])


def _meta(obj: k8s.V1Deployment | k8s.V1ReplicaSet) -> k8s.V1ObjectMeta:
    """The metadata of an object read from the API server, which always sets it."""
    assert obj.metadata is not None, "the API server returns stored objects with their metadata"
    return obj.metadata


def _images(template: k8s.V1PodTemplateSpec | None) -> list[str]:
    return [c.image or "" for c in template.spec.containers] if template and template.spec else []


def _pod_reason(pod: k8s.V1Pod) -> str | None:
    if pod.metadata and pod.metadata.deletion_timestamp:
        return "Terminating"
    status = pod.status
    for container in (status.container_statuses or []) if status else []:
        state = container.state
        if state and state.waiting and state.waiting.reason:
            return state.waiting.reason
        if state and state.terminated and state.terminated.reason:
            return state.terminated.reason
    return status.reason if status else None


# -- the client -------------------------------------------------------------------------------

class KubernetesClient:
    """Typed diagnostics and remediations over one `kubernetes.client.ApiClient`."""

    def __init__(self, api_client: k8s.ApiClient, *, timeout: float = 30.0,
                 clock: Callable[[], datetime] | None = None) -> None:
        self._api_client = api_client
        self._core = k8s.CoreV1Api(api_client)
        self._apps = k8s.AppsV1Api(api_client)
        self._timeout = timeout
        self._clock = clock or (lambda: datetime.now(UTC))

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None, context: str | None = None) -> KubernetesClient:
        """An explicit `kubeconfig` file wins; otherwise the pod's service account when
        KUBERNETES_SERVICE_HOST is set, else $KUBECONFIG (':'-separated) or ~/.kube/config.
        Never touches the library's global default Configuration."""
        configuration = k8s.Configuration()
        in_cluster = kubeconfig is None and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        path = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        try:
            if in_cluster:
                k8s_config.load_incluster_config(client_configuration=configuration)
            else:
                k8s_config.load_kube_config(config_file=path, context=context,
                                            client_configuration=configuration, persist_config=False)
        except (ConfigException, OSError, ValueError) as exc:
            source = "the in-cluster service account" if in_cluster else f"kubeconfig {path}"
            raise ConfigurationError(0, "ConfigurationError", f"cannot load {source}: {exc}") from exc
        return cls(k8s.ApiClient(configuration))

    def close(self) -> None:
        self._api_client.close()

    def __enter__(self) -> KubernetesClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- diagnostics --

    def list_pods(self, namespace: str, selector: str) -> list[PodSummary]:
        """Pods matching a label selector (`app=web`), sorted by name."""
        now = self._clock()
        pods = self._list_all(f"list pods {selector!r} in {namespace}", self._core.list_namespaced_pod,
                              namespace, label_selector=selector or None)
        summaries = []
        for pod in pods:
            spec_containers = pod.spec.containers if pod.spec else []
            statuses = (pod.status.container_statuses if pod.status else None) or []
            created = pod.metadata.creation_timestamp if pod.metadata else None
            summaries.append(PodSummary(
                name=pod.metadata.name, phase=(pod.status.phase if pod.status else None) or "Unknown",
                ready=f"{sum(1 for s in statuses if s.ready)}/{len(spec_containers)}",
                restarts=sum(s.restart_count for s in statuses),
                age_seconds=max(0, int((now - created).total_seconds())) if created else 0,
                node=pod.spec.node_name if pod.spec else None, reason=_pod_reason(pod)))
        return sorted(summaries, key=lambda pod: pod.name)

    def pod_logs(self, namespace: str, pod: str, *, tail_lines: int = 100, container: str | None = None,
                 previous: bool = False) -> str:
        """The last `tail_lines` lines; `previous` reads the last terminated instance of the container."""
        with _converted(f"read logs of pod {namespace}/{pod}"):
            text = self._core.read_namespaced_pod_log(pod, namespace, container=container, tail_lines=tail_lines,
                                                      previous=previous or None, _request_timeout=self._timeout)
        return text if isinstance(text, str) else str(text)

    def events(self, namespace: str, *, kind: str | None = None, name: str | None = None,
               limit: int = 20) -> list[EventSummary]:
        """Events in a namespace, optionally about one object, newest first."""
        fields = [f"involvedObject.{key}={_escape_field_value(value)}"
                  for key, value in (("kind", kind), ("name", name)) if value]
        events = self._list_all(f"list events in {namespace}", self._core.list_namespaced_event, namespace,
                                field_selector=",".join(fields) or None)
        summaries = []
        for event in events:
            involved = event.involved_object
            last_seen = event.last_timestamp or event.event_time or event.first_timestamp or \
                (event.metadata.creation_timestamp if event.metadata else None)
            count = event.count or (event.series.count if event.series else None) or 1
            summaries.append(EventSummary(type=event.type or "Normal", reason=event.reason or "",
                                          object=f"{involved.kind or ''}/{involved.name or ''}",
                                          message=(event.message or "").strip(), count=count, last_seen=last_seen))
        oldest = datetime.min.replace(tzinfo=UTC)
        summaries.sort(key=lambda e: e.last_seen or oldest, reverse=True)
        return summaries[:limit]

    def deployment_status(self, namespace: str, name: str) -> DeploymentStatus:
        dep = self._read_deployment(namespace, name)
        replica_sets = [ReplicaSetRevision(name=_meta(rs).name, revision=_revision(rs.metadata) or 0,
                                           replicas=rs.status.replicas if rs.status else 0,
                                           images=_images(rs.spec.template))
                        for rs in self._owned_replica_sets(dep)]
        status, spec = dep.status or k8s.V1DeploymentStatus(), dep.spec
        return DeploymentStatus(
            namespace=namespace, name=name,
            desired_replicas=spec.replicas if spec.replicas is not None else 1,
            ready_replicas=status.ready_replicas or 0, updated_replicas=status.updated_replicas or 0,
            available_replicas=status.available_replicas or 0, revision=_revision(dep.metadata) or 0,
            paused=bool(spec.paused), images=_images(spec.template),
            conditions=[DeploymentCondition(type=c.type, status=c.status, reason=c.reason, message=c.message)
                        for c in status.conditions or []],
            replica_sets=sorted(replica_sets, key=lambda rs: rs.revision, reverse=True))

    def rollout_status(self, namespace: str, name: str) -> RolloutStatus:
        """Where the Deployment's rollout stands: kubectl's DeploymentStatusViewer, line for line
        (kubectl pkg/polymorphichelpers/rollout_status.go), read once; the caller polls."""
        dep = self._read_deployment(namespace, name)
        status, spec = dep.status or k8s.V1DeploymentStatus(), dep.spec
        desired = spec.replicas if spec.replicas is not None else 1
        updated, available = status.updated_replicas or 0, status.available_replicas or 0
        facts = {"progress_deadline_seconds": spec.progress_deadline_seconds or 600, "updated_replicas": updated,
                 "available_replicas": available, "desired_replicas": desired}
        waiting = f'Waiting for deployment "{name}" rollout to finish: '
        if (_meta(dep).generation or 0) > (status.observed_generation or 0):
            return RolloutStatus(done=False, failed=False, message="Waiting for deployment spec update to be observed",
                                 **facts)
        progressing = next((c for c in status.conditions or [] if c.type == "Progressing"), None)
        if progressing is not None and progressing.reason == "ProgressDeadlineExceeded":
            return RolloutStatus(done=False, failed=True, message=f'deployment "{name}" exceeded its progress deadline'
                                 + (f": {progressing.message}" if progressing.message else ""), **facts)
        if updated < desired:
            message = f"{waiting}{updated} out of {desired} new replicas have been updated"
        elif (status.replicas or 0) > updated:
            message = f"{waiting}{(status.replicas or 0) - updated} old replicas are pending termination"
        elif available < updated:
            message = f"{waiting}{available} of {updated} updated replicas are available"
        else:
            return RolloutStatus(done=True, failed=False, message=f'deployment "{name}" successfully rolled out',
                                 **facts)
        return RolloutStatus(done=False, failed=False, message=message, **facts)

    def observe(self, kind: Literal["Deployment", "Pod", "Node"], namespace: str | None,
                name: str) -> dict[str, Any]:
        """The facts a remediation of `kind` changes, read without changing anything (JSON-ready):
        a Deployment's generation, restartedAt, replicas and revision; a Pod's uid and whether it
        is terminating; a Node's unschedulable flag. `exists` is False when it is gone (404)."""
        try:
            if kind == "Node":
                with _converted(f"read node {name}"):
                    node = self._core.read_node(name, _request_timeout=self._timeout)
                return {"exists": True, "unschedulable": bool(node.spec and node.spec.unschedulable)}
            assert namespace is not None, f"a {kind} is namespaced"
            if kind == "Pod":
                with _converted(f"read pod {namespace}/{name}"):
                    pod = self._core.read_namespaced_pod(name, namespace, _request_timeout=self._timeout)
                meta = pod.metadata or k8s.V1ObjectMeta()
                return {"exists": True, "uid": meta.uid, "terminating": meta.deletion_timestamp is not None}
            dep = self._read_deployment(namespace, name)
            template = (dep.spec.template.metadata.annotations if dep.spec.template.metadata else None) or {}
            return {"exists": True, "generation": _meta(dep).generation, "restarted_at": template.get(RESTARTED_AT),
                    "replicas": dep.spec.replicas if dep.spec.replicas is not None else 1,
                    "revision": _revision(dep.metadata)}
        except NotFoundError:
            return {"exists": False}

    # -- remediations --

    def rollout_restart(self, namespace: str, name: str, *, dry_run: bool = False,
                        now: datetime | None = None) -> RemediationResult:
        """`kubectl rollout restart`: stamp the pod template with restartedAt (strategic merge patch)."""
        dep = self._read_deployment(namespace, name)
        if dep.spec.paused:
            raise RolloutRefusedError(409, "DeploymentPaused",
                                      "can't restart paused deployment (run rollout resume first)")
        stamp = _rfc3339(now or self._clock())
        current = ((dep.spec.template.metadata.annotations if dep.spec.template.metadata else None) or {})
        if current.get(RESTARTED_AT) == stamp:
            raise RolloutRefusedError(409, "AlreadyRestarted", f"failed to create patch for deployment.apps/{name}: if "
                                      "restart has already been triggered within the past second, please wait before "
                                      "attempting to trigger another")
        patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
        with _converted(f"restart deployment {namespace}/{name}"):
            self._apps.patch_namespaced_deployment(name, namespace, patch, field_manager="kubectl-rollout",
                                                   dry_run="All" if dry_run else None, _request_timeout=self._timeout)
        return RemediationResult(action="rollout_restart", kind="Deployment", namespace=namespace, name=name,
                                 dry_run=dry_run, changed=True, restarted_at=stamp,
                                 summary=f"deployment.apps/{name} in {namespace} restarted{self._suffix(dry_run)}")

    def rollout_undo(self, namespace: str, name: str, *, to_revision: int = 0,
                     dry_run: bool = False) -> RemediationResult:
        """`kubectl rollout undo [--to-revision=N]`: restore the template of the previous (or the
        given) revision's ReplicaSet with a JSON patch (kubectl's DeploymentRollbacker)."""
        if to_revision < 0:
            raise RolloutRefusedError(404, "RevisionNotFound",
                                      f"unable to find specified revision {to_revision} in history")
        dep = self._read_deployment(namespace, name)
        target, revision = self._revision_to_restore(dep, to_revision)
        if dep.spec.paused:
            raise RolloutRefusedError(409, "DeploymentPaused", "you cannot rollback a paused deployment; resume it "
                                      "first with 'kubectl rollout resume' and try again")
        serialize = self._api_client.sanitize_for_serialization
        template = serialize(target.spec.template)
        labels = (template.get("metadata") or {}).get("labels") or {}
        labels.pop(_HASH_LABEL, None)
        if _prune(template) == _prune(serialize(dep.spec.template)):
            return RemediationResult(
                action="rollout_undo", kind="Deployment", namespace=namespace, name=name, dry_run=dry_run,
                changed=False, revision=revision,
                summary=f"deployment.apps/{name} in {namespace} skipped rollback "
                        f"(current template already matches revision {revision})")
        current = (dep.metadata.annotations if dep.metadata else None) or {}
        annotations = {key: value for key, value in current.items() if key in _KEPT_ON_UNDO}
        annotations.update({key: value for key, value in ((_meta(target).annotations or {}).items())
                            if key not in _KEPT_ON_UNDO})
        patch = [{"op": "replace", "path": "/spec/template", "value": template},
                 {"op": "replace", "path": "/metadata/annotations", "value": annotations}]
        with _converted(f"roll back deployment {namespace}/{name} to revision {revision}"):
            self._apps.patch_namespaced_deployment(name, namespace, patch, dry_run="All" if dry_run else None,
                                                   _request_timeout=self._timeout)
        return RemediationResult(action="rollout_undo", kind="Deployment", namespace=namespace, name=name,
                                 dry_run=dry_run, changed=True, revision=revision,
                                 summary=f"deployment.apps/{name} in {namespace} rolled back to revision "
                                         f"{revision}{self._suffix(dry_run)}")

    def scale(self, namespace: str, name: str, replicas: int, *, dry_run: bool = False) -> RemediationResult:
        """`kubectl scale --replicas=N`: a merge patch on the scale subresource."""
        with _converted(f"read scale of deployment {namespace}/{name}"):
            before = self._apps.read_namespaced_deployment_scale(name, namespace, _request_timeout=self._timeout)
        previous = before.spec.replicas if before.spec and before.spec.replicas is not None else 0
        with _converted(f"scale deployment {namespace}/{name} to {replicas}"):
            self._apps.patch_namespaced_deployment_scale(
                name, namespace, {"spec": {"replicas": replicas}}, dry_run="All" if dry_run else None,
                _content_type="application/merge-patch+json", _request_timeout=self._timeout)
        return RemediationResult(action="scale", kind="Deployment", namespace=namespace, name=name, dry_run=dry_run,
                                 changed=previous != replicas, previous_replicas=previous, replicas=replicas,
                                 summary=f"deployment.apps/{name} in {namespace} scaled from {previous} to "
                                         f"{replicas} replicas{self._suffix(dry_run)}")

    def delete_pod(self, namespace: str, name: str, *, grace_period_seconds: int = 30,
                   dry_run: bool = False) -> RemediationResult:
        with _converted(f"delete pod {namespace}/{name}"):
            self._core.delete_namespaced_pod(name, namespace, grace_period_seconds=grace_period_seconds,
                                             dry_run="All" if dry_run else None, _request_timeout=self._timeout)
        return RemediationResult(action="delete_pod", kind="Pod", namespace=namespace, name=name, dry_run=dry_run,
                                 changed=True, summary=f"pod/{name} in {namespace} deleted (grace period "
                                                       f"{grace_period_seconds}s){self._suffix(dry_run)}")

    def cordon(self, node: str, *, dry_run: bool = False) -> RemediationResult:
        """`kubectl cordon`: mark the node unschedulable (a no-op when it already is)."""
        return self._set_unschedulable(node, True, dry_run)

    def uncordon(self, node: str, *, dry_run: bool = False) -> RemediationResult:
        return self._set_unschedulable(node, False, dry_run)

    # -- internals --

    @staticmethod
    def _suffix(dry_run: bool) -> str:
        return " (server dry run)" if dry_run else ""

    def _list_all(self, what: str, method: Callable[..., Any], namespace: str, **selectors: Any) -> list[Any]:
        """Every item of a list call, following `continue` tokens as kubectl does."""
        items: list[Any] = []
        token: str | None = None
        with _converted(what):
            while True:
                page = method(namespace, limit=_LIST_CHUNK, _continue=token, _request_timeout=self._timeout,
                              **selectors)
                items.extend(page.items)
                token = page.metadata.var_continue if page.metadata else None
                if not token:
                    return items

    def _read_deployment(self, namespace: str, name: str) -> k8s.V1Deployment:
        with _converted(f"read deployment {namespace}/{name}"):
            return self._apps.read_namespaced_deployment(name, namespace, _request_timeout=self._timeout)

    def _owned_replica_sets(self, dep: k8s.V1Deployment) -> list[k8s.V1ReplicaSet]:
        meta = _meta(dep)
        namespace = meta.namespace
        assert namespace is not None, "a Deployment is namespaced"
        replica_sets = self._list_all(f"list replica sets of deployment {namespace}/{meta.name}",
                                      self._apps.list_namespaced_replica_set, namespace,
                                      label_selector=_selector_string(dep.spec.selector) or None)
        return [rs for rs in replica_sets if _controlled_by(rs.metadata, meta.uid)]

    def _revision_to_restore(self, dep: k8s.V1Deployment, to_revision: int) -> tuple[k8s.V1ReplicaSet, int]:
        """kubectl's deploymentRevision(): the exact revision, or the second-highest when 0."""
        latest: tuple[k8s.V1ReplicaSet, int] | None = None
        previous: tuple[k8s.V1ReplicaSet, int] | None = None
        for rs in self._owned_replica_sets(dep):
            revision = _revision(rs.metadata)
            if revision is None:
                continue
            if to_revision == 0:
                if latest is None or latest[1] < revision:
                    previous, latest = latest, (rs, revision)
                elif previous is None or previous[1] < revision:
                    previous = (rs, revision)
            elif revision == to_revision:
                return rs, revision
        if to_revision > 0:
            raise RolloutRefusedError(404, "RevisionNotFound",
                                      f"unable to find specified revision {to_revision} in history")
        if previous is None:
            raise RolloutRefusedError(404, "NoRolloutHistory",
                                      f'no rollout history found for deployment "{_meta(dep).name}"')
        return previous

    def _set_unschedulable(self, node: str, unschedulable: bool, dry_run: bool) -> RemediationResult:
        action: RemediationAction = "cordon" if unschedulable else "uncordon"
        with _converted(f"read node {node}"):
            current = self._core.read_node(node, _request_timeout=self._timeout)
        if bool(current.spec and current.spec.unschedulable) == unschedulable:
            return RemediationResult(action=action, kind="Node", namespace=None, name=node, dry_run=dry_run,
                                     changed=False, summary=f"node/{node} already {action}ed")
        # kubectl's two-way merge patch: setting false drops the omitempty field, i.e. null
        patch = {"spec": {"unschedulable": True if unschedulable else None}}
        with _converted(f"{action} node {node}"):
            self._core.patch_node(node, patch, dry_run="All" if dry_run else None, _request_timeout=self._timeout)
        return RemediationResult(action=action, kind="Node", namespace=None, name=node, dry_run=dry_run, changed=True,
                                 summary=f"node/{node} {action}ed{self._suffix(dry_run)}")
