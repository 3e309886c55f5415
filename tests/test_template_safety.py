"""Security review, issue 10 items 5 and 6: templated values are escaped for their target (PromQL,
silence matchers, label selectors), and the URL and node allow-lists cannot be walked around.

The PromQL checks parse the rendered query with a lexer written here from the PromQL rules
(Go string literals), independent of the escaping under test: a query rendered from a hostile
label has the same tokens as one rendered from a harmless label, except that the string
literal holds the hostile value, decoded exactly.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.action_params import PodsParams, QueryParams, SilenceParams
from bot.config import ConfigError, RunbookPolicy, load_config_file
from bot.param_syntax import normalize_url, parse_silence_matchers, url_allowed
from bot.runbook_format import Runbook
from bot.runbook_lint import lint
from bot.runbook_templates import misplaced_templates, render_params, template_refs, template_targets
from bot.runbooks import load_runbooks, prepare_steps

INJECTION = 'x"} or label_replace(prometheus_build_info, "namespace", "$1", "version", "(.*)") or redis_up{namespace="x'
HOSTILE = ['"', "'", "\\", "{", "}", ",", "=", "~", "!", "=~", "\n", "\r", "\t", "`", "#", "(", ")", "[", "]", " ",
           "a", "Z", "0", "é", "日本", "\u2028", "\x00", "\x7f", "😀", "$1", ".*", "or", "}{"]


@pytest.fixture(scope="module")
def shipped():
    return load_runbooks([])


# -- an independent reading of PromQL --------------------------------------------------------------

_SIMPLE = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def _go_unquote(body: str, quote: str) -> str:
    """strconv.Unquote of the inside of a "…" or '…' PromQL literal; ValueError if Go would refuse it."""
    out, i = [], 0
    while i < len(body):
        char = body[i]
        if char == quote or char == "\n":
            raise ValueError(f"unescaped {char!r} in a string literal")
        if char != "\\":
            out.append(char)
            i += 1
            continue
        esc = body[i + 1]
        if esc in _SIMPLE:
            out.append(_SIMPLE[esc])
            i += 2
        elif esc == quote:
            out.append(quote)
            i += 2
        elif esc in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[esc]
            digits = body[i + 2:i + 2 + width]
            if not re.fullmatch(f"[0-9a-fA-F]{{{width}}}", digits):
                raise ValueError("bad hex escape")
            if esc == "x" and int(digits, 16) > 0x7F:
                raise ValueError("a byte escape above 0x7f would not be UTF-8 on its own")
            out.append(chr(int(digits, 16)))
            i += 2 + width
        elif esc in "01234567":
            out.append(chr(int(body[i + 1:i + 4], 8)))
            i += 4
        else:
            raise ValueError(f"unknown escape \\{esc}")
    return "".join(out)


def promql_tokens(query: str) -> list[tuple[str, str]]:
    """(kind, text) tokens: strings decoded, comments dropped."""
    tokens, i = [], 0
    while i < len(query):
        char = query[i]
        if char.isspace():
            i += 1
        elif char == "#":
            while i < len(query) and query[i] not in "\r\n":
                i += 1
        elif char in "\"'":
            j = i + 1
            while query[j] != char:
                j += 2 if query[j] == "\\" else 1
            tokens.append(("string", _go_unquote(query[i + 1:j], char)))
            i = j + 1
        elif char == "`":
            j = query.index("`", i + 1)
            tokens.append(("string", query[i + 1:j].replace("\r", "")))
            i = j + 1
        elif match := re.match(r"[A-Za-z0-9_:.]+", query[i:]):
            tokens.append(("word", match[0]))
            i += len(match[0])
        elif query[i:i + 2] in ("=~", "!~", "!=", "==", "<=", ">="):
            tokens.append(("op", query[i:i + 2]))
            i += 2
        else:
            tokens.append(("op", char))
            i += 1
    return tokens


def selector_matchers(query: str, metric: str) -> list[tuple[str, str, str]]:
    """The (label, operator, value) matchers of `metric{…}`: what the query selects."""
    tokens = promql_tokens(query)
    start = tokens.index(("word", metric)) + 2
    assert tokens[start - 1] == ("op", "{")
    matchers = []
    while tokens[start] != ("op", "}"):
        (_, name), (_, op), (kind, value) = tokens[start:start + 3]
        assert kind == "string", tokens[start:start + 3]
        matchers.append((name, op, value))
        start += 3
        if tokens[start] == ("op", ","):
            start += 1
    return matchers


def test_the_oracle_reads_promql_as_prometheus_does():
    assert selector_matchers('up{a="x\\"y", b!~\'z\\\\\', c=`r\\aw`} # "not a string', "up") == [
        ("a", "=", 'x"y'), ("b", "!~", "z\\"), ("c", "=", "r\\aw")]
    with pytest.raises(ValueError):
        _go_unquote("\\'", '"')  # Go refuses the other quote escaped


# -- 1. PromQL -------------------------------------------------------------------------------------

def redis_query(shipped, namespace: str):
    step = prepare_steps(shipped.get("redis-down"), {"alertname": "RedisDown", "namespace": namespace}, {})[0]
    assert step.step.id == "redis-up"
    return step


def test_a_label_cannot_rewrite_a_promql_query(shipped):
    """The review's exploit: before, the query became three, one of them Prometheus's build info."""
    step = redis_query(shipped, INJECTION)
    assert step.enabled, step.error
    assert "prometheus_build_info" not in {text for kind, text in promql_tokens(step.params.query) if kind == "word"}
    assert selector_matchers(step.params.query, "redis_up") == [("namespace", "=", INJECTION)]
    assert [kind for kind, _ in promql_tokens(step.params.query)] == ["word", "op", "word", "op", "string", "op"]


def _promql_steps(runbook: Runbook):
    return [(i, s) for i, s in enumerate(runbook.steps) if s.action and s.action.type == "prometheus.query"]


def _label_keys(runbook: Runbook) -> set[str]:
    return {key for _, s in _promql_steps(runbook) for kind, key, _ in template_refs(s.action.params["query"]).uses
            if kind == "labels"}


@pytest.mark.parametrize("value", [INJECTION, 'a"} or vector(1) #', "a\\", "line\nbreak", "x'y`z", "日本\x00\x7f"])
def test_every_shipped_promql_step_keeps_its_shape(shipped, value):
    """Every shipped query that templates labels: with a hostile value in every label, the tokens
    are those of the same query with a harmless value, the hostile one decoded in its place."""
    checked = 0
    for runbook in shipped:
        keys = _label_keys(runbook)
        if not keys:
            continue
        for index, _ in _promql_steps(runbook):
            harmless = prepare_steps(runbook, {"alertname": "A", **dict.fromkeys(keys, "harmless")}, {})[index]
            hostile = prepare_steps(runbook, {"alertname": "A", **dict.fromkeys(keys, value)}, {})[index]
            assert harmless.enabled and hostile.enabled, (runbook.id, hostile.error)
            expected = [(k, value if (k, t) == ("string", "harmless") else t)
                        for k, t in promql_tokens(harmless.params.query)]
            assert promql_tokens(hostile.params.query) == expected, runbook.id
            checked += 1
    assert checked >= 9  # the nine shipped runbooks that template labels into PromQL, some twice


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(HOSTILE) | st.characters(codec="utf-8"), max_size=30).map("".join))
def test_property_a_label_decodes_back_from_its_string_literal(shipped, value):
    step = redis_query(shipped, value)
    if not step.enabled:
        assert step.error and step.error.startswith("query: ")
        return
    assert selector_matchers(step.params.query, "redis_up") == [("namespace", "=", value)]


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.sampled_from(HOSTILE) | st.characters(codec="utf-8"), max_size=20).map("".join))
def test_property_single_quoted_and_raw_strings(value):
    template = "up{a='{{ labels.v }}', b=`{{ labels.v }}`}"
    try:
        query = render_params({"query": template}, {"v": value}, {}, {"query": "promql"})["query"]
    except ValueError as exc:  # ParamError: a raw string cannot hold a backtick or a control character
        assert "raw" in str(exc) and re.search(r"[`\x00-\x1f\x7f]", value)
        return
    assert selector_matchers(query, "up") == [("a", "=", value), ("b", "=", value)]


def test_a_value_in_a_regex_matcher_matches_only_itself():
    query = render_params({"query": 'up{pod=~"{{ labels.deployment }}-.*"}'}, {"deployment": "web.1|.*"}, {},
                          {"query": "promql"})["query"]
    [(_, op, regex)] = selector_matchers(query, "up")
    assert op == "=~" and re.fullmatch(regex, "web.1|.*-7f9c") and not re.fullmatch(regex, "webx1-7f9c")
    assert not re.fullmatch(regex, "anything")


@pytest.mark.parametrize(("template", "value", "ok"), [
    ("rate(x[{{ labels.w }}])", "5m", True), ("rate(x[{{ labels.w }}])", "5m]) or vector(1", False),
    ("topk({{ labels.k }}, up)", "3", True), ("up {{ labels.op }} up", "or", False),
    ("{{ labels.metric }}", "up", True), ("{{ labels.metric }}", 'up{a="b"}', False),
    ("up # {{ labels.note }}", "any text \" at all", True), ("up # {{ labels.note }}", "x\nor vector(1)", False),
    ('up{a="\\{{ labels.x }}"}', "y", False),
])
def test_outside_a_string_literal_only_a_plain_word(template, value, ok):
    labels = dict.fromkeys(("w", "k", "op", "metric", "note", "x"), value)
    try:
        render_params({"query": template}, labels, {}, {"query": "promql"})
    except ValueError:
        assert not ok
    else:
        assert ok


def test_the_authors_text_is_not_escaped():
    rendered = render_params({"query": 'sum(rate(x{status=~"5..", a="{{ labels.a }}"}[5m])) # "ok"'}, {"a": "b"},
                             {}, {"query": "promql"})
    assert rendered["query"] == 'sum(rate(x{status=~"5..", a="b"}[5m])) # "ok"'


def test_the_parameter_type_decides_the_target():
    assert template_targets(QueryParams) == {"query": "promql"}
    assert template_targets(SilenceParams) == {"matchers": "matchers"}
    assert template_targets(PodsParams) == {"selector": "selector"}


def test_a_placeholder_cannot_be_forged():
    forged = "\ue0000000000000000000:0\ue001"
    rendered = render_params({"query": 'up{a="{{ labels.a }}", b="{{ labels.b }}"}'}, {"a": "A", "b": forged}, {},
                             {"query": "promql"})
    assert selector_matchers(rendered["query"], "up") == [("a", "=", "A"), ("b", "=", forged)]


# -- 1. silence matchers and selectors ------------------------------------------------------------------

def disk_silence(shipped, alertname: str, instance: str):
    runbook = shipped.get("disk-space-running-low")
    labels = {"alertname": alertname, "instance": instance, "node": "worker-1"}
    return next(s for s in prepare_steps(runbook, labels, {}) if s.action == "alertmanager.silence")


def test_a_label_cannot_add_silence_matchers(shipped):
    step = disk_silence(shipped, 'DiskSpaceRunningLow", alertname=~".*', '10.0.0.1", severity=~".*')
    assert step.enabled, step.error
    assert [m.api() for m in parse_silence_matchers(step.params.matchers)] == [
        {"name": "alertname", "value": 'DiskSpaceRunningLow", alertname=~".*', "isRegex": False, "isEqual": True},
        {"name": "instance", "value": '10.0.0.1", severity=~".*', "isRegex": False, "isEqual": True},
    ]


@settings(max_examples=200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(HOSTILE) | st.characters(codec="utf-8"), min_size=1, max_size=20).map("".join))
def test_property_silence_matcher_values_decode_back(shipped, value):
    step = disk_silence(shipped, "DiskSpaceRunningLow", value)
    assert step.enabled, step.error
    assert [(m.name, m.value, m.is_regex) for m in parse_silence_matchers(step.params.matchers)] == [
        ("alertname", "DiskSpaceRunningLow", False), ("instance", value, False)]


def test_matchers_outside_quotes_take_only_a_label_name():
    targets = {"matchers": "matchers"}
    with pytest.raises(ValueError, match="outside the quotes"):
        render_params({"matchers": 'alertname="X", job={{ labels.job }}'}, {"job": '"a", alertname=~".*"'}, {},
                      targets)
    regex = render_params({"matchers": 'alertname="X", pod=~"{{ labels.pod }}"'}, {"pod": "a.b"}, {}, targets)
    assert [m.value for m in parse_silence_matchers(regex["matchers"])] == ["X", "a\\.b"]


@pytest.mark.parametrize(("service", "ok"), [("web", True), ("web-1.v2_x", True), ("web,tier!=db", False),
                                             ("web tier", False), ("a=b", False), ("x)", False)])
def test_a_selector_value_must_be_a_label_value(service, ok):
    rendered = None
    try:
        rendered = render_params({"selector": "app={{ labels.service }},tier=api"}, {"service": service}, {},
                                 {"selector": "selector"})
    except ValueError as exc:
        assert "label value" in str(exc)
    assert (rendered is not None) is ok
    if ok:
        assert rendered == {"selector": f"app={service},tier=api"}


# -- 1. lint ---------------------------------------------------------------------------------------

def test_misplaced_templates_are_found_in_source_order():
    assert misplaced_templates('rate(x{job="{{ labels.job }}"}[{{ labels.window }}])', "promql") == [
        "{{ labels.window }}"]
    assert misplaced_templates("{job={{ labels.job }}}", "matchers") == ["{{ labels.job }}"]
    assert misplaced_templates('up{a="{{ labels.a }}"} # {{ labels.b }}', "promql") == []
    assert misplaced_templates("app={{ labels.app }}", "selector") == []


def test_lint_warns_about_a_template_outside_a_string(tmp_path):
    path = tmp_path / "rb.yaml"
    path.write_text("""id: rb
