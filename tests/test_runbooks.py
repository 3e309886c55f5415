"""Runbooks: format, loading, matching, templating, parameter validation, lint, Block Kit.

No clients are needed: executors are tested end to end elsewhere. Here the point is that
what reaches an executor has been rendered in a sandbox and validated.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from bot import action_params, actions, param_syntax
from bot.action_params import ParamContext, ParamError
from bot.action_runner import run_action, validate_params
from bot.actions import ActionContext, ActionError
from bot.runbook_format import Runbook, localized, runbook_schema
from bot.runbook_lint import lint
from bot.runbook_templates import render_params
from bot.runbooks import SHIPPED_DIR, RunbookError, load_runbooks, paths_from_env, prepare_steps
from commands.blockkit import LIMITS
from commands.runbook_blocks import markdown_to_mrkdwn, no_runbook_blocks, runbook_messages
from tests.fakes.slack_blocks import validate_blocks

DATA = Path(__file__).parent / "data" / "runbooks"
GOOD = DATA / "good"
BROKEN = DATA / "broken"
PROD = ["production"]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def minimal(runbook_id: str, match: str, steps: str = "[{id: a, title: A, text: A}]", extra: str = "") -> str:
    return f"id: {runbook_id}\ntitle: {runbook_id}\nmatch: {match}\n{extra}steps: {steps}\n"


@pytest.fixture(scope="module")
def shipped():
    return load_runbooks([])


@pytest.fixture(scope="module")
def good():
    return load_runbooks([GOOD], include_shipped=False)


# -- loading and schema ---------------------------------------------------------------------------

def test_loads_the_list_form_with_origins(good):
    assert [rb.id for rb in good] == ["web-down", "web-any"]
    assert good.origin("web-down") == f"{GOOD / 'web.yaml'}:2"
    assert good.origin("web-any") == f"{GOOD / 'web.yaml'}:57"
    assert good.warnings == []


def test_shipped_runbooks_are_included_by_default(shipped):
    assert len(shipped) == 13
    assert all(Path(shipped.origin(rb.id).split(":")[0]).parent == SHIPPED_DIR for rb in shipped)


def test_extra_fields_are_rejected():
    raw = {"id": "x", "title": "X", "match": {"alertname": "A"}, "steps": [{"id": "a", "title": "A", "text": "A"}]}
    Runbook.model_validate(raw)
    for where in (raw, raw["steps"][0], raw["match"]):
        where["bogus"] = 1
        with pytest.raises(ValidationError, match="bogus"):
            Runbook.model_validate(raw)
        del where["bogus"]


def test_schema_names_the_actions_and_forbids_extras():
    schema = runbook_schema()
    defs = schema["$defs"]
    assert defs["Runbook"]["additionalProperties"] is False
    assert defs["Step"]["additionalProperties"] is False
    assert defs["ActionRef"]["properties"]["type"]["enum"] == actions.action_names()
    assert {"id", "title", "match", "steps"} <= set(defs["Runbook"]["required"])
    assert len(schema["anyOf"]) == 2  # one runbook, or a list of them


def test_broken_files_refuse_to_load():
    with pytest.raises(RunbookError) as caught:
        load_runbooks([BROKEN / "actions.yaml"])
    assert caught.value.problems == lint([BROKEN / "actions.yaml"])
    assert "unknown action 'shell.exec'" in str(caught.value)


def test_paths_from_env():
    assert paths_from_env("/a:/b::") == [Path("/a"), Path("/b")]
    assert paths_from_env(None) == []


# -- locale ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("locale", "expected"), [
    ("ja-JP", "ジャ"), ("ja", "ジャ"), ("ja_JP", "ジャ"), ("fr-FR", "en"), (None, "en"), ("en-US", "en"),
    ("zh-TW", "繁"), ("zh-CN", "en"),
])
def test_localized_picks_the_language_with_english_fallback(locale, expected):
    assert localized({"en": "en", "ja": "ジャ", "zh-TW": "繁"}, locale) == expected


def test_localized_plain_string_is_the_same_in_every_locale():
    assert localized("just text", "ja-JP") == "just text"


def test_text_maps_need_english(tmp_path):
    path = write(tmp_path, "x.yaml", minimal("x", "{alertname: A}", "[{id: a, title: {ja: あ}, text: A}]"))
    assert [str(p) for p in lint([path])] == [
        f"{path}:4: steps[0].title: a per-language map needs an 'en' entry (the fallback)"]


# -- matching ----------------------------------------------------------------------------------------

def test_best_match_by_priority_then_specificity(tmp_path):
    write(tmp_path, "a.yaml", minimal("generic", "{alertname: HighLatency}"))
    write(tmp_path, "b.yaml", minimal("payments", "{alertname: HighLatency, labels: {team: payments}}"))
    write(tmp_path, "c.yaml", minimal("pay-regex", "{alertname: HighLatency, labels: {team: {regex: 'pay.*'}}, "
                                                   "priority: -1}"))
    write(tmp_path, "d.yaml", minimal("urgent", "{alertname: {regex: 'High.*'}, labels: {env: prod}, priority: 5}"))
    runbooks = load_runbooks([tmp_path], include_shipped=False)
    assert runbooks.best_match({"alertname": "HighLatency"}).id == "generic"
    assert runbooks.best_match({"alertname": "HighLatency", "team": "payments"}).id == "payments"
    assert runbooks.best_match({"alertname": "HighLatency", "team": "payroll"}).id == "generic"
    assert runbooks.best_match({"alertname": "HighCPU", "env": "prod", "team": "payments"}).id == "urgent"
    assert runbooks.best_match({"alertname": "Other"}) is None


def test_regex_matchers_match_the_whole_value(tmp_path):
    write(tmp_path, "a.yaml", minimal("a", "{alertname: {regex: 'Redis(Down|Gone)'}}"))
    runbooks = load_runbooks([tmp_path], include_shipped=False)
    assert runbooks.best_match({"alertname": "RedisDown"}).id == "a"
    assert runbooks.best_match({"alertname": "RedisDownAgain"}) is None
    assert runbooks.best_match({"alertname": "XRedisDown"}) is None


def test_a_teams_runbook_beats_and_replaces_shipped_ones(tmp_path):
    write(tmp_path, "a.yaml", minimal("ours", "{alertname: ServiceDown}"))
    write(tmp_path, "b.yaml", minimal("redis-down", "{alertname: RedisDown}"))
    runbooks = load_runbooks([tmp_path])
    assert runbooks.best_match({"alertname": "ServiceDown"}).id == "ours"
    assert runbooks.get("redis-down").title == "redis-down"
    assert [rb.id for rb in runbooks].count("redis-down") == 1


def test_equal_rank_overlaps_are_lint_errors():
    path = BROKEN / "overlap.yaml"
    assert [str(p) for p in lint([path])] == [
        f"{path}:7: match may select the same alerts as runbook 'latency-a' ({path}:1) at the same priority 0; "
        "give one a higher priority",
    ]


# -- templating ----------------------------------------------------------------------------------------

def test_templates_fill_from_labels_annotations_and_alertname():
    rendered = render_params({"a": "{{ labels.namespace }}/{{ annotations.summary }}", "b": "{{ alertname }}",
                              "n": 5, "f": True}, {"alertname": "X", "namespace": "prod"}, {"summary": "s"})
    assert rendered == {"a": "prod/s", "b": "X", "n": 5, "f": True}


@pytest.mark.parametrize("template", [
    "{{ labels.__class__ }}", "{{ labels.__class__.__mro__[1].__subclasses__() }}", "{{ labels.pop('a') }}",
    "{{ ''.__class__ }}", "{{ labels.items.__self__ }}",
])
def test_the_sandbox_refuses_attribute_tricks(template):
    with pytest.raises(ParamError, match="unsafe"):
        render_params({"p": template}, {"alertname": "X", "a": "1"}, {})


@pytest.mark.parametrize("template", ["{{ range(10) }}", "{{ lipsum() }}", "{{ cycler }}", "{{ config }}"])
def test_templates_see_no_globals(template):
    with pytest.raises(ParamError, match="is undefined"):
        render_params({"p": template}, {"alertname": "X"}, {})


def test_label_values_are_data_not_templates():
    assert render_params({"p": "{{ labels.evil }}"}, {"evil": "{{ 7 * 7 }}"}, {}) == {"p": "{{ 7 * 7 }}"}


def test_a_missing_label_disables_the_step_with_the_reason(good):
    steps = prepare_steps(good.get("web-down"), {"alertname": "WebDown", "namespace": "prod-eu", "service": "web"},
                          {}, [])
    logs = steps[1]
    assert (logs.action, logs.enabled, logs.params) == ("k8s.logs", False, None)
    assert logs.error == "pod: the alert has no label 'pod'"
    assert steps[0].enabled and steps[0].params.selector == "app=web,tier in (web,edge)"


def test_a_missing_annotation_says_so(shipped):
    steps = prepare_steps(shipped.get("service-down"), ALERTS["ServiceDown"], {}, PROD)
    health = next(s for s in steps if s.step.id == "health")
    assert health.error == "url: the alert has no annotation 'health_url'"


def test_defaults_and_empty_optionals(good):
    labels = {"alertname": "WebDown", "namespace": "prod-us", "service": "web", "pod": "web-1"}
    steps = prepare_steps(good.get("web-down"), labels, {}, [])
    logs, health, scale = steps[1], steps[2], steps[3]
    assert logs.params.container is None  # rendered empty: left out
    assert health.params.url == "https://web.example.com/health"
    assert scale.params.replicas == 4
    with_container = prepare_steps(good.get("web-down"), {**labels, "container": "app"}, {"replicas": "6"}, [])
    assert with_container[1].params.container == "app"
    assert with_container[3].params.replicas == 6


# -- validation --------------------------------------------------------------------------------------

def service_down_steps(shipped, labels, annotations=None, namespaces=PROD):
    steps = prepare_steps(shipped.get("service-down"), labels, annotations or {}, namespaces)
    return {s.step.id: s for s in steps}


def test_a_namespace_outside_the_allow_list_disables_the_step(shipped):
    steps = service_down_steps(shipped, {**ALERTS["ServiceDown"], "namespace": "kube-system"})
    assert steps["pods"].params is None
    assert steps["pods"].error == ("namespace: namespace 'kube-system' is not in the allow-list (allowed: production); "
                                   "add it to the runbook's `namespaces` or to the bot's configuration")
    assert steps["restart"].error.startswith("namespace: namespace 'kube-system' is not in the allow-list")


def test_no_allow_list_allows_no_namespace(shipped):
    steps = service_down_steps(shipped, ALERTS["ServiceDown"], namespaces=[])
    assert "allowed: none" in steps["pods"].error


@pytest.mark.parametrize("pod", ["web;rm -rf", "web rm", "Web-1", "-web", "web/../x", "a" * 254, "web\n1", ""])
def test_non_rfc1123_names_disable_the_step(shipped, pod):
    steps = service_down_steps(shipped, {**ALERTS["ServiceDown"], "pod": pod})
    assert steps["logs"].params is None
    assert steps["logs"].error.startswith("pod: ")
    assert not steps["logs"].enabled


def test_injection_through_a_label_cannot_reach_the_selector(shipped):
    steps = service_down_steps(shipped, {**ALERTS["ServiceDown"], "service": "web,env in (prod),x=$(reboot)"})
    assert steps["pods"].params is None and "is not a" in steps["pods"].error


@pytest.mark.parametrize(("replicas", "ok"), [("1", False), ("2", True), ("8", True), ("9", False), ("-1", False),
                                              ("many", False)])
def test_replicas_within_the_runbooks_bounds(good, replicas, ok):
    labels = {"alertname": "WebDown", "namespace": "prod-eu", "service": "web", "pod": "web-1"}
    scale = prepare_steps(good.get("web-down"), labels, {"replicas": replicas}, [])[3]
    assert scale.enabled is ok
    assert (scale.params is not None) is ok
    if not ok:
        assert scale.error.startswith("replicas: ")


def test_http_check_only_fetches_allow_listed_urls(good):
    labels = {"alertname": "WebDown", "namespace": "prod-eu", "service": "web", "pod": "web-1"}
    for url, ok in [("https://web.example.com/health", True), ("https://web.example.com/health/db", True),
                    ("https://web.example.com/healthz", False), ("http://web.example.com/health", False),
                    ("https://web.example.com@169.254.169.254/health", False),
                    ("https://web.example.com/health/../admin", False), ("https://evil.example.com/health", False),
                    ("file:///etc/passwd", False)]:
        health = prepare_steps(good.get("web-down"), labels, {"health_url": url}, [])[2]
        assert health.enabled is ok, url


def test_config_allow_lists_extend_the_runbooks(good):
    labels = {"alertname": "WebDown", "namespace": "prod-eu", "service": "web", "pod": "web-1"}
    steps = prepare_steps(good.get("web-down"), labels, {"health_url": "https://status.example.com/ok"}, [],
                          allowed_urls=["https://status.example.com/"])
    assert steps[2].enabled


def test_validation_without_a_context_fails_closed():
    with pytest.raises(ValidationError, match="not in the allow-list"):
        action_params.PodsParams.model_validate({"namespace": "production"})


CTX = ParamContext(namespaces=frozenset({"production"}), urls=("https://api.example.com/",), scale=(1, 10))


@pytest.mark.parametrize(("action", "params", "error"), [
    ("k8s.logs", {"namespace": "production", "pod": "web-1", "tail_lines": 0}, "tail_lines: Input should be greater"),
    ("k8s.logs", {"namespace": "production", "pod": "web-1", "tail_lines": 5001}, "tail_lines: Input should be less"),
    ("k8s.logs", {"namespace": "production", "pod": "web-1", "follow": True}, "follow: unknown parameter"),
    ("k8s.events", {"namespace": "production", "kind": "Secret"}, "kind: Input should be"),
    ("k8s.scale", {"namespace": "production", "deployment": "web", "replicas": 11}, "outside the runbook's bounds"),
    ("k8s.cordon", {"node": "node_1"}, "node: 'node_1' is not an RFC 1123 DNS subdomain"),
    ("alertmanager.silence", {"matchers": 'alertname="X"', "duration": "25h"}, "duration '25h' is outside 1m..24h"),
    ("alertmanager.silence", {"matchers": 'alertname="X"', "duration": "forever"}, "is not a duration"),
    ("alertmanager.silence", {"matchers": 'severity="critical"'}, 'matchers must include alertname='),
    ("alertmanager.silence", {"matchers": 'alertname=~".*"'}, 'matchers must include alertname='),
    ("alertmanager.silence", {"matchers": 'alertname="X", a=~"("'}, "invalid regular expression"),
    ("prometheus.query", {"query": 'up{job="a"'}, "unterminated"),
    ("prometheus.query", {"query": "up", "range": "30d"}, "outside 1m..7d"),
    ("http.check", {"url": "https://api.example.com/x", "timeout_seconds": 60}, "timeout_seconds"),
])
def test_parameter_models_refuse(action, params, error):
    with pytest.raises(ParamError, match=None) as caught:
        validate_params(action, params, CTX)
    assert error in str(caught.value)


@pytest.mark.parametrize(("text", "canonical"), [
    ("", ""), ("app=web", "app=web"), ("app==web", "app=web"), (" app = web , tier!=db", "app=web,tier!=db"),
    ("env in (a, b),!canary,release", "env in (a,b),!canary,release"),
    ("app.kubernetes.io/name=web", "app.kubernetes.io/name=web"), ("x notin (a)", "x notin (a)"),
])
def test_label_selectors_are_parsed_into_canonical_form(text, canonical):
    assert param_syntax.parse_label_selector(text) == canonical


@pytest.mark.parametrize("text", ["app=web;ls", "app=$(id)", "app=web,", "app in (a", "app=web extra", "=web",
                                  "app=" + "x" * 64, "!app=web", "app>1", "a b"])
def test_bad_label_selectors_are_refused(text):
    with pytest.raises(ValueError):
        param_syntax.parse_label_selector(text)


def test_silence_matchers_in_the_api_shape():
    matchers = param_syntax.parse_silence_matchers('{alertname="Disk \\"Low\\"", instance!~"10\\\\..*"}')
    assert [m.api() for m in matchers] == [
        {"name": "alertname", "value": 'Disk "Low"', "isRegex": False, "isEqual": True},
        {"name": "instance", "value": "10\\..*", "isRegex": True, "isEqual": False},
    ]
    params = validate_params("alertmanager.silence", {"matchers": 'alertname = "X",a="b"', "duration": "90m"}, CTX)
    assert params.matchers == 'alertname="X", a="b"'


def test_durations():
    assert param_syntax.parse_duration("1h30m").total_seconds() == 5400
    assert param_syntax.parse_duration("2d").days == 2
    with pytest.raises(ValueError):
        param_syntax.parse_duration("1.5h")


def test_params_round_trip_through_json():
    """The step table stores params as JSON; re-validating at click time gives the same model."""
    params = validate_params("k8s.pods", {"namespace": "production", "selector": "app = web"}, CTX)
    again = validate_params("k8s.pods", params.model_dump(mode="json"), CTX)
    assert again == params


def test_every_action_is_described_once():
    names = actions.action_names()
    assert len(names) == len(set(names)) == 13
    kinds = {spec.name: spec.kind for spec in actions.ACTIONS}
    assert {n for n, k in kinds.items() if k == "diagnostic"} == {
        "k8s.pods", "k8s.logs", "k8s.events", "k8s.deployment", "prometheus.query", "http.check"}
    for spec in actions.ACTIONS:
        assert spec.params.model_config["extra"] == "forbid"
        assert set(spec.label) == {"en", "ja"}
        assert spec.kind == "remediation" or spec.risk == "low"


def test_an_unconfigured_client_is_a_clear_error():
    params = validate_params("k8s.pods", {"namespace": "production"}, CTX)
    with pytest.raises(ActionError, match="Kubernetes is not configured: set KUBECONFIG"):
        asyncio.run(run_action("k8s.pods", params, ActionContext()))
    query = validate_params("prometheus.query", {"query": "up"}, CTX)
    with pytest.raises(ActionError, match="Prometheus is not configured: set PROMETHEUS_URL"):
        asyncio.run(run_action("prometheus.query", query, ActionContext()))


def test_unvalidated_parameters_never_reach_an_executor():
    calls: list[tuple[str, str]] = []
    kube = SimpleNamespace(list_pods=lambda ns, sel: calls.append((ns, sel)) or [])
    for params in ({"namespace": "kube-system"}, action_params.LogsParams.model_construct(namespace="x", pod="y")):
        with pytest.raises(ActionError, match="parameters of the wrong kind"):
            asyncio.run(run_action("k8s.pods", params, ActionContext(kubernetes=kube)))  # type: ignore[arg-type]
    assert calls == []


def test_integration_errors_become_action_errors():
    from integrations.kubernetes import NotFoundError

    def missing(namespace: str, name: str) -> None:
        raise NotFoundError(404, "NotFound", f'deployments.apps "{name}" not found')

    params = validate_params("k8s.deployment", {"namespace": "production", "deployment": "web"}, CTX)
    message = 'Deployment status failed: 404 NotFound: deployments.apps "web" not found'
    with pytest.raises(ActionError, match=re.escape(message)):
        asyncio.run(run_action("k8s.deployment", params,
                               ActionContext(kubernetes=SimpleNamespace(deployment_status=missing))))


def test_pods_are_a_readable_table():
    pod = SimpleNamespace(name="web-1", ready="1/1", phase="Running", reason=None, restarts=0, age_seconds=7200,
                          node="n1")
    crashing = SimpleNamespace(name="web-2", ready="0/1", phase="Running", reason="CrashLoopBackOff", restarts=7,
                               age_seconds=300, node=None)
    calls = []
    kube = SimpleNamespace(list_pods=lambda ns, sel: calls.append((ns, sel)) or [pod, crashing])
    params = validate_params("k8s.pods", {"namespace": "production", "selector": "app=web"}, CTX)
    output = asyncio.run(run_action("k8s.pods", params, ActionContext(kubernetes=kube)))
    assert calls == [("production", "app=web")]
    assert output.text.splitlines() == [
        "NAME    READY   STATUS             RESTARTS   AGE   NODE",
        "web-1   1/1     Running            0          2h    n1",
        "web-2   0/1     CrashLoopBackOff   7          5m    <none>",
    ]
    assert output.summary == "2 pods in production matching app=web: 1 ready, 7 restarts"


# -- lint --------------------------------------------------------------------------------------------

def test_good_files_lint_clean():
    assert lint([GOOD]) == []


def test_all_shipped_runbooks_pass_lint():
    assert [str(p) for p in lint([SHIPPED_DIR])] == []


def lint_lines(name: str) -> list[str]:
    return [str(p) for p in lint([BROKEN / name])]


def test_lint_schema_errors():
    f = BROKEN / "schema.yaml"
    assert lint_lines("schema.yaml") == [
        f"{f}:1: id: 'Web_Down' is not an id: lowercase letters, digits and '-', at most 64 characters",
        f"{f}:5: match.labels.namespace: invalid regular expression '(': missing ), unterminated subpattern at "
        "position 0",
        f"{f}:7: steps[0]: missing field 'title'",
        f"{f}:8: steps[0]: unknown field 'titel'",
        f"{f}:11: steps[1].title: a per-language map needs an 'en' entry (the fallback)",
    ]


def test_lint_unknown_actions():
    f = BROKEN / "actions.yaml"
    assert lint_lines("actions.yaml") == [
        f"{f}:10: steps[0].action.type: unknown action 'shell.exec'; known: {', '.join(actions.action_names())}"]


def test_lint_parameters():
    f = BROKEN / "params.yaml"
    assert lint_lines("params.yaml") == [
        f"{f}:8: steps[0].action: k8s.logs needs parameter 'pod'",
        f"{f}:12: steps[0].action.params.tail_lines: Input should be less than or equal to 5000",
        f"{f}:13: steps[0].action.params: k8s.logs has no parameter 'lines' (it takes namespace, pod, tail_lines, "
        "container, previous)",
        f"{f}:17: steps[1].action: k8s.scale needs the runbook's scale: {{min, max}}",
        f"{f}:23: warning: steps[2].risk: low is below k8s.rollout_undo's own risk high, which applies",
        f"{f}:26: steps[2].action.params.namespace: 'web;rm -rf' is not an RFC 1123 DNS label (lowercase letters, "
        "digits and '-', 1-63 characters, alphanumeric at both ends)",
    ]


def test_lint_templates():
    f = BROKEN / "templates.yaml"
    assert lint_lines("templates.yaml") == [
        f"{f}:11: steps[0].action.params.namespace: unknown variable 'label'; templates see only labels, "
        "annotations and alertname",
        f"{f}:12: warning: steps[0].action.params.selector: label 'app' is not guaranteed by the match; require it "
        "in match.labels, list it in expects, or give a default",
        f"{f}:20: steps[1].action.params.pod: labels.__class__ is not a name an alert can carry",
        f"{f}:21: steps[1].action.params.container: template syntax error: unexpected '}}'",
    ]


def test_lint_duplicates():
    f = BROKEN / "duplicates.yaml"
    assert lint_lines("duplicates.yaml") == [
        f"{f}:6: steps[1]: duplicate step id 'a'",
        f"{f}:7: duplicate runbook id 'twin' (also {f}:1)",
    ]


def test_lint_yaml_problems():
    assert lint_lines("yaml-error.yaml") == [f"{BROKEN / 'yaml-error.yaml'}:5: invalid YAML: expected ',' or ']', "
                                             "but got ':'"]
    assert lint_lines("dupkey.yaml") == [f"{BROKEN / 'dupkey.yaml'}:3: duplicate key 'title'"]
    assert [str(p) for p in lint([DATA / "missing.yaml"])] == [f"{DATA / 'missing.yaml'}:1: no such file or directory"]


def test_lint_reports_across_files_sorted():
    problems = lint([BROKEN])
    assert [p.file for p in problems] == sorted(p.file for p in problems)
    assert sum(p.severity == "warning" for p in problems) == 2
    assert len({p.file for p in problems}) == 8


# -- shipped runbooks ----------------------------------------------------------------------------------

# Every alert and failure scenario of ../shared/seeds/README.md, with labels such an alert carries.
ALERTS = {
    "ServiceDown": {"alertname": "ServiceDown", "severity": "critical", "job": "identity-service",
                    "instance": "10.0.3.7:8080", "namespace": "production", "pod": "identity-service-7c9d8-x2k4p",
                    "service": "identity-service"},
    "ScalarDBClusterUnhealthy": {"alertname": "ScalarDBClusterUnhealthy", "severity": "critical",
                                 "namespace": "production", "pod": "scalardb-0"},
    "DatabaseConnectionExhausted": {"alertname": "DatabaseConnectionExhausted", "severity": "critical",
                                    "namespace": "production", "pod": "audit-service-5f6b7-q9w8e",
                                    "job": "audit-service"},
    "TransactionErrorRateHigh": {"alertname": "TransactionErrorRateHigh", "severity": "critical",
                                 "namespace": "production", "pod": "scalardb-1", "job": "scalardb"},
    "HighErrorRate": {"alertname": "HighErrorRate", "severity": "error", "namespace": "production",
                      "service": "tekutoko-api", "pod": "tekutoko-api-6d5c4-abcde"},
    "HighLatency": {"alertname": "HighLatency", "severity": "warning", "namespace": "production",
                    "job": "file-service", "pod": "file-service-55f9c-zzzzz"},
    "PodRestartLoop": {"alertname": "PodRestartLoop", "severity": "warning", "namespace": "production",
                       "pod": "event-service-6c7d8-k2j3h", "container": "event-service",
                       "deployment": "event-service"},
    "DiskSpaceRunningLow": {"alertname": "DiskSpaceRunningLow", "severity": "warning", "instance": "10.0.1.5:9100",
                            "node": "ip-10-0-1-5.ap-northeast-1.compute.internal", "mountpoint": "/",
                            "device": "/dev/nvme0n1p1"},
    "HighCPU": {"alertname": "HighCPU", "severity": "warning", "namespace": "production", "service": "ironcore"},
    "HighMemory": {"alertname": "HighMemory", "severity": "warning", "namespace": "production",
                   "service": "api-server", "pod": "api-server-7b8c9-m4n5b"},
    "OOMKilled": {"alertname": "ContainerOOMKilled", "severity": "warning", "namespace": "production",
                  "pod": "api-server-7b8c9-m4n5b", "container": "api"},
    "RedisDown": {"alertname": "RedisDown", "severity": "critical", "namespace": "production", "pod": "redis-0"},
    "FailedDeployment": {"alertname": "FailedDeployment", "severity": "critical", "namespace": "production",
                         "deployment": "verification-service"},
    "SecurityIncident": {"alertname": "SecurityIncident", "severity": "critical", "namespace": "production"},
}
EXPECTED = {
    "ServiceDown": "service-down", "ScalarDBClusterUnhealthy": "cluster-unhealthy",
    "DatabaseConnectionExhausted": "database-connection-exhausted",
    "TransactionErrorRateHigh": "transaction-error-rate-high", "HighErrorRate": "high-error-rate",
    "HighLatency": "high-latency", "PodRestartLoop": "pod-restart-loop",
    "DiskSpaceRunningLow": "disk-space-running-low",
    "HighCPU": "high-cpu", "HighMemory": "high-memory", "OOMKilled": "high-memory", "RedisDown": "redis-down",
    "FailedDeployment": "failed-deployment", "SecurityIncident": "security-incident",
}


@pytest.mark.parametrize("alert", list(ALERTS))
def test_every_seed_alert_has_a_shipped_runbook(shipped, alert):
    runbook = shipped.best_match(ALERTS[alert])
    assert runbook is not None and runbook.id == EXPECTED[alert]


@pytest.mark.parametrize("alert", list(ALERTS))
def test_shipped_diagnostics_work_for_a_typical_alert(shipped, alert):
    """With the alert's labels and the namespace allowed, every diagnostic that needs no
    annotation is ready to run: the templates fit real alerts."""
    labels = ALERTS[alert]
    steps = prepare_steps(shipped.best_match(labels), labels, {}, PROD)
    for step in steps:
        if step.kind == "diagnostic" and "annotations." not in str(step.step.action.params):
            assert step.enabled, (step.step.id, step.error)


def test_shipped_runbooks_diagnose_first_and_speak_japanese(shipped):
    for runbook in shipped:
        kinds = [s.action and actions.get_action(s.action.type).kind for s in runbook.steps]
        acting = [k for k in kinds if k]
        assert acting and acting[0] == "diagnostic", runbook.id
        for text in [runbook.title, runbook.description] + [t for s in runbook.steps for t in (s.title, s.text)]:
            assert isinstance(text, dict) and set(text) == {"en", "ja"}, runbook.id


def test_the_security_runbook_never_remediates_and_escalates_to_the_cto(shipped):
    runbook = shipped.get("security-incident")
    assert all(s.action is None or actions.get_action(s.action.type).kind == "diagnostic" for s in runbook.steps)
    assert "CTO" in localized(runbook.steps[0].text, "en")
    assert "CTO" in localized(runbook.steps[0].text, "ja-JP")


def test_expert_only_steps_are_high_risk(shipped):
    for runbook_id, step_id in [("database-connection-exhausted", "failover"),
                                ("transaction-error-rate-high", "forced-rollback"),
                                ("cluster-unhealthy", "forced-rollback"), ("failed-deployment", "migration")]:
        step = next(s for s in shipped.get(runbook_id).steps if s.id == step_id)
        assert step.risk == "high" and step.action is None


# -- Block Kit -------------------------------------------------------------------------------------------

def test_runbook_message_buttons(shipped):
    labels = ALERTS["ServiceDown"]
    steps = prepare_steps(shipped.get("service-down"), labels, {"health_url": "https://x.example.com/h"}, PROD)
    messages = runbook_messages(shipped.get("service-down"), steps, locale="en-US", button_id=lambda i: f"opaque-{i}",
                                runbook_url="https://wiki.example.com/service-down")
    assert len(messages) == 1
    blocks = messages[0]
    assert validate_blocks(blocks) == []
    assert blocks[0] == {"type": "header", "text": {"type": "plain_text", "text": "Service down", "emoji": True}}
    assert "<https://wiki.example.com/service-down|Runbook>" in blocks[2]["elements"][0]["text"]
    buttons = {b["accessory"]["action_id"]: b["accessory"] for b in blocks if "accessory" in b}
    assert buttons["runbook_step:0"] == {"type": "button", "text": {"type": "plain_text", "text": "Run", "emoji": True},
                                         "action_id": "runbook_step:0", "value": "opaque-0"}
    restart = buttons["runbook_step:5"]
    assert restart["text"]["text"] == "Request approval" and restart["value"] == "opaque-5"
    assert "style" not in restart and restart["confirm"]["title"]["text"] == "Request approval?"
    assert "namespace=production" in restart["confirm"]["text"]["text"]
    health = next(b for b in blocks if b.get("block_id") == "runbook_step_4_context")
    assert "Disabled: url: URL 'https://x.example.com/h' is not in the allow-list" in health["elements"][0]["text"]
    assert "runbook_step:4" not in buttons  # disabled: no button
    assert "runbook_step:7" not in buttons  # text-only step


def test_buttons_carry_only_the_opaque_id(shipped):
    labels = ALERTS["PodRestartLoop"]
    steps = prepare_steps(shipped.get("pod-restart-loop"), labels, {}, PROD)
    blocks = runbook_messages(shipped.get("pod-restart-loop"), steps, locale=None, button_id=lambda i: f"t{i}",
                              runbook_url=None)[0]
    for block in blocks:
        if "accessory" in block:
            value = block["accessory"]["value"]
            assert value.startswith("t") and labels["pod"] not in value and "production" not in value


def test_high_risk_remediations_are_danger_with_a_danger_confirm(shipped):
    runbook = shipped.get("disk-space-running-low")
    steps = prepare_steps(runbook, ALERTS["DiskSpaceRunningLow"], {}, [], allowed_nodes=["ip-10-0-*"])
    blocks = runbook_messages(runbook, steps, locale="ja-JP", button_id=str, runbook_url=None)[0]
    cordon = next(b["accessory"] for b in blocks if b.get("block_id") == "runbook_step_4")
    assert steps[4].action == "k8s.cordon" and steps[4].risk == "high"
    assert cordon["style"] == "danger" and cordon["confirm"]["style"] == "danger"
    assert cordon["text"]["text"] == "承認を依頼"


def test_a_long_cjk_runbook_stays_within_slack_limits(tmp_path):
    long_title = "長いタイトル" * 40               # 240 characters
    long_text = "これは非常に長い説明文です。**重要**な&<>を含みます。" * 200  # far beyond 3000
    steps = "\n".join(
        f"  - id: s{i}\n    title: {{en: '{long_title}', ja: '{long_title}'}}\n"
        f"    text: {{en: '{long_text}', ja: '{long_text}'}}\n" + (
            "    action: {type: k8s.logs, params: {namespace: production, pod: 'web-" + str(i) + "'}}\n"
            if i % 3 == 0 else
            "    action: {type: k8s.rollout_restart, params: {namespace: production, deployment: web}}\n"
            if i % 3 == 1 else "")
        for i in range(80))
    path = write(tmp_path, "long.yaml", f"id: long\ntitle: {{en: '{long_title}', ja: '{long_title}'}}\n"
                                         f"description: '{long_text}'\nnamespaces: [production]\n"
                                         f"match: {{alertname: Long}}\nsteps:\n{steps}")
    runbook = load_runbooks([path], include_shipped=False).get("long")
    prepared = prepare_steps(runbook, {"alertname": "Long"}, {}, [])
    messages = runbook_messages(runbook, prepared, locale="ja-JP", button_id=lambda i: f"id{i}",
                                runbook_url="https://wiki.example.com/" + "x" * 5000)
    assert len(messages) == 3  # 3 intro blocks + 80 sections + 54 contexts, 50 at most per message
    assert sum(len(m) for m in messages) == 3 + 80 + 54 + 2  # plus one continuation line per extra message
    action_ids = []
    for blocks in messages:
        assert len(blocks) <= LIMITS["blocks"]
        assert validate_blocks(blocks) == []
        for block in blocks:
            if block["type"] == "section":
                assert len(block["text"]["text"]) <= 3000
            if block["type"] == "header":
                assert len(block["text"]["text"]) == 150 and block["text"]["text"].endswith("…")
            if block["type"] == "context":
                assert all(len(e["text"]) <= 3000 for e in block["elements"])
            if "accessory" in block:
                button = block["accessory"]
                assert len(button["text"]["text"]) <= 75
                action_ids.append(button["action_id"])
                if "confirm" in button:
                    assert len(button["confirm"]["text"]["text"]) <= 300
        ids = [b["accessory"]["action_id"] for b in blocks if "accessory" in b]
        assert len(ids) == len(set(ids))
    assert action_ids == [f"runbook_step:{i}" for i in range(80) if i % 3 != 2]
    sections = [b for m in messages for b in m if b.get("block_id", "").startswith("runbook_step_")
                and b["type"] == "section"]
    assert all(s["text"]["text"].endswith("…") for s in sections)
    assert not any("&am…" in s["text"]["text"] or s["text"]["text"].count("<") for s in sections)
    assert "(3/3)" in messages[2][0]["elements"][0]["text"]
    assert "<https://" not in messages[0][2]["elements"][0]["text"]  # an over-long URL is not linked


def test_notes_keep_each_step_in_the_same_message(good):
    runbook = good.get("web-down")
    labels = {"alertname": "WebDown", "namespace": "prod-eu", "service": "web", "pod": "web-1"}
    steps = prepare_steps(runbook, labels, {}, [])
    plain = runbook_messages(runbook, steps, locale=None, button_id=str, runbook_url=None)
    noted = runbook_messages(runbook, steps, locale=None, button_id=str, runbook_url=None,
                             notes={0: "ran by <@U1> at 12:03"})
    assert [len(m) for m in plain] == [len(m) for m in noted]
    context = next(b for b in noted[0] if b.get("block_id") == "runbook_step_0_context")
    assert context["elements"][1]["text"] == "ran by <@U1> at 12:03"


def test_markdown_becomes_mrkdwn():
    text = "# Title\n**bold** and [docs](https://x.example.com/a?b=1&c=2) <!channel>\n- item\n```\n**kept**\n```"
    assert markdown_to_mrkdwn(text) == (
        "*Title*\n*bold* and <https://x.example.com/a?b=1&amp;c=2|docs> &lt;!channel&gt;\n• item\n```\n**kept**\n```")


def test_no_runbook_points_to_the_list():
    blocks = no_runbook_blocks("Weird<Alert>")
    assert validate_blocks(blocks) == []
    text = blocks[0]["text"]["text"]
    assert "*Weird&lt;Alert&gt;*" in text and "`/runbook list`" in text
    assert "`/runbook list`" in no_runbook_blocks("X", locale="ja-JP")[0]["text"]["text"]
