"""The in-memory half of the Kubernetes fake: objects, patch semantics, selectors and the
deployment controller (platform.md §3.4-§3.7). No HTTP here; tests/fakes/kubernetes.py serves it.

Objects are kept as wire JSON (camelCase dicts), exactly what the API server would return.
Every public method takes the store lock, so the HTTP threads and the test thread can share it.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

__all__ = ["ApiError", "KubernetesStore", "REVISION", "REVISION_HISTORY", "RESTARTED_AT",
           "apply_patch", "parse_label_selector", "selector_string"]

Obj = dict[str, Any]

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
HASH_LABEL = "pod-template-hash"
# Deployment annotations the controller does not copy onto its ReplicaSets (and that
# `kubectl rollout undo` keeps from the Deployment).
_NOT_COPIED = {"kubectl.kubernetes.io/last-applied-configuration", REVISION, REVISION_HISTORY,
               DESIRED_REPLICAS, MAX_REPLICAS, "deprecated.deployment.rollback.to"}
_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery/pkg/util/rand.SafeEncodeString

STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
PATCH_TYPES = (JSON_PATCH, MERGE, "application/apply-patch+yaml", STRATEGIC)


class ApiError(Exception):
    """An API failure, rendered by the server as a `Status` object (platform.md §3.6)."""

    def __init__(self, code: int, reason: str, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.details = dict(details or {})

    def status(self) -> Obj:
        body: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                     "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            body["details"] = self.details
        return body

    @classmethod
    def not_found(cls, resource: str, name: str, group: str = "") -> ApiError:
        qualified = f"{resource}.{group}" if group else resource
        return cls(404, "NotFound", f'{qualified} "{name}" not found', _details(name, resource, group))

    @classmethod
    def invalid(cls, kind: str, name: str, group: str, causes: list[tuple[str, str]]) -> ApiError:
        qualified = f"{kind}.{group}" if group else kind
        text = "; ".join(f"{field}: {msg}" for field, msg in causes)
        details = {**_details(name, kind, group),
                   "causes": [{"reason": "FieldValueInvalid", "message": msg, "field": field} for field, msg in causes]}
        return cls(422, "Invalid", f'{qualified} "{name}" is invalid: {text}', details)

    @classmethod
    def bad_request(cls, message: str) -> ApiError:
        return cls(400, "BadRequest", message)


def _details(name: str, kind: str, group: str) -> Obj:
    details: Obj = {"name": name, "kind": kind}
    if group:
        details["group"] = group
    return details


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _safe_encode(seed: str, length: int | None = None) -> str:
    digits = str(int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16))
    text = "".join(_SAFE_ALPHABET[ord(char) % len(_SAFE_ALPHABET)] for char in digits)
    return text[:length] if length else text


# -- selectors -----------------------------------------------------------------------------

_REQUIREMENT = re.compile(r"""^\s*(?:
    (?P<not>!)\s*(?P<nkey>[\w./-]+)                                   # !key
  | (?P<skey>[\w./-]+)\s+(?P<setop>in|notin)\s*\((?P<values>[^)]*)\)  # key in (a,b)
  | (?P<key>[\w./-]+)\s*(?P<op>==|=|!=)\s*(?P<value>[\w./-]*)         # key=value
  | (?P<ekey>[\w./-]+)                                                # key
)\s*$""", re.VERBOSE)


def _split_selector(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part for part in parts if part.strip()]


def parse_label_selector(text: str | None) -> Callable[[Mapping[str, str]], bool]:
    """`app=web,tier!=db,env in (a,b),!legacy,canary` -> predicate over a label map."""
    checks: list[Callable[[Mapping[str, str]], bool]] = []
    for part in _split_selector(text or ""):
        match = _REQUIREMENT.match(part)
        if not match:
            raise ApiError.bad_request(f"unable to parse requirement: invalid label selector {part.strip()!r}")
        if match["not"]:
            checks.append(lambda labels, k=match["nkey"]: k not in labels)
        elif match["setop"]:
            values = {value.strip() for value in match["values"].split(",") if value.strip()}
            if match["setop"] == "in":
                checks.append(lambda labels, k=match["skey"], v=values: labels.get(k) in v)
            else:
                checks.append(lambda labels, k=match["skey"], v=values: labels.get(k) not in v)
        elif match["op"]:
            wanted = match["value"]
            if match["op"] == "!=":
                checks.append(lambda labels, k=match["key"], v=wanted: labels.get(k) != v)
            else:
                checks.append(lambda labels, k=match["key"], v=wanted: k in labels and labels[k] == v)
        else:
            checks.append(lambda labels, k=match["ekey"]: k in labels)
    return lambda labels: all(check(labels) for check in checks)


def selector_string(selector: Mapping[str, Any]) -> str:
    """A LabelSelector rendered as apimachinery does (requirements sorted by key)."""
    parts: list[tuple[str, str]] = [(key, f"{key}={value}")
                                    for key, value in (selector.get("matchLabels") or {}).items()]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], sorted(expr.get("values") or [])
        rendered = {"In": f"{key} in ({','.join(values)})", "NotIn": f"{key} notin ({','.join(values)})",
                    "Exists": key, "DoesNotExist": f"!{key}"}[op]
        parts.append((key, rendered))
    return ",".join(rendered for _, rendered in sorted(parts))


def _split_unescaped(text: str, separator: str) -> list[str]:
    parts, current, escaped = [], "", False
    for char in text:
        if escaped:
            current += "\\" + char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def parse_field_selector(text: str | None, fields: Mapping[str, Callable[[Obj], str | None]],
                         resource: str) -> Callable[[Obj], bool]:
    """`involvedObject.name=web-1,type!=Normal`; fields a resource cannot select on give 400."""
    checks: list[Callable[[Obj], bool]] = []
    for term in _split_unescaped(text or "", ","):
        if not term.strip():
            continue
        match = re.match(r"^\s*([^=!\s]+)\s*(==|=|!=)(.*)$", term)
        if not match:
            raise ApiError.bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
        field, op, value = match[1], match[2], _unescape(match[3].strip())
        if field not in fields:
            raise ApiError.bad_request(f'field label not supported: {field}')
        getter = fields[field]
        if op == "!=":
            checks.append(lambda obj, g=getter, v=value: (g(obj) or "") != v)
        else:
            checks.append(lambda obj, g=getter, v=value: (g(obj) or "") == v)
    return lambda obj: all(check(obj) for check in checks)


def _path(*keys: str) -> Callable[[Obj], str | None]:
    def get(obj: Obj) -> str | None:
        value: Any = obj
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return None if value is None else str(value)
    return get


POD_FIELDS = {"metadata.name": _path("metadata", "name"), "metadata.namespace": _path("metadata", "namespace"),
              "spec.nodeName": _path("spec", "nodeName"), "spec.restartPolicy": _path("spec", "restartPolicy"),
              "spec.schedulerName": _path("spec", "schedulerName"),
              "spec.serviceAccountName": _path("spec", "serviceAccountName"),
              "status.phase": _path("status", "phase"), "status.podIP": _path("status", "podIP"),
              "status.nominatedNodeName": _path("status", "nominatedNodeName")}
# k8s.io/kubernetes/pkg/registry/core/event: EventToSelectableFields
EVENT_FIELDS = {"metadata.name": _path("metadata", "name"), "metadata.namespace": _path("metadata", "namespace"),
                **{f"involvedObject.{key}": _path("involvedObject", key)
                   for key in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")},
                "reason": _path("reason"), "reportingComponent": _path("reportingComponent"),
                "source": _path("source", "component"), "type": _path("type")}
METADATA_FIELDS = {"metadata.name": _path("metadata", "name"), "metadata.namespace": _path("metadata", "namespace")}
NODE_FIELDS = {"metadata.name": _path("metadata", "name"), "spec.unschedulable": _path("spec", "unschedulable")}


# -- patches (§3.4) -------------------------------------------------------------------------

# Patch-merge keys of the lists a strategic merge patch merges instead of replacing.
_MERGE_KEYS = {"containers": "name", "initContainers": "name", "ephemeralContainers": "name", "env": "name",
               "volumes": "name", "volumeMounts": "mountPath", "ports": "containerPort",
               "imagePullSecrets": "name", "conditions": "type", "ownerReferences": "uid"}


def _strategic(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive not in (None, "merge"):
        raise ApiError.bad_request(f"unknown patch type: {directive!r} in map")
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            result[key] = _strategic(result.get(key), value)
        elif isinstance(value, list) and key in _MERGE_KEYS and isinstance(result.get(key), list):
            result[key] = _merge_list(result[key], value, _MERGE_KEYS[key])
        else:
            result[key] = copy.deepcopy(value)
    return result


def _merge_list(current: list[Any], patch: list[Any], merge_key: str) -> list[Any]:
    merged = copy.deepcopy(current)
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            raise ApiError.bad_request(f"map: {item!r} does not contain declared merge key: {merge_key}")
        index = next((i for i, old in enumerate(merged)
                      if isinstance(old, dict) and old.get(merge_key) == item[merge_key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                merged.pop(index)
        elif index is None:
            merged.append({k: v for k, v in copy.deepcopy(item).items() if k != "$patch"})
        else:
            merged[index] = _strategic(merged[index], item)
    return merged


def _merge(target: Any, patch: Any) -> Any:  # RFC 7386
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ValueError(f"JSON pointer must start with '/': {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _container(doc: Any, parts: list[str], path: str) -> tuple[Any, str]:
    node = doc
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise ValueError(f"doc is missing path: {path!r}")
    return node, parts[-1]


def _json_patch(doc: Any, ops: list[Any]) -> Any:  # RFC 6902
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise ValueError(f"invalid operation {op!r}")
        kind, path = op["op"], op["path"]
        if kind in ("move", "copy"):
            source_parent, source_key = _container(doc, _pointer(op["from"]), op["from"])
            value = _get(source_parent, source_key, op["from"])
            if kind == "move":
                _remove(source_parent, source_key, op["from"])
            doc = _add(doc, path, copy.deepcopy(value))
        elif kind == "add":
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            parent, key = _container(doc, _pointer(path), path)
            _remove(parent, key, path)
        elif kind == "replace":
            if path == "":
                doc = copy.deepcopy(op.get("value"))
                continue
            parent, key = _container(doc, _pointer(path), path)
            _get(parent, key, path)  # replace needs an existing target
            if isinstance(parent, list):
                parent[int(key)] = copy.deepcopy(op.get("value"))
            else:
                parent[key] = copy.deepcopy(op.get("value"))
        elif kind == "test":
            parent, key = _container(doc, _pointer(path), path) if path else ({"": doc}, "")
            if _get(parent, key, path) != op.get("value"):
                raise ValueError(f"testing value {path} failed")
        else:
            raise ValueError(f"unexpected kind: {kind}")
    return doc


def _get(parent: Any, key: str, path: str) -> Any:
    if isinstance(parent, dict) and key in parent:
        return parent[key]
    if isinstance(parent, list) and key.isdigit() and int(key) < len(parent):
        return parent[int(key)]
    raise ValueError(f"replace operation does not apply: doc is missing key: {path}")


def _remove(parent: Any, key: str, path: str) -> None:
    _get(parent, key, path)
    if isinstance(parent, list):
        parent.pop(int(key))
    else:
        del parent[key]


def _add(doc: Any, path: str, value: Any) -> Any:
    if path == "":
        return value
    parent, key = _container(doc, _pointer(path), path)
    if isinstance(parent, list):
        index = len(parent) if key == "-" else int(key)
        if index > len(parent):
            raise ValueError(f"add operation does not apply: index out of range: {path}")
        parent.insert(index, value)
    elif isinstance(parent, dict):
        parent[key] = value
    else:
        raise ValueError(f"add operation does not apply: doc is missing path: {path}")
    return doc


def apply_patch(target: Obj, content_type: str | None, raw: bytes) -> Obj:
    """Apply a PATCH body the way the API server dispatches it on Content-Type."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media not in (STRATEGIC, MERGE, JSON_PATCH):
        raise ApiError(415, "UnsupportedMediaType",
                       "the body of the request was in an unknown format - accepted media types include: "
                       f"{', '.join(PATCH_TYPES)}")
    try:
        patch = json.loads(raw or b"null")
    except ValueError as exc:
        raise ApiError.bad_request(f"error decoding patch: {exc}") from None
    if media == JSON_PATCH:
        if not isinstance(patch, list):
            raise ApiError.bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
        try:
            result = _json_patch(target, patch)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ApiError(422, "Invalid", str(exc),
                           {"causes": [{"reason": "FieldValueInvalid", "message": str(exc)}]}) from None
    else:
        if not isinstance(patch, dict):
            raise ApiError.bad_request("json: cannot unmarshal array into Go value of type map[string]interface {}")
        result = _strategic(target, patch) if media == STRATEGIC else _merge(target, patch)
    if not isinstance(result, dict):
        raise ApiError.bad_request("the patch did not produce an object")
    return result


