"""deploy/ (issue 13 §6): what `kubectl apply -k deploy/` creates, and the image it runs.

The base is rendered by the machine's kubectl (`kubectl kustomize`, as `apply -k` does), every
object is checked against the Kubernetes OpenAPI schemas (kubernetes-validate, strict: an unknown
field is an error), and then what the issue asks of it: two replicas under a PodDisruptionBudget
behind a Service, probes on the port the Service targets, a non-root pod on a read-only root, the
bot's settings from the Secret (the bot starts from exactly that environment), the RBAC of
rbac.yaml bound to the pod's ServiceAccount, and an Alertmanager receiver the real Alertmanager
delivers through. The image installs from requirements.lock alone, which pins every runtime
dependency with hashes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, requires
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import kubernetes_validate
import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from sqlalchemy import select

from bot.config import ConfigError, Settings, load_config_file, load_settings
from bot.models import Incident
from integrations.alertmanager import MAX_ALERTS
from tests.conftest import WEBHOOK_TOKEN, RunningBot, make_settings, service_unavailable, start_bot, wait_for
from tests.fakes.processes import start_alertmanager
from tests.fakes.slack import FakeSlack

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
LOCK = ROOT / "requirements.lock"
# Schemas kubernetes-validate ships (no network): the oldest release we support and a recent one.
KUBERNETES_VERSIONS = ("1.30", "1.33")
# The Secret's keys that the Deployment must not start without although one process may: replicas
# share one PostgreSQL and one Redis.
REQUIRED_FOR_REPLICAS = ("DATABASE_URL", "REDIS_URL")
# Settings the Deployment leaves at their defaults, and why.
DEFAULTED = {
    "SLACK_API_URL": "Slack itself; set only for a proxy or a fake",
    "PAGERDUTY_EVENTS_URL": "PagerDuty itself",
    "PAGERDUTY_API_URL": "PagerDuty itself",
    "PAGERDUTY_CA_FILE": "the public CAs",
    "RUNBOOKS_PATH": "the runbooks shipped in the image",
    "KUBECONFIG": "in-cluster credentials: the ServiceAccount's token",
    "ONCALL_JOB_LEASE_SECONDS": "15 s",
    "MAX_WEBHOOK_BYTES": "not read from the environment",
    "REDIS_KEY_PREFIX": "oncall-bot:, for one deployment per Redis",
    "SLACK_TIMEOUT_SECONDS": "15 s",
    "SLACK_RATE_LIMIT": "on: Slack's limits kept, shared through Redis",
}
# Environment variables the Deployment sets that are not bot.config settings.
NOT_SETTINGS = {"LOG_LEVEL": "commands/cli.py", "MPLCONFIGDIR": "matplotlib's cache directory"}


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        service_unavailable("kubectl (it renders deploy/: `kubectl kustomize`)", "apt-get install kubernetes-client")
    assert kubectl is not None
    done = subprocess.run([kubectl, "kustomize", str(DEPLOY)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"kubectl kustomize deploy/ failed: {done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, rendered {len(found)}"
    return found[0]


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = pod_spec(objects)["containers"]
    assert len(containers) == 1, "the pod runs the bot alone"
    return dict(containers[0])


def secret_example() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "secret.example.yaml").read_text())
    return document


def receiver_example() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "alertmanager-receiver.example.yml").read_text())
    return document


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# -- the objects ------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_is_valid_against_the_kubernetes_schemas(rendered: list[dict[str, Any]], version: str) -> None:
    invalid = []
    for obj in [*rendered, secret_example()]:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            invalid.append(f"{obj['kind']}/{obj['metadata']['name']}: {'.'.join(map(str, exc.path))}: {exc.message}")
    assert invalid == []


def test_strict_validation_catches_a_misspelt_field(rendered: list[dict[str, Any]]) -> None:
    # The check above is worth something only if the validator rejects what the API server would.
    deployment = yaml.safe_load(yaml.safe_dump(one(rendered, "Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {"httpGet": {"path": "/readyz"}}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinessprobe"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_the_base_is_the_bot_and_its_rbac_and_never_a_secret(rendered: list[dict[str, Any]]) -> None:
    kinds = sorted(o["kind"] for o in rendered)
    assert kinds == sorted(["Namespace", "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding",
                            "ConfigMap", "Deployment", "Service", "PodDisruptionBudget"])
    assert all(o["kind"] != "Secret" for o in rendered), "secrets are applied by hand (secret.example.yaml)"

    def key(obj: dict[str, Any]) -> tuple[str, str, str]:
        return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]

    rbac = {key(doc): doc for doc in yaml.safe_load_all((DEPLOY / "rbac.yaml").read_text()) if doc}
    # What tests/test_rbac.py checks is what is applied: kustomize moved and added nothing.
    assert {key(o): o for o in rendered if o["kind"] in {kind for kind, _, _ in rbac}} == rbac


def test_two_replicas_behind_the_service_and_the_disruption_budget(rendered: list[dict[str, Any]]) -> None:
    deployment, service = one(rendered, "Deployment"), one(rendered, "Service")
    budget = one(rendered, "PodDisruptionBudget")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert budget["spec"]["minAvailable"] == 1
    assert selects(deployment["spec"]["selector"]["matchLabels"], labels)
    assert selects(budget["spec"]["selector"]["matchLabels"], labels), "the budget must cover the bot's pods"
    assert selects(service["spec"]["selector"], labels), "the Service must send to the bot's pods"
    namespace = deployment["metadata"]["namespace"]
    assert budget["metadata"]["namespace"] == service["metadata"]["namespace"] == namespace
    assert one(rendered, "Namespace")["metadata"]["name"] == namespace


def test_probes_are_on_the_port_the_service_targets(rendered: list[dict[str, Any]]) -> None:
    bot = container(rendered)
    ports = {p["name"]: p["containerPort"] for p in bot["ports"]}

    def port_number(port: int | str) -> int:
        return ports[port] if isinstance(port, str) else port

    (service_port,) = one(rendered, "Service")["spec"]["ports"]
    target = port_number(service_port["targetPort"])
    assert target in ports.values()
    assert bot["args"][bot["args"].index("--port") + 1] == str(target), "the bot must listen where the Service sends"
    probes = {kind: bot[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert {kind: port_number(get["port"]) for kind, get in probes.items()} == dict.fromkeys(probes, target)
    assert probes["livenessProbe"]["path"] == probes["startupProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"


def test_the_probe_and_webhook_paths_answer_on_the_bot(
        rendered: list[dict[str, Any]], slack: FakeSlack, running: list[RunningBot], tmp_path: Path) -> None:
    bot = start_bot(make_settings(f"sqlite:///{tmp_path / 'oncall.db'}", slack))
    running.append(bot)
    probes = container(rendered)
    with bot.client() as http:
        assert http.get(probes["livenessProbe"]["httpGet"]["path"]).json() == {"status": "alive"}
        ready = http.get(probes["readinessProbe"]["httpGet"]["path"])
        assert ready.status_code == 200, ready.text
        webhook = http.post(urlsplit(receiver_config()["url"]).path, json={})
    assert webhook.status_code == 401, "the receiver's path is the webhook, and it wants the bearer token"


def test_the_pod_runs_as_the_images_user_non_root_on_a_read_only_root(rendered: list[dict[str, Any]]) -> None:
    pod, bot = pod_spec(rendered), container(rendered)
    effective = {**pod["securityContext"], **bot["securityContext"]}  # the container's settings win
    assert effective["runAsNonRoot"] is True
    assert effective["runAsUser"] == image_user() != 0
    assert effective["readOnlyRootFilesystem"] is True
    assert effective["allowPrivilegeEscalation"] is False
    assert effective["capabilities"] == {"drop": ["ALL"]}
    assert effective["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in effective
    # What must be writable is on an emptyDir: temporary files and matplotlib's font cache.
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    writable = [m["mountPath"] for m in bot["volumeMounts"] if m["name"] in empty_dirs and not m.get("readOnly")]
    assert "/tmp" in writable
    cache = plain_env(rendered)["MPLCONFIGDIR"]
    assert any(cache.startswith(path + "/") for path in writable), f"MPLCONFIGDIR={cache} is not writable"
    for kind in ("requests", "limits"):
        assert set(bot["resources"][kind]) == {"cpu", "memory"}, f"resources.{kind}"


# -- the bot's settings ---------------------------------------------------------------------------

def plain_env(rendered: list[dict[str, Any]]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(rendered)["env"] if "value" in e}


def secret_refs(rendered: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container(rendered)["env"]
            if "secretKeyRef" in e.get("valueFrom", {})}


def example_value(key: str) -> str:
    """The example's value, or for an optional key it leaves empty a valid stand-in, so that every
    setting is seen arriving."""
    value = str(secret_example()["stringData"][key])
    if value:
        return value
    return f"https://{key.lower().replace('_', '-')}.example.com" if key.endswith("_URL") else "v" * 32


def config_file(rendered: list[dict[str, Any]], tmp_path: Path) -> tuple[str, Path]:
    """ONCALL_CONFIG as the pod sees it, and a copy of that file from the rendered ConfigMap."""
    path = plain_env(rendered)["ONCALL_CONFIG"]
    pod, bot = pod_spec(rendered), container(rendered)
    (mount,) = [m for m in bot["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    config_map = one(rendered, "ConfigMap", volume["configMap"]["name"])  # kustomize renamed both alike
    copy = tmp_path / "config.yaml"
    copy.write_text(config_map["data"][path.removeprefix(mount["mountPath"].rstrip("/") + "/")], encoding="utf-8")
    return path, copy


def pod_environment(rendered: list[dict[str, Any]], tmp_path: Path) -> dict[str, str]:
    """The environment the bot gets in the pod, from the example Secret and the ConfigMap."""
    refs, secret = secret_refs(rendered), secret_example()
    assert {ref["name"] for ref in refs.values()} == {secret["metadata"]["name"]}
    assert secret["metadata"]["namespace"] == one(rendered, "Deployment")["metadata"]["namespace"]
    missing = {ref["key"] for ref in refs.values()} ^ set(secret["stringData"])
    assert missing == set(), "the example Secret and the Deployment must name the same keys"
    env = {**plain_env(rendered), **{name: example_value(ref["key"]) for name, ref in refs.items()}}
    env["ONCALL_CONFIG"] = str(config_file(rendered, tmp_path)[1])
    return env


def env_name(field: str) -> str:
    return {"config": "ONCALL_CONFIG", "job_lease_seconds": "ONCALL_JOB_LEASE_SECONDS"}.get(field, field.upper())


def test_the_bot_starts_from_the_pods_environment(rendered: list[dict[str, Any]], tmp_path: Path) -> None:
    env = pod_environment(rendered, tmp_path)
    settings = load_settings(env)
    for name in secret_refs(rendered):  # a misspelt name would leave its setting at the default
        assert getattr(settings, name.lower()) == env[name], name
    assert settings.config == load_config_file(env["ONCALL_CONFIG"])
    assert settings.database_url.startswith("postgresql"), "two replicas cannot share a SQLite file"


def test_every_setting_the_bot_reads_is_set_or_deliberately_defaulted(rendered: list[dict[str, Any]]) -> None:
    settings = {env_name(field) for field in Settings.model_fields}
    set_here = {e["name"] for e in container(rendered)["env"]}
    assert set_here - settings == set(NOT_SETTINGS), "an environment variable the bot does not read"
    assert settings - set_here == set(DEFAULTED), "a setting of bot.config that deploy/ neither sets nor defaults"


def test_what_the_bot_cannot_start_without_is_a_required_secret_key(
        rendered: list[dict[str, Any]], tmp_path: Path) -> None:
    refs = secret_refs(rendered)
    optional = {name for name, ref in refs.items() if ref.get("optional")}
    env = {k: v for k, v in pod_environment(rendered, tmp_path).items() if k not in optional}
    load_settings(env)  # the Secret's optional keys missing: a key the bot needs was marked optional otherwise

    def needed(name: str) -> bool:
        try:
            load_settings({k: v for k, v in env.items() if k != name})
        except ConfigError:
            return True
        return False

    required = {name for name in set(refs) - optional if needed(name)}
    assert required, "the bot needs its Slack tokens at least"
    assert set(refs) - optional == required | set(REQUIRED_FOR_REPLICAS), \
        "a key the bot can start without must be optional: a missing one would keep the pod from starting"


def test_runbook_namespaces_are_the_ones_the_role_is_bound_in(
        rendered: list[dict[str, Any]], tmp_path: Path) -> None:
    config = load_config_file(config_file(rendered, tmp_path)[1])
    bound = {o["metadata"]["namespace"] for o in rendered if o["kind"] == "RoleBinding"}
    assert config.runbooks.namespaces, "the example allows a namespace, to show where the Role goes"
    assert set(config.runbooks.namespaces) <= bound


def test_the_rbac_is_bound_to_the_pods_service_account(rendered: list[dict[str, Any]]) -> None:
    deployment = one(rendered, "Deployment")
    account = one(rendered, "ServiceAccount", pod_spec(rendered)["serviceAccountName"])
    assert account["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    subject = {"kind": "ServiceAccount", "name": account["metadata"]["name"],
               "namespace": account["metadata"]["namespace"]}
    bindings = [o for o in rendered if o["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    assert {o["kind"] for o in bindings} == {"RoleBinding", "ClusterRoleBinding"}
    for binding in bindings:
        assert binding["subjects"] == [subject], binding["metadata"]["name"]
        role = one(rendered, binding["roleRef"]["kind"], binding["roleRef"]["name"])
        assert role["metadata"].get("namespace") == binding["metadata"].get("namespace")


# -- Alertmanager ----------------------------------------------------------------------------------

def receiver_config() -> dict[str, Any]:
    example = receiver_example()
    assert example["route"]["receiver"] == "oncall-bot"
    (receiver,) = [r for r in example["receivers"] if r["name"] == "oncall-bot"]
    (webhook,) = receiver["webhook_configs"]
    return dict(webhook)


def test_the_receiver_example_points_at_the_service_with_the_bearer_token(rendered: list[dict[str, Any]]) -> None:
    service, webhook = one(rendered, "Service"), receiver_config()
    url = urlsplit(webhook["url"])
    assert url.hostname == f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc"
    assert url.port == service["spec"]["ports"][0]["port"]
    assert url.path == "/alertmanager"
    assert webhook["send_resolved"] is True
    assert 0 < webhook["max_alerts"] <= MAX_ALERTS
    auth = webhook["http_config"]["authorization"]
    assert auth["type"] == "Bearer" and auth["credentials_file"] and "credentials" not in auth
    amtool = shutil.which("amtool")
    if amtool is None:
        service_unavailable("amtool (it checks the example)", "apt-get install prometheus-alertmanager")
    assert amtool is not None
    done = subprocess.run([amtool, "check-config", str(DEPLOY / "alertmanager-receiver.example.yml")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_real_alertmanager_delivers_through_the_example_receiver(
        slack: FakeSlack, running: list[RunningBot], tmp_path: Path) -> None:
    bot = start_bot(make_settings(f"sqlite:///{tmp_path / 'oncall.db'}", slack))
    running.append(bot)
    token = tmp_path / "token"
    token.write_text(WEBHOOK_TOKEN + "\n")  # as a Secret file usually ends
    config = receiver_example()
    config["route"].update(group_wait="1s", group_interval="1s")  # the example's waits, shortened for a test
    webhook = config["receivers"][0]["webhook_configs"][0]
    webhook["url"] = bot.url + urlsplit(webhook["url"]).path  # the Service's address, here the bot's
    webhook["http_config"]["authorization"]["credentials_file"] = str(token)
    manager = start_alertmanager(yaml.safe_dump(config), tmp_path / "am")
    try:
        now = datetime.now(UTC)
        httpx.post(f"{manager.url}/api/v2/alerts", timeout=5, json=[{
            "labels": {"alertname": "KubePodCrashLooping", "severity": "critical", "namespace": "prod"},
            "annotations": {"summary": "web is crash looping"},
            "startsAt": (now - timedelta(minutes=1)).isoformat()}]).raise_for_status()
        incidents = wait_for(lambda: _incidents(bot), timeout=20, what="the incident from Alertmanager's webhook")
    finally:
        manager.stop()
    assert [(i.alertname, i.labels["namespace"]) for i in incidents] == [("KubePodCrashLooping", "prod")]


def _incidents(bot: RunningBot) -> list[Incident]:
    with bot.services.db.read() as session:
        return list(session.scalars(select(Incident)))


# -- the image -------------------------------------------------------------------------------------

def locked() -> dict[str, tuple[Version, int]]:
    """requirements.lock: name -> (version, number of hashes)."""
    pins: dict[str, tuple[Version, int]] = {}
    for entry in re.split(r"\n(?=\S)", LOCK.read_text()):
        if match := re.match(r"([A-Za-z0-9._-]+)==(\S+)", entry):
            hashes = re.findall(r"--hash=sha256:[0-9a-f]{64}", entry)
            pins[canonicalize_name(match[1])] = (Version(match[2]), len(hashes))
    return pins


def project() -> dict[str, Any]:
    document: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return document


def runtime_closure() -> Iterator[Requirement]:
    """pyproject's dependencies and theirs, with extras and markers evaluated for this Python
    (the image's: Python 3.11 on Linux)."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [Requirement(r) for r in project()["project"]["dependencies"]]
    while todo:
        requirement = todo.pop()
        key = (canonicalize_name(requirement.name), frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        yield requirement
        try:
            declared = requires(requirement.name) or []
        except PackageNotFoundError:
            pytest.fail(f"{requirement.name} is not installed: .venv/bin/pip install -e '.[test]'")
        for text in declared:
            child = Requirement(text)
            environments = [{**default_environment(), "extra": e} for e in requirement.extras or {""}]
            if child.marker is None or any(child.marker.evaluate(env) for env in environments):
                todo.append(child)


def test_the_lock_pins_every_runtime_dependency_with_hashes() -> None:
    pins = locked()
    unhashed = [name for name, (_, hashes) in pins.items() if hashes == 0]
    assert pins and unhashed == [], "pip install --require-hashes refuses a pin without a hash"
    direct = [Requirement(r) for r in project()["project"]["dependencies"]]
    for requirement in direct + [Requirement(r) for r in project()["build-system"]["requires"]]:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in requirements.lock: regenerate it (its header says how)"
        assert requirement.specifier.contains(pins[name][0], prereleases=True), \
            f"requirements.lock pins {name}=={pins[name][0]}, outside pyproject's {requirement}"
    missing = sorted({canonicalize_name(r.name) for r in runtime_closure()} - set(pins))
    assert missing == [], f"dependencies of dependencies missing from requirements.lock: {missing}"


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    return [(line.split()[0].upper(), line.split(None, 1)[1]) for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def image_user() -> int:
    instructions = dockerfile_instructions()
    users = [args.strip() for kind, args in instructions if kind == "USER"]
    assert users and users[-1].isdigit(), "USER must be numeric: Kubernetes' runAsNonRoot checks the number"
    created = re.findall(r"useradd\b[^&;]*--uid (\d+)", " ".join(args for kind, args in instructions if kind == "RUN"))
    assert created == [users[-1]], "the user the image runs as is the one it creates"
    return int(users[-1])


def test_the_image_installs_from_the_lock_only() -> None:
    instructions = dockerfile_instructions()
    installs = [cmd for kind, args in instructions if kind == "RUN"
                for cmd in re.split(r"&&|;", args) if re.search(r"\bpip install\b", cmd)]
    from_lock = [cmd for cmd in installs if "-r requirements.lock" in cmd]
    assert len(from_lock) == 1 and "--require-hashes" in from_lock[0], installs
    assert all("--no-deps" in cmd for cmd in installs), "only the lock may bring packages in"
    assert all("--no-build-isolation" in cmd for cmd in installs if cmd not in from_lock), \
        "build isolation would fetch an unpinned setuptools"
    assert ("COPY", "requirements.lock ./") in instructions
    base = next(args for kind, args in instructions if kind == "FROM")
    python = re.search(r"python:(\d+\.\d+)", base)
    assert python and f"with Python {python[1]}\n" in LOCK.read_text(), "the lock is resolved for the image's Python"