title: rb
match: {alertname: X}
expects: [job, window]
steps:
  - id: q
    title: Q
    text: Q
    action:
      type: prometheus.query
      params:
        query: 'rate(x{job="{{ labels.job }}"}[{{ labels.window }}])'
  - id: s
    title: S
    text: S
    action:
      type: alertmanager.silence
      params:
        matchers: '{alertname="X", job={{ labels.job }}}'
""", encoding="utf-8")
    problems = [str(p) for p in lint([path])]
    assert problems == [
        f"{path}:12: warning: steps[0].action.params.query: {{{{ labels.window }}}} is outside a string literal of "
        "the PromQL query, so its value is not escaped and only a plain name, number or duration works there; put it "
        'inside "…" if it is a label value',
        f"{path}:19: warning: steps[1].action.params.matchers: {{{{ labels.job }}}} is outside the quotes of a "
        'matcher, so its value is not escaped and only a label name works there; write name="{{ … }}"',
    ]


def test_shipped_runbooks_lint_without_warnings():
    assert lint([Path(__file__).parent.parent / "bot" / "runbooks"]) == []


# -- 2. URLs ---------------------------------------------------------------------------------------

ALLOWED = "https://web.example.com/health/"


@pytest.mark.parametrize("url", [
    "https://web.example.com/health/..;/admin", "https://web.example.com/health/%2e%2e%2fadmin",
    "https://web.example.com/health/%2e%2e/admin", "https://web.example.com/health/.%2E/admin",
    "https://web.example.com/health/x/../../admin", "https://web.example.com/health;a=b/../admin",
    "https://web.example.com/health/%5c..%5cadmin", "https://web.example.com/health/%252e%252e/admin",
    "https://web.example.com/health/%00", "https://web.example.com/health\\..\\admin",
])
def test_url_walk_arounds_are_refused(good_runbook, url):
    step = prepare_steps(good_runbook, {"alertname": "WebDown"}, {"health_url": url})[0]
    assert not step.enabled and step.error.startswith("url: "), url


@pytest.mark.parametrize(("url", "fetched"), [
    ("https://web.example.com/health/ready", "https://web.example.com/health/ready"),
    ("HTTPS://Web.Example.COM:443/health/%72eady", "https://web.example.com/health/ready"),
    ("https://web.example.com/health/x/../ready?full=1", "https://web.example.com/health/ready?full=1"),
    ("https://web.example.com/health/./%7Eme/%c3%a9", "https://web.example.com/health/~me/%C3%A9"),
])
def test_the_normalised_url_is_checked_and_kept(good_runbook, url, fetched):
    step = prepare_steps(good_runbook, {"alertname": "WebDown"}, {"health_url": url})[0]
    assert step.enabled, step.error
    assert step.params.url == fetched == normalize_url(url)


def test_url_allowed_compares_normalised_forms():
    assert url_allowed("http://h:80/a/b", "HTTP://H/a/")
    assert not url_allowed("http://h/a/../b", "http://h/a/")
    assert not url_allowed("http://h:8080/a/b", "http://h/a/")


@pytest.fixture
def good_runbook(tmp_path):
    (tmp_path / "web.yaml").write_text(f"""id: web