# -- the store --------------------------------------------------------------------------------

def _strip_hash(template: Obj) -> Obj:
    template = copy.deepcopy(template)
    (template.get("metadata") or {}).get("labels", {}).pop(HASH_LABEL, None)
    return _prune(template)


def _prune(value: Any) -> Any:
    """Drop empty maps/lists and nulls: Go's semantic equality treats them as unset."""
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def templates_equal(a: Obj, b: Obj) -> bool:
    """kubectl's EqualIgnoreHash: pod templates equal once the pod-template-hash label is gone."""
    return _strip_hash(a) == _strip_hash(b)


def revision_of(obj: Obj) -> int:
    try:
        return int((obj["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def _controlled_by(obj: Obj, uid: str) -> bool:
    return any(ref.get("controller") and ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])


def _pod_ready(pod: Obj) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])


class KubernetesStore:
    """Namespaced and cluster objects plus pod logs, and the controllers that react to writes."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        self._objects: dict[str, dict[tuple[str, str], Obj]] = {
            r: {} for r in ("namespaces", "nodes", "pods", "events", "deployments", "replicasets")}
        self._logs: dict[tuple[str, str], dict[str, tuple[str, str | None]]] = {}
        self._version = itertools.count(1000)
        self._serial = itertools.count(1)
        # Deployments whose rollouts do not finish at once (hold_rollouts), and per Deployment
        # the last progress of its rollout: (available new pods, when that count last changed).
        self._rollouts: dict[tuple[str, str], Literal["held", "broken"]] = {}
        self._progress: dict[tuple[str, str], tuple[int, datetime]] = {}

    # -- bookkeeping --

    def _meta(self, name: str, namespace: str | None, created: datetime | None = None, **extra: Any) -> Obj:
        meta: Obj = {"name": name, "uid": self._uid(), "resourceVersion": self._next_version(),
                     "creationTimestamp": rfc3339(created or self.clock())}
        if namespace is not None:
            meta["namespace"] = namespace
        meta.update({k: v for k, v in extra.items() if v})
        return meta

    def _uid(self) -> str:
        n = next(self._serial)
        return f"{hashlib.md5(str(n).encode()).hexdigest()[:8]}-0000-4000-8000-{n:012d}"

    def _next_version(self) -> str:
        return str(next(self._version))

    def _put(self, resource: str, obj: Obj) -> Obj:
        meta = obj["metadata"]
        self._objects[resource][(meta.get("namespace", ""), meta["name"])] = obj
        return obj

    def _touch(self, obj: Obj) -> None:
        obj["metadata"]["resourceVersion"] = self._next_version()

    def ensure_namespace(self, namespace: str) -> None:
        with self.lock:
            if ("", namespace) not in self._objects["namespaces"]:
                self._put("namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                         "metadata": self._meta(namespace, None),
                                         "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})

    # -- reads used by tests and the server --

    def get(self, resource: str, namespace: str, name: str) -> Obj:
        """A deep copy of one stored object (namespace "" for nodes/namespaces); ApiError 404 if absent."""
        with self.lock:
            return copy.deepcopy(self._lookup(resource, namespace, name))

    def _lookup(self, resource: str, namespace: str, name: str) -> Obj:
        try:
            return self._objects[resource][(namespace, name)]
        except KeyError:
            group = "apps" if resource in ("deployments", "replicasets") else ""
            raise ApiError.not_found(resource, name, group) from None

    def list(self, resource: str, namespace: str | None = None) -> list[Obj]:
        """Deep copies, sorted by (namespace, name) like etcd keys; namespace None = all."""
        with self.lock:
            return [copy.deepcopy(obj) for (ns, _), obj in sorted(self._objects[resource].items())
                    if namespace is None or ns == namespace]

    def replica_sets(self, namespace: str, deployment: str) -> list[Obj]:
        """The ReplicaSets the Deployment controls, newest revision first."""
        with self.lock:
            dep = self._lookup("deployments", namespace, deployment)
            return sorted((copy.deepcopy(rs) for rs in self._owned(dep)), key=revision_of, reverse=True)

    # -- seeding --

    def put_raw(self, resource: str, obj: Obj) -> None:
        """Store an object exactly as given: no defaults, validation or controller (for broken shapes)."""
        with self.lock:
            self._put(resource, copy.deepcopy(obj))

    def remove(self, resource: str, namespace: str, name: str) -> None:
        """The object is gone, as after someone else's `kubectl delete` (namespace "" for nodes;
        what it owned is left alone: the garbage collector is not modelled); ApiError 404 if absent."""
        with self.lock:
            self._lookup(resource, namespace, name)
            del self._objects[resource][(namespace, name)]

    def add_node(self, name: str, *, unschedulable: bool = False, labels: Mapping[str, str] | None = None,
                 ready: bool = True) -> Obj:
        with self.lock:
            spec: Obj = {"podCIDR": "10.244.0.0/24"}
            if unschedulable:
                spec["unschedulable"] = True
                spec["taints"] = [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]
            node = {"apiVersion": "v1", "kind": "Node",
                    "metadata": self._meta(name, None, labels={"kubernetes.io/hostname": name, **(labels or {})}),
                    "spec": spec,
                    "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                               "reason": "KubeletReady" if ready else "KubeletNotReady",
                                               "lastHeartbeatTime": rfc3339(self.clock()),
                                               "lastTransitionTime": rfc3339(self.clock())}],
                               "addresses": [{"type": "Hostname", "address": name}]}}
            return copy.deepcopy(self._put("nodes", node))

    def add_pod(self, namespace: str, name: str, *, image: str = "registry.example/app:1.0",
                containers: Sequence[str] = ("app",), labels: Mapping[str, str] | None = None,
                phase: str = "Running", ready: bool | None = None, restarts: int | Mapping[str, int] = 0,
                node: str | None = "node-1", logs: str | Mapping[str, str] = "",
                previous_logs: str | Mapping[str, str] | None = None, created: datetime | None = None,
                waiting_reason: str | None = None, owner: Obj | None = None) -> Obj:
        """A Pod; `logs`/`previous_logs` are text for every container or a map per container.
        `ready` defaults to phase == "Running"; `waiting_reason` (e.g. CrashLoopBackOff) marks
        the containers as waiting instead of running."""
        with self.lock:
            self.ensure_namespace(namespace)
            ready = phase == "Running" if ready is None else ready
            per_restarts = restarts if isinstance(restarts, Mapping) else {containers[0]: restarts}
            now = rfc3339(created or self.clock())
            statuses = []
            for container in containers:
                count = per_restarts.get(container, 0)
                if waiting_reason or phase == "Pending":
                    state: Obj = {"waiting": {"reason": waiting_reason or "ContainerCreating"}}
                else:
                    state = {"running": {"startedAt": now}}
                status: Obj = {"name": container, "image": image, "imageID": f"{image}@sha256:{'0' * 64}",
                               "ready": ready and not waiting_reason, "restartCount": count,
                               "started": "running" in state, "state": state}
                if count:
                    status["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error",
                                                          "startedAt": now, "finishedAt": now}}
                statuses.append(status)
            spec: Obj = {"containers": [{"name": c, "image": image, "imagePullPolicy": "IfNotPresent"}
                                        for c in containers],
                         "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
                         "schedulerName": "default-scheduler", "serviceAccountName": "default"}
            if node:
                spec["nodeName"] = node
            pod_ready = ready and not waiting_reason
            pod = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": self._meta(name, namespace, created, labels=dict(labels or {}),
                                          ownerReferences=[owner] if owner else None),
                   "spec": spec,
                   "status": {"phase": phase, "startTime": now, "podIP": f"10.244.0.{next(self._serial) % 250 + 2}",
                              "conditions": [{"type": "Ready", "status": "True" if pod_ready else "False"},
                                             {"type": "PodScheduled", "status": "True" if node else "False"}],
                              "containerStatuses": statuses}}
            current = logs if isinstance(logs, Mapping) else {c: logs for c in containers}
            previous = previous_logs if isinstance(previous_logs, Mapping) or previous_logs is None \
                else {c: previous_logs for c in containers}
            self._logs[(namespace, name)] = {c: (current.get(c, ""), (previous or {}).get(c)) for c in containers}
            return copy.deepcopy(self._put("pods", pod))

    def add_event(self, namespace: str, kind: str, name: str, *, reason: str, message: str, type: str = "Normal",
                  count: int = 1, last_seen: datetime | None = None, first_seen: datetime | None = None,
                  component: str = "kubelet", host: str | None = None, event_name: str | None = None) -> Obj:
        """A core/v1 Event about `kind`/`name` (involvedObject)."""
        with self.lock:
            self.ensure_namespace(namespace)
            last = last_seen or self.clock()
            first = first_seen or last
            target = self._objects.get(kind.lower() + "s", {}).get((namespace, name))
            api_version = {"Pod": "v1", "Node": "v1"}.get(kind, "apps/v1")
            involved = {"kind": kind, "namespace": namespace, "name": name, "apiVersion": api_version,
                        "uid": target["metadata"]["uid"] if target else self._uid()}
            source: Obj = {"component": component}
            if host:
                source["host"] = host
            event = {"apiVersion": "v1", "kind": "Event",
                     "metadata": self._meta(event_name
                                            or f"{name}.{int(first.timestamp() * 1e9) + next(self._serial):x}",
                                            namespace, first),
                     "involvedObject": involved, "reason": reason, "message": message, "type": type,
                     "count": count, "source": source, "firstTimestamp": rfc3339(first),
                     "lastTimestamp": rfc3339(last), "eventTime": None,
                     "reportingComponent": component, "reportingInstance": host or ""}
            return copy.deepcopy(self._put("events", event))

    def add_deployment(self, namespace: str, name: str, *, image: str | None = None, replicas: int = 3,
                       labels: Mapping[str, str] | None = None, containers: Sequence[str] | None = None,
                       annotations: Mapping[str, str] | None = None, paused: bool = False,
                       ready_replicas: int | None = None, revision_history_limit: int = 10,
                       created: datetime | None = None) -> Obj:
        """A Deployment with its first ReplicaSet (revision 1) and Pods, as after a finished rollout.
        `ready_replicas` < replicas leaves the remaining pods in CrashLoopBackOff."""
        with self.lock:
            self.ensure_namespace(namespace)
            labels = dict(labels or {"app": name})
            image = image or f"registry.example/{name}:1.0"
            dep = {"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": self._meta(name, namespace, created, labels=labels, annotations=dict(annotations or {})),
                   "spec": {"replicas": replicas, "selector": {"matchLabels": dict(labels)},
                            "template": {"metadata": {"labels": dict(labels)},
                                         "spec": {"containers": [{"name": c, "image": image,
                                                                  "imagePullPolicy": "IfNotPresent",
                                                                  "terminationMessagePath": "/dev/termination-log"}
                                                                 for c in (containers or [name])],
                                                  "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
                                                  "dnsPolicy": "ClusterFirst"}},
                            "strategy": {"type": "RollingUpdate",
                                         "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
                            "revisionHistoryLimit": revision_history_limit, "progressDeadlineSeconds": 600},
                   "status": {}}
            dep["metadata"]["generation"] = 1
            dep["metadata"].setdefault("annotations", {})
            self._put("deployments", dep)
            self.sync_deployment(namespace, name)
            if ready_replicas is not None:
                for pod in self._pods_of_deployment(dep)[ready_replicas:]:
                    self._mark_crashlooping(pod)
                self.sync_deployment(namespace, name)
            if paused:
                dep["spec"]["paused"] = True
                dep["metadata"]["generation"] += 1
                self.sync_deployment(namespace, name)
            return copy.deepcopy(dep)

    def set_image(self, namespace: str, name: str, image: str, *, container: str | None = None,
                  annotations: Mapping[str, str] | None = None) -> Obj:
        """Simulates a deploy (`kubectl set image`, optionally annotating the Deployment, e.g.
        kubernetes.io/change-cause): a template change, hence a new revision."""
        with self.lock:
            dep = self._lookup("deployments", namespace, name)
            dep["metadata"].setdefault("annotations", {}).update(annotations or {})
            for spec in dep["spec"]["template"]["spec"]["containers"]:
                if container in (None, spec["name"]):
                    spec["image"] = image
            self.write_deployment(dep, spec_changed=True)
            return copy.deepcopy(dep)

    def _mark_crashlooping(self, pod: Obj) -> None:
        pod["status"]["conditions"][0]["status"] = "False"
        for status in pod["status"]["containerStatuses"]:
            status.update(ready=False, started=False, restartCount=5,
                          state={"waiting": {"reason": "CrashLoopBackOff",
                                             "message": f"back-off 5m0s restarting failed container={status['name']}"}},
                          lastState={"terminated": {"exitCode": 1, "reason": "Error"}})
        self._touch(pod)

    def hold_rollouts(self, namespace: str, name: str, *, broken: bool = False) -> None:
        """From now on the Deployment's rollouts take time, as on a real cluster: a new
        ReplicaSet's pods wait in ContainerCreating until `finish_rollout` (or, `broken`, crash
        loop for good, like a bad image), the old ReplicaSet keeps what maxUnavailable requires,
        and the controller reports ProgressDeadlineExceeded once spec.progressDeadlineSeconds
        pass (on `clock`) without a new pod becoming available."""
        with self.lock:
            self._rollouts[(namespace, name)] = "broken" if broken else "held"

    def finish_rollout(self, namespace: str, name: str) -> None:
        """The held rollout's new pods start and become ready; later rollouts finish at once."""
        with self.lock:
            self._rollouts.pop((namespace, name), None)
            dep = self._lookup("deployments", namespace, name)
            for pod in self._pods_of_deployment(dep):
                if not _pod_ready(pod):
                    self._start(pod)
            self.sync_deployment(namespace, name)

    def _start(self, pod: Obj) -> None:
        now = rfc3339(self.clock())
        pod["status"]["phase"] = "Running"
        pod["status"]["conditions"][0]["status"] = "True"
        for status in pod["status"]["containerStatuses"]:
            status.update(ready=True, started=True, state={"running": {"startedAt": now}})
        self._touch(pod)

    # -- writes the server performs --

    def write_deployment(self, dep: Obj, *, spec_changed: bool) -> Obj:
        """Persist a Deployment and let the controller react (§3.7)."""
        with self.lock:
            if spec_changed:
                dep["metadata"]["generation"] = dep["metadata"].get("generation", 1) + 1
            self._touch(dep)
            self._put("deployments", dep)
            persisted = copy.deepcopy(dep)  # the API answers before the controller runs
            self.sync_deployment(dep["metadata"]["namespace"], dep["metadata"]["name"])
            return persisted

    def delete_pod(self, namespace: str, name: str, grace_period: int | None, dry_run: bool) -> Obj:
        """Returns the Pod marked for deletion; a real delete also lets its ReplicaSet replace it
        (the fake kubelet finishes termination at once)."""
        with self.lock:
            pod = copy.deepcopy(self._lookup("pods", namespace, name))
            grace = pod["spec"].get("terminationGracePeriodSeconds", 30) if grace_period is None else grace_period
            pod["metadata"]["deletionTimestamp"] = rfc3339(self.clock() + timedelta(seconds=grace))
            pod["metadata"]["deletionGracePeriodSeconds"] = grace
            if dry_run:
                return pod
            self._touch(pod)
            del self._objects["pods"][(namespace, name)]
            self._logs.pop((namespace, name), None)
            for dep in list(self._objects["deployments"].values()):
                if dep["metadata"]["namespace"] == namespace and any(
                        _controlled_by(pod, rs["metadata"]["uid"]) for rs in self._owned(dep)):
                    self.sync_deployment(namespace, dep["metadata"]["name"])
            return pod

    def pod_log(self, namespace: str, name: str, container: str | None, previous: bool, tail: int | None) -> str:
        with self.lock:
            pod = self._lookup("pods", namespace, name)
            names = [c["name"] for c in pod["spec"]["containers"]]
            if container is None:
                if len(names) > 1:
                    raise ApiError.bad_request(f"a container name must be specified for pod {name}, "
                                               f"choose one of: [{' '.join(names)}]")
                container = names[0]
            if container not in names:
                raise ApiError.bad_request(f"container {container} is not valid for pod {name}")
            status = next(s for s in pod["status"]["containerStatuses"] if s["name"] == container)
            current, earlier = self._logs.get((namespace, name), {}).get(container, ("", None))
            if previous:
                if earlier is None:
                    raise ApiError.bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
                text = earlier
            elif "waiting" in status["state"] and not current:
                reason = status["state"]["waiting"].get("reason", "ContainerCreating")
                raise ApiError.bad_request(f'container "{container}" in pod "{name}" is waiting to start: {reason}')
            else:
                text = current
            if tail is not None:
                lines = text.splitlines(keepends=True)
                text = "".join(lines[-tail:]) if tail > 0 else ""
            return text

    # -- the deployment controller (§3.7) --

    def _owned(self, dep: Obj) -> list[Obj]:
        ns, uid = dep["metadata"]["namespace"], dep["metadata"]["uid"]
        return sorted((rs for (n, _), rs in self._objects["replicasets"].items()
                       if n == ns and _controlled_by(rs, uid)),
                      key=lambda rs: (rs["metadata"]["creationTimestamp"], revision_of(rs)))

    def _pods_of(self, rs: Obj) -> list[Obj]:
        ns, uid = rs["metadata"]["namespace"], rs["metadata"]["uid"]
        return [pod for (n, _), pod in sorted(self._objects["pods"].items()) if n == ns and _controlled_by(pod, uid)]

    def _pods_of_deployment(self, dep: Obj) -> list[Obj]:
        return [pod for rs in self._owned(dep) for pod in self._pods_of(rs)]

    def sync_deployment(self, namespace: str, name: str) -> None:
        """Adopt or create the ReplicaSet matching the template, bump revisions, scale, prune history."""
        with self.lock:
            dep = self._lookup("deployments", namespace, name)
            spec, annotations = dep["spec"], dep["metadata"].setdefault("annotations", {})
            desired = spec.get("replicas", 1)
            owned = self._owned(dep)
            new = next((rs for rs in owned if templates_equal(rs["spec"]["template"], spec["template"])), None)
            top = max((revision_of(rs) for rs in owned), default=0)
            if not spec.get("paused"):
                if new is None:
                    new = self._new_replica_set(dep, top + 1)
                    owned.append(new)
                elif revision_of(new) < top:
                    rs_annotations = new["metadata"].setdefault("annotations", {})
                    old = rs_annotations.get(REVISION, "0")
                    history = rs_annotations.get(REVISION_HISTORY)
                    rs_annotations[REVISION_HISTORY] = f"{history},{old}" if history else old
                    rs_annotations[REVISION] = str(top + 1)
                rs_annotations = new["metadata"].setdefault("annotations", {})
                for key, value in annotations.items():
                    if key not in _NOT_COPIED:
                        rs_annotations[key] = value
                rs_annotations[DESIRED_REPLICAS] = str(desired)
                rs_annotations[MAX_REPLICAS] = str(desired + -(-desired * 25 // 100))
                annotations[REVISION] = rs_annotations[REVISION]
                for rs in owned:
                    rs["spec"]["replicas"] = desired if rs is new else 0
                self._keep_old_while_rolling(dep, new, owned)
            elif new is not None:
                new["spec"]["replicas"] = desired
            history = sorted((rs for rs in owned if rs is not new and rs["spec"]["replicas"] == 0), key=revision_of)
            for rs in history[:max(0, len(history) - spec.get("revisionHistoryLimit", 10))]:
                for pod in self._pods_of(rs):
                    del self._objects["pods"][(namespace, pod["metadata"]["name"])]
                del self._objects["replicasets"][(namespace, rs["metadata"]["name"])]
                owned.remove(rs)
            mode = self._rollouts.get((namespace, name))
            for rs in owned:
                self._sync_replica_set(rs, new_pods=mode if rs is new else None)
            self._deployment_status(dep, new, owned)

    def _keep_old_while_rolling(self, dep: Obj, new: Obj, owned: list[Obj]) -> None:
        """A held rollout: the newest old ReplicaSet keeps desired - maxUnavailable - (available
        new pods), as the rolling-update controller scales old pods down only as new ones come up."""
        key = (dep["metadata"]["namespace"], dep["metadata"]["name"])
        if key not in self._rollouts:
            return
        desired = dep["spec"].get("replicas", 1)
        ready_new = sum(_pod_ready(pod) for pod in self._pods_of(new))
        old = [rs for rs in owned if rs is not new and rs["status"].get("replicas", 0) > 0]
        if old:
            newest = max(old, key=revision_of)
            newest["spec"]["replicas"] = max(0, desired - desired * 25 // 100 - ready_new)

    def _new_replica_set(self, dep: Obj, revision: int) -> Obj:
        ns, name = dep["metadata"]["namespace"], dep["metadata"]["name"]
        template = copy.deepcopy(dep["spec"]["template"])
        template_hash = _safe_encode(json.dumps(_strip_hash(template), sort_keys=True), 10)
        template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = template_hash
        selector = copy.deepcopy(dep["spec"]["selector"])
        selector.setdefault("matchLabels", {})[HASH_LABEL] = template_hash
        owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": dep["metadata"]["uid"],
                 "controller": True, "blockOwnerDeletion": True}
        rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
              "metadata": self._meta(f"{name}-{template_hash}", ns, labels=dict(template["metadata"]["labels"]),
                                     annotations={REVISION: str(revision)}, ownerReferences=[owner]),
              "spec": {"replicas": 0, "selector": selector, "template": template},
              "status": {"replicas": 0}}
        rs["metadata"]["generation"] = 1
        return self._put("replicasets", rs)

    def _sync_replica_set(self, rs: Obj, new_pods: Literal["held", "broken"] | None = None) -> None:
        ns = rs["metadata"]["namespace"]
        pods = self._pods_of(rs)
        wanted = rs["spec"]["replicas"]
        for pod in pods[wanted:]:
            del self._objects["pods"][(ns, pod["metadata"]["name"])]
            self._logs.pop((ns, pod["metadata"]["name"]), None)
        nodes = sorted(node for _, node in self._objects["nodes"]) or ["node-1"]
        owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs["metadata"]["name"],
                 "uid": rs["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}
        for _ in range(wanted - len(pods)):
            serial = next(self._serial)
            containers = rs["spec"]["template"]["spec"]["containers"]
            pod = self.add_pod(ns, f"{rs['metadata']['name']}-{_safe_encode(str(serial), 5)}",
                               image=containers[0].get("image", ""), containers=[c["name"] for c in containers],
                               labels=rs["spec"]["template"]["metadata"].get("labels"), owner=owner,
                               node=nodes[serial % len(nodes)], phase="Pending" if new_pods else "Running")
            if new_pods == "broken":
                self._mark_crashlooping(self._objects["pods"][(ns, pod["metadata"]["name"])])
        pods = self._pods_of(rs)
        ready = sum(_pod_ready(pod) for pod in pods)
        status = {"replicas": len(pods), "fullyLabeledReplicas": len(pods), "readyReplicas": ready,
                  "availableReplicas": ready, "observedGeneration": rs["metadata"].get("generation", 1)}
        if status != rs["status"]:
            rs["status"] = status
            self._touch(rs)

    def _deployment_status(self, dep: Obj, new: Obj | None, owned: list[Obj]) -> None:
        desired = dep["spec"].get("replicas", 1)
        pods = [pod for rs in owned for pod in self._pods_of(rs)]
        ready = sum(_pod_ready(pod) for pod in pods)
        max_unavailable = desired * 25 // 100
        now = rfc3339(self.clock())
        available = ready >= desired - max_unavailable
        key = (dep["metadata"]["namespace"], dep["metadata"]["name"])
        updated = self._pods_of(new) if new else []
        ready_new = sum(_pod_ready(pod) for pod in updated)
        if self._progress.get(key, (None,))[0] != ready_new:
            self._progress[key] = (ready_new, self.clock())
        stalled = self.clock() - self._progress[key][1] > timedelta(
            seconds=dep["spec"].get("progressDeadlineSeconds", 600))
        if dep["spec"].get("paused"):
            progressing = {"type": "Progressing", "status": "Unknown", "reason": "DeploymentPaused",
                           "message": "Deployment is paused"}
        elif key in self._rollouts and (ready_new < desired or len(pods) > len(updated)) and stalled:
            progressing = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                           "message": f'ReplicaSet "{new["metadata"]["name"] if new else ""}" has timed out '
                                      "progressing."}
        elif key in self._rollouts and (ready_new < desired or len(pods) > len(updated)):
            progressing = {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                           "message": f'ReplicaSet "{new["metadata"]["name"] if new else ""}" is progressing.'}
        else:
            progressing = {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                           "message": f'ReplicaSet "{new["metadata"]["name"] if new else ""}" '
                                      "has successfully progressed."}
        status: Obj = {
            "observedGeneration": dep["metadata"].get("generation", 1), "replicas": len(pods),
            "updatedReplicas": len(self._pods_of(new)) if new else 0, "readyReplicas": ready,
            "availableReplicas": ready,
            "conditions": [
                {"type": "Available", "status": "True" if available else "False",
                 "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                 "message": "Deployment has minimum availability." if available
                 else "Deployment does not have minimum availability.",
                 "lastUpdateTime": now, "lastTransitionTime": now},
                {**progressing, "lastUpdateTime": now, "lastTransitionTime": now}]}
        if len(pods) > ready:
            status["unavailableReplicas"] = len(pods) - ready
        def facts(of: Obj) -> Obj:  # what changes the status: counts and each condition's reason
            return {**{k: v for k, v in of.items() if k != "conditions"},
                    "reasons": [(c["type"], c["status"], c.get("reason")) for c in of.get("conditions") or []]}

        if facts(dep.get("status", {})) != facts(status) or not dep.get("status"):
            dep["status"] = status
            self._touch(dep)
