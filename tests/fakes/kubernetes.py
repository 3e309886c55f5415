"""A fake Kubernetes API server: real HTTP on 127.0.0.1, spoken to by the official python
client and by kubectl through a kubeconfig (`fake.kubeconfig(path)`).

It serves discovery, /version, namespaces, nodes, pods (+log), events, deployments (+scale)
and replicasets with the API server's shapes and `Status` errors (platform.md §3.3-§3.6),
checks the bearer token, can forbid verbs, honours dryRun=All, and runs the deployment
controller after writes (§3.7, in tests/fakes/kubernetes_store.py). Every request is recorded
in `requests` for assertions.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import yaml

from tests.fakes.kubernetes_store import (
    EVENT_FIELDS,
    METADATA_FIELDS,
    NODE_FIELDS,
    POD_FIELDS,
    ApiError,
    KubernetesStore,
    Obj,
    apply_patch,
    parse_field_selector,
    parse_label_selector,
    selector_string,
)
from tests.fakes.slack import Hold

__all__ = ["FakeKubernetes", "RecordedRequest", "ApiError"]

SERVER_VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.4", "gitCommit": "0" * 40,
                  "gitTreeState": "clean", "buildDate": "2025-04-22T16:00:00Z", "goVersion": "go1.23.6",
                  "compiler": "gc", "platform": "linux/amd64"}


@dataclass(frozen=True)
class _Resource:
    group: str
    name: str
    kind: str
    namespaced: bool
    verbs: tuple[str, ...]
    short: tuple[str, ...] = ()
    fields: Any = field(default_factory=lambda: METADATA_FIELDS, compare=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/v1" if self.group else "v1"

    def discovery(self) -> Obj:
        entry: Obj = {"name": self.name, "singularName": self.kind.lower(), "namespaced": self.namespaced,
                      "kind": self.kind, "verbs": list(self.verbs)}
        if self.short:
            entry["shortNames"] = list(self.short)
        if self.kind in ("Pod", "Deployment", "ReplicaSet"):
            entry["categories"] = ["all"]
        return entry


_RESOURCES = {r.name: r for r in (
    _Resource("", "namespaces", "Namespace", False, ("get", "list"), ("ns",)),
    _Resource("", "nodes", "Node", False, ("get", "list", "patch"), ("no",), NODE_FIELDS),
    _Resource("", "pods", "Pod", True, ("delete", "get", "list"), ("po",), POD_FIELDS),
    _Resource("", "events", "Event", True, ("get", "list"), ("ev",), EVENT_FIELDS),
    _Resource("apps", "deployments", "Deployment", True, ("get", "list", "patch"), ("deploy",)),
    _Resource("apps", "replicasets", "ReplicaSet", True, ("get", "list"), ("rs",)),
)}
_SUBRESOURCES = {
    "pods/log": {"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get"]},
    "deployments/scale": {"name": "deployments/scale", "singularName": "", "namespaced": True, "group": "autoscaling",
                          "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]},
}
_PATH = re.compile(r"^/(?:api/v1|apis/(?P<group>[a-z0-9.]+)/v1)(?:/namespaces/(?P<ns>[^/]+)(?=/))?"
                   r"/(?P<resource>[a-z]+)(?:/(?P<name>[^/]+)(?:/(?P<sub>[a-z]+))?)?$")
_VERB = {"GET": "get", "PATCH": "patch", "PUT": "update", "DELETE": "delete", "POST": "create"}


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    body: Any  # parsed JSON when the body was JSON, text otherwise, None when empty
    headers: dict[str, str] = field(repr=False)
    status: int = 0

    @property
    def user_agent(self) -> str:
        return self.headers.get("user-agent", "")


def _reset_immutable(old: Obj, new: Obj) -> None:
    """The API server ignores status and system metadata in a patch to the main resource."""
    new["status"] = copy.deepcopy(old.get("status", {}))
    for key in ("uid", "creationTimestamp", "generation", "namespace"):
        if key in old["metadata"]:
            new.setdefault("metadata", {})[key] = old["metadata"][key]
    new["apiVersion"], new["kind"] = old["apiVersion"], old["kind"]


def _check_version(resource: str, old: Obj, new: Obj) -> None:
    sent = (new.get("metadata") or {}).get("resourceVersion")
    if sent and sent != old["metadata"]["resourceVersion"]:
        name = old["metadata"]["name"]
        raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {resource} "{name}": the object has been '
                       "modified; please apply your changes to the latest version and try again",
                       {"name": name, "kind": resource.split(".")[0], **({"group": "apps"} if "." in resource else {})})
    new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]


def _replicas_cause(value: Any) -> tuple[str, str] | None:
    if not isinstance(value, int) or isinstance(value, bool):
        return ("spec.replicas", f"Invalid value: {json.dumps(value)}: must be an integer")
    if value < 0:
        return ("spec.replicas", f"Invalid value: {value}: must be greater than or equal to 0")
    return None


def _validate_deployment(old: Obj, new: Obj) -> None:
    causes: list[tuple[str, str]] = []
    name = old["metadata"]["name"]
    if new["metadata"].get("name") != name:
        causes.append(("metadata.name",
                       f"Invalid value: {json.dumps(new['metadata'].get('name'))}: field is immutable"))
    spec = new.get("spec") or {}
    if (cause := _replicas_cause(spec.get("replicas", 1))) is not None:
        causes.append(cause)
    if spec.get("selector") != old["spec"]["selector"]:
        causes.append(("spec.selector", f"Invalid value: {json.dumps(spec.get('selector'))}: field is immutable"))
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    if not parse_label_selector(selector_string(old["spec"]["selector"]))(labels):
        causes.append(("spec.template.metadata.labels",
                       f"Invalid value: {json.dumps(labels)}: `selector` does not match template `labels`"))
    containers = (template.get("spec") or {}).get("containers")
    if not isinstance(containers, list) or not containers:
        causes.append(("spec.template.spec.containers", "Required value"))
    else:
        seen: set[str] = set()
        for index, container in enumerate(containers):
            where = f"spec.template.spec.containers[{index}]"
            if not isinstance(container, dict) or not container.get("name"):
                causes.append((f"{where}.name", "Required value"))
                continue
            if container["name"] in seen:
                causes.append((f"{where}.name", f'Duplicate value: "{container["name"]}"'))
            seen.add(container["name"])
            if not container.get("image"):
                causes.append((f"{where}.image", "Required value"))
    if causes:
        raise ApiError.invalid("Deployment", name, "apps", causes)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeKubernetes


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        self._handle()

    do_PATCH = do_PUT = do_DELETE = do_POST = do_GET

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet test output
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while (size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)) > 0:
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        raw = self._body()
        headers = {key.lower(): value for key, value in self.headers.items()}
        fake = self.server.fake
        hold = fake._take_hold(self.command, url.path, query)
        if hold and hold.when == "before":
            hold.reached.set()
            hold.wait_released()
        try:
            if fake._take_refusal(self.command, url.path, query):
                raise ApiError(503, "ServiceUnavailable", "the server is currently unable to handle the request")
            status, content_type, payload = fake._serve(self.command, url.path, query, headers, raw)
        except ApiError as exc:
            status, content_type, payload = exc.code, "application/json", json.dumps(exc.status()).encode()
        except Exception as exc:  # a bug in the fake: answer like the API server, keep the cause visible
            error = ApiError(500, "InternalError", f"fake API server error: {exc!r}")
            status, content_type, payload = 500, "application/json", json.dumps(error.status()).encode()
        if status < 400 and fake._take_loss(self.command, url.path, query):
            lost = ApiError(504, "Timeout", "Timeout: request did not complete within the allotted timeout")
            status, content_type, payload = 504, "application/json", json.dumps(lost.status()).encode()
        if hold and hold.when == "after":
            hold.reached.set()
            hold.wait_released()
        fake._record(RecordedRequest(self.command, url.path, query, headers.get("content-type"),
                                     _decode(raw, headers.get("content-type")), headers, status))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.write(payload)


def _decode(raw: bytes, content_type: str | None) -> Any:
    if not raw:
        return None
    text = raw.decode("utf-8", "replace")
    if "json" in (content_type or ""):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def _flag(query: dict[str, str], key: str) -> bool:
    return query.get(key, "").lower() in ("true", "1")


def _int(query: dict[str, str], key: str) -> int | None:
    if key not in query:
        return None
    try:
        return int(query[key])
    except ValueError:
        raise ApiError.bad_request(f"{key}: Invalid value: {query[key]!r}: must be an integer") from None


class FakeKubernetes(KubernetesStore):
    """Seed it with add_deployment / add_pod / add_event / add_node, start it, point a kubeconfig at it."""

    def __init__(self, token: str = "fake-token", user: str = "system:serviceaccount:oncall:oncall-bot",
                 *, tls: bool = False) -> None:
        """`tls=True` serves HTTPS with a throw-away CA (trustme). kubectl needs it: client-go's
        clientcmd drops every credential of a kubeconfig whose server is plain http://."""
        super().__init__()
        self.token, self.user, self.tls = token, user, tls
        self._ca_pem: bytes | None = None
        self.requests: list[RecordedRequest] = []
        self._forbidden: set[tuple[str, str, str | None]] = set()
        self._losses: list[tuple[str, str]] = []
        self._refusals: list[tuple[str, str]] = []
        self._holds: list[tuple[str, Hold]] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --

    def start(self) -> FakeKubernetes:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        if self.tls:
            import trustme  # test dependency; only needed for HTTPS

            authority = trustme.CA()
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            authority.issue_cert("127.0.0.1", "localhost").configure_cert(context)
            self._ca_pem = authority.cert_pem.bytes()
            # the handshake happens in the request thread, so one slow client blocks no other
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True,
                                                      do_handshake_on_connect=False)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-kubernetes", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeKubernetes:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the fake first"
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self._server.server_address[1]}"

    def kubeconfig(self, path: str | Path, namespace: str = "default") -> Path:
        """Write a kubeconfig (context "fake", token user; with the CA when serving TLS)."""
        path = Path(path)
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": "fake", "cluster": {"server": self.base_url, **(
                {"certificate-authority-data": base64.b64encode(self._ca_pem).decode()} if self._ca_pem else {})}}],
            "users": [{"name": "fake", "user": {"token": self.token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
            "current-context": "fake"}))
        return path

    # -- test controls --

    def forbid(self, verb: str, resource: str, namespace: str | None = None) -> None:
        """Answer 403 to `verb` ("get", "list", "patch", "update", "delete") on `resource`
        ("pods", "deployments/scale", "pods/log", ...), in one namespace or all."""
        self._forbidden.add((verb, resource, namespace))

    def lose_answer(self, method: str, path: str, *, times: int = 1) -> None:
        """The next `times` `method` requests on `path` (dry runs aside) take effect, but their
        answer is lost: the caller sees 504 Timeout, as when the API server's answer does not
        come back in time (the write is done all the same; kubectl then reports an error)."""
        with self.lock:
            self._losses += [(method, path)] * times

    def _take_loss(self, method: str, path: str, query: dict[str, str]) -> bool:
        with self.lock:
            if query.get("dryRun") != "All" and (method, path) in self._losses:
                self._losses.remove((method, path))
                return True
            return False

    def refuse(self, method: str, path: str, *, times: int = 1) -> None:
        """The next `times` `method` requests on `path` (dry runs aside) are answered 503
        ServiceUnavailable without being applied, as when the API server sheds the request
        before it reaches storage: the caller cannot tell this from a lost answer."""
        with self.lock:
            self._refusals += [(method, path)] * times

    def _take_refusal(self, method: str, path: str, query: dict[str, str]) -> bool:
        with self.lock:
            if query.get("dryRun") != "All" and (method, path) in self._refusals:
                self._refusals.remove((method, path))
                return True
            return False

    def hold(self, method: str, path: str, *, when: str = "after") -> Hold:
        """Hold the next `method` request on `path` (dry runs aside) mid-flight: applied
        (`after`) or not yet (`before`), its answer waits until the test releases it, so the
        test can kill the caller while its call is in flight (as tests.fakes.slack holds)."""
        hold = Hold(method, when, lambda _args: True)
        with self.lock:
            self._holds.append((path, hold))
        return hold

    def _take_hold(self, method: str, path: str, query: dict[str, str]) -> Hold | None:
        with self.lock:
            if query.get("dryRun") == "All":
                return None
            found = next(((p, h) for p, h in self._holds if p == path and h.method == method), None)
            if found is not None:
                self._holds.remove(found)
            return found[1] if found else None

    def requests_for(self, method: str | None = None, path: str | None = None) -> list[RecordedRequest]:
        """Recorded requests, optionally filtered by method and exact path."""
        with self.lock:
            return [r for r in self.requests
                    if (method is None or r.method == method) and (path is None or r.path == path)]

    def _record(self, request: RecordedRequest) -> None:
        with self.lock:
            self.requests.append(request)

    # -- dispatch --

    def _serve(self, method: str, path: str, query: dict[str, str], headers: dict[str, str],
               raw: bytes) -> tuple[int, str, bytes]:
        if headers.get("authorization") != f"Bearer {self.token}":
            raise ApiError(401, "Unauthorized", "Unauthorized")
        if "dryRun" in query and query["dryRun"] != "All":
            raise ApiError.bad_request(f'dryRun: Unsupported value: "{query["dryRun"]}": supported values: "All"')
        if _flag(query, "watch"):
            raise ApiError(405, "MethodNotAllowed", "the fake API server does not support watch")
        discovery = self._discovery(path)
        if discovery is not None:
            if method != "GET":
                raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed on {path}")
            return 200, "application/json", json.dumps(discovery).encode()
        match = _PATH.match(path)
        resource = _RESOURCES.get(match["resource"]) if match else None
        if not match or resource is None or resource.group != (match["group"] or "") \
                or (match["ns"] and not resource.namespaced) \
                or (resource.namespaced and not match["ns"] and match["name"] is not None):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        namespace, name, sub = match["ns"], match["name"], match["sub"]
        verb = "list" if method == "GET" and name is None else _VERB.get(method, method.lower())
        full = f"{resource.name}/{sub}" if sub else resource.name
        self._authorize(verb, full, resource, namespace, name)
        with self.lock:
            if name is None:
                if method != "GET":
                    raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on a collection by the fake")
                body = self._list(resource, namespace, query)
            elif sub == "log" and resource.name == "pods" and method == "GET":
                text = self.pod_log(namespace or "", name, query.get("container"), _flag(query, "previous"),
                                    _int(query, "tailLines"))
                return 200, "text/plain", text.encode()
            elif sub == "scale" and resource.name == "deployments":
                body = self._scale_request(method, namespace or "", name, query, headers, raw)
            elif sub is not None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            elif method == "GET":
                if resource.name == "deployments":  # the controller catches up (progress deadlines) when looked at
                    self.sync_deployment(namespace or "", name)
                body = self.get(resource.name, namespace or "", name)
            elif method == "DELETE" and resource.name == "pods":
                options = _decode(raw, "application/json") or {}
                grace = _int(query, "gracePeriodSeconds")
                grace = options.get("gracePeriodSeconds") if grace is None and isinstance(options, dict) else grace
                dry = query.get("dryRun") == "All" or (isinstance(options, dict) and "All" in options.get("dryRun", []))
                body = self.delete_pod(namespace or "", name, grace, dry)
            elif method == "PATCH" and resource.name == "deployments":
                body = self._patch_deployment(namespace or "", name, query, headers.get("content-type"), raw)
            elif method == "PATCH" and resource.name == "nodes":
                body = self._patch_node(name, query, headers.get("content-type"), raw)
            else:
                raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on {resource.name} by the fake")
        return 200, "application/json", json.dumps(body).encode()

    def _authorize(self, verb: str, full: str, resource: _Resource, namespace: str | None, name: str | None) -> None:
        if not ({(verb, full, namespace), (verb, full, None), ("*", full, None)} & self._forbidden):
            return
        subject = f'{resource.name}.{resource.group} "{name}"' if resource.group and name else \
            f'{resource.name} "{name}"' if name else \
            f"{resource.name}.{resource.group}" if resource.group else resource.name
        scope = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
        details: Obj = {"kind": resource.name, **({"name": name} if name else {}),
                        **({"group": resource.group} if resource.group else {})}
        raise ApiError(403, "Forbidden", f'{subject} is forbidden: User "{self.user}" cannot {verb} resource '
                       f'"{full}" in API group "{resource.group}"{scope}', details)

    def _discovery(self, path: str) -> Obj | None:
        if path == "/version":
            return SERVER_VERSION
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": self.base_url.split("://", 1)[1]}]}
        apps = {"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
                "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}}
        if path == "/apis":
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [apps]}
        if path == "/apis/apps":
            return {"kind": "APIGroup", "apiVersion": "v1", **apps}
        for prefix, group_version, group in (("/api/v1", "v1", ""), ("/apis/apps/v1", "apps/v1", "apps")):
            if path == prefix:
                resources = []
                for resource in _RESOURCES.values():
                    if resource.group == group:
                        resources.append(resource.discovery())
                        resources.extend(sub for key, sub in _SUBRESOURCES.items()
                                         if key.startswith(resource.name + "/"))
                return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
                        "resources": resources}
        return None

    def _list(self, resource: _Resource, namespace: str | None, query: dict[str, str]) -> Obj:
        labels = parse_label_selector(query.get("labelSelector"))
        fields = parse_field_selector(query.get("fieldSelector"), resource.fields, resource.name)
        store_ns = namespace if resource.namespaced else None
        items = [obj for obj in self.list(resource.name, store_ns)
                 if labels(obj["metadata"].get("labels") or {}) and fields(obj)]
        start = int(base64.b64decode(query["continue"]).decode()) if query.get("continue") else 0
        limit = _int(query, "limit") or 0
        page = items[start:start + limit] if limit > 0 else items[start:]
        meta: Obj = {"resourceVersion": str(max((int(o["metadata"]["resourceVersion"]) for o in items), default=1))}
        if limit > 0 and start + limit < len(items):
            meta["continue"] = base64.b64encode(str(start + limit).encode()).decode()
            meta["remainingItemCount"] = len(items) - start - limit
        for item in page:
            item.pop("apiVersion", None)
            item.pop("kind", None)
        return {"apiVersion": resource.api_version, "kind": f"{resource.kind}List", "metadata": meta, "items": page}

    def _patch_deployment(self, namespace: str, name: str, query: dict[str, str], content_type: str | None,
                          raw: bytes) -> Obj:
        old = self.get("deployments", namespace, name)
        new = apply_patch(old, content_type, raw)
        _reset_immutable(old, new)
        _check_version("deployments.apps", old, new)
        _validate_deployment(old, new)
        spec_changed = new["spec"] != old["spec"]
        if query.get("dryRun") == "All":
            if spec_changed:
                new["metadata"]["generation"] += 1
            return new
        return self.write_deployment(new, spec_changed=spec_changed)

    def _scale_of(self, dep: Obj) -> Obj:
        meta = dep["metadata"]
        return {"apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": {key: meta[key]
                             for key in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")},
                "spec": {"replicas": dep["spec"].get("replicas", 1)},
                "status": {"replicas": dep.get("status", {}).get("replicas", 0),
                           "selector": selector_string(dep["spec"]["selector"])}}

    def _scale_request(self, method: str, namespace: str, name: str, query: dict[str, str],
                       headers: dict[str, str], raw: bytes) -> Obj:
        dep = self.get("deployments", namespace, name)
        scale = self._scale_of(dep)
        if method == "GET":
            return scale
        if method == "PATCH":
            new = apply_patch(scale, headers.get("content-type"), raw)
        elif method == "PUT":
            new = _decode(raw, "application/json")
            if not isinstance(new, dict) or (new.get("metadata") or {}).get("name") != name:
                raise ApiError.bad_request(f'the name of the object ({(new or {}).get("metadata", {}).get("name")}) '
                                           f"does not match the name on the URL ({name})")
        else:
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on deployments/scale")
        new.setdefault("metadata", {})
        _check_version("deployments.apps", dep, new)
        replicas = (new.get("spec") or {}).get("replicas", 0)
        if (cause := _replicas_cause(replicas)) is not None:
            raise ApiError.invalid("Scale", name, "autoscaling", [cause])
        scale["spec"]["replicas"] = replicas
        if query.get("dryRun") == "All":
            return scale
        changed = replicas != dep["spec"].get("replicas", 1)
        dep["spec"]["replicas"] = replicas
        return self._scale_of(self.write_deployment(dep, spec_changed=changed))

    def _patch_node(self, name: str, query: dict[str, str], content_type: str | None, raw: bytes) -> Obj:
        old = self.get("nodes", "", name)
        new = apply_patch(old, content_type, raw)
        _reset_immutable(old, new)
        _check_version("nodes", old, new)
        unschedulable = (new.get("spec") or {}).get("unschedulable", False)
        if not isinstance(unschedulable, bool):
            raise ApiError.invalid("Node", name, "", [("spec.unschedulable",
                                                       f"Invalid value: {json.dumps(unschedulable)}: "
                                                       "must be a boolean")])
        if query.get("dryRun") == "All":
            return new
        taint = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
        taints = [t for t in new["spec"].get("taints") or [] if t.get("key") != taint["key"]]
        new["spec"]["taints"] = [*taints, taint] if unschedulable else taints
        if not new["spec"]["taints"]:
            del new["spec"]["taints"]
        with self.lock:
            self._touch(new)
            self._put("nodes", new)
        return copy.deepcopy(new)