title: web
match: {{alertname: WebDown}}
urls: ["{ALLOWED}"]
steps:
  - id: health
    title: Health
    text: Health
    action:
      type: http.check
      params:
        url: "{{{{ annotations.health_url }}}}"
""", encoding="utf-8")
    return load_runbooks([tmp_path], include_shipped=False).get("web")


# -- 2. nodes ----------------------------------------------------------------------------------------

def disk_node_steps(shipped, node: str, nodes: list[str]):
    runbook = shipped.get("disk-space-running-low")
    labels = {"alertname": "DiskSpaceRunningLow", "instance": "10.0.0.1:9100", "node": node}
    return [s for s in prepare_steps(runbook, labels, {}, allowed_nodes=nodes)
            if s.action in ("k8s.cordon", "k8s.uncordon")]


def test_cordon_is_disabled_without_a_node_allow_list(shipped):
    steps = disk_node_steps(shipped, "worker-1", [])
    assert len(steps) == 2 and not any(s.enabled for s in steps)
    assert all("runbooks.nodes" in s.error and "ONCALL_CONFIG" in s.error for s in steps)


@pytest.mark.parametrize(("node", "ok"), [("worker-1", True), ("worker-gpu-7.internal", True),
                                          ("control-plane-1", False), ("db-0", False), ("xworker-1", False)])
def test_only_allow_listed_nodes_can_be_cordoned(shipped, node, ok):
    steps = disk_node_steps(shipped, node, ["worker-*", "db-1"])
    assert [s.enabled for s in steps] == [ok, ok]
    if not ok:
        assert f"node {node!r} is not in the node allow-list" in steps[0].error


def test_the_node_allow_list_is_configured(tmp_path):
    assert RunbookPolicy().nodes == []
    config = tmp_path / "oncall.yaml"
    config.write_text("runbooks:\n  nodes: [worker-*, 'gpu-[0-9]']\n", encoding="utf-8")
    assert load_config_file(config).runbooks.nodes == ["worker-*", "gpu-[0-9]"]
    config.write_text("runbooks:\n  nodes: ['Worker_*']\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"runbooks\.nodes\[0\]: 'Worker_\*' is not a node name"):
        load_config_file(config)
