"""The syntax of action parameter values, none of which depends on a runbook or the
configuration: Kubernetes names and label selectors, durations, URLs, Alertmanager silence
matchers and PromQL.

Each is a plain parser or a pydantic `Annotated` type. What a value may also have to be allowed
by (namespace and URL allow-lists, a runbook's scale bounds) is checked in bot.action_params.
The configuration's allow-list entries use these too (bot.config).

`TemplateTarget` in a type's metadata says what a template renders into (PromQL, silence
matchers, a label selector), so bot.runbook_templates escapes each templated value for it.
URLs are normalised (`normalize_url`) before an allow-list prefix is compared, and the
normalised URL is the one fetched.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

from pydantic import AfterValidator, Field

__all__ = [
    "Comment", "DnsLabel", "DnsSubdomain", "LabelSelector", "ObjectKind", "PromQL", "QueryRange", "QueryStep",
    "SilenceDuration", "SilenceMatcher", "SilenceMatchers", "TemplateTarget", "check_node_pattern", "check_url",
    "is_selector_word", "normalize_url", "parse_duration", "parse_label_selector", "parse_silence_matchers",
    "short_repr", "url_allowed",
]


@dataclass(frozen=True)
class TemplateTarget:
    """Metadata of a parameter type: the language a templated value lands in, which decides how
    bot.runbook_templates escapes it (promql: PromQL string literals; matchers: Alertmanager
    matcher values; selector: Kubernetes label selector values)."""

    language: Literal["promql", "matchers", "selector"]


def short_repr(value: str) -> str:
    """repr() of at most 60 characters: enough to recognise a value in a message."""
    return repr(value if len(value) <= 60 else value[:57] + "...")


# -- names (RFC 1123) ----------------------------------------------------------------------------

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def _dns_label(value: str) -> str:
    if not _DNS_LABEL.fullmatch(value):
        raise ValueError(f"{short_repr(value)} is not an RFC 1123 DNS label "
                         "(lowercase letters, digits and '-', 1-63 characters, alphanumeric at both ends)")
    return value


def _dns_subdomain(value: str) -> str:
    if len(value) > 253 or not all(_DNS_LABEL.fullmatch(part) for part in value.split(".")):
        raise ValueError(f"{short_repr(value)} is not an RFC 1123 DNS subdomain "
                         "(dot-separated DNS labels, at most 253 characters)")
    return value


DnsLabel = Annotated[str, AfterValidator(_dns_label)]
DnsSubdomain = Annotated[str, AfterValidator(_dns_subdomain)]


def check_node_pattern(value: str) -> str:
    """A node allow-list entry: a node name, or a glob of one (`worker-*`, `gpu-node-?`)."""
    if not re.fullmatch(r"[-a-z0-9.*?\[\]!]{1,253}", value):
        raise ValueError(f"{short_repr(value)} is not a node name or a glob of one (lowercase letters, digits, "
                         "'-', '.', and the wildcards * ? [...])")
    return value


# -- label selectors -------------------------------------------------------------------------------

_NAME_PART = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?")
_REQUIREMENT = re.compile(
    r"(?P<bang>!)?\s*(?P<key>[^\s=!(),]+)"
    r"(?:\s*(?P<op>==|!=|=)\s*(?P<value>[^\s=!(),]*)|\s+(?P<set>in|notin)\s*\((?P<values>[^()]*)\))?")


def _label_key(key: str) -> str:
    prefix, _, name = key.rpartition("/")
    if (prefix and not _dns_subdomain_ok(prefix)) or not _NAME_PART.fullmatch(name):
        raise ValueError(f"{short_repr(key)} is not a valid label key")
    return key


def _dns_subdomain_ok(value: str) -> bool:
    return len(value) <= 253 and all(_DNS_LABEL.fullmatch(part) for part in value.split("."))


def _label_value(value: str) -> str:
    if not _LABEL_VALUE.fullmatch(value):
        raise ValueError(f"{short_repr(value)} is not a valid label value (at most 63 of A-Z a-z 0-9 - _ .)")
    return value


def _split_outside_parens(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


def parse_label_selector(text: str) -> str:
    """Validate a Kubernetes label selector (=, ==, !=, in, notin, exists, !exists) and return it
    in canonical form; anything else is refused rather than passed through."""
    if not text.strip():
        return ""
    canonical = []
    for part in _split_outside_parens(text):
        match = _REQUIREMENT.fullmatch(part.strip())
        if not match:
            raise ValueError(f"{short_repr(part.strip())} is not a label selector requirement")
        key = _label_key(match["key"])
        if match["bang"]:
            if match["op"] or match["set"]:
                raise ValueError(f"{short_repr(part.strip())}: '!' takes a key only")
            canonical.append(f"!{key}")
        elif match["op"]:
            op = "!=" if match["op"] == "!=" else "="
            canonical.append(f"{key}{op}{_label_value(match['value'])}")
        elif match["set"]:
            values = [_label_value(v.strip()) for v in match["values"].split(",")]
            canonical.append(f"{key} {match['set']} ({','.join(values)})")
        else:
            canonical.append(key)
    return ",".join(canonical)


def is_selector_word(value: str) -> bool:
    """A label value or key: what a template may put into a selector, which has no quoting."""
    if _LABEL_VALUE.fullmatch(value):
        return True
    try:
        _label_key(value)
    except ValueError:
        return False
    return True


LabelSelector = Annotated[str, AfterValidator(parse_label_selector), TemplateTarget("selector")]


# -- durations -------------------------------------------------------------------------------------

_DURATION = re.compile(r"(?:(\d{1,4})d)?(?:(\d{1,5})h)?(?:(\d{1,6})m)?(?:(\d{1,7})s)?")


def parse_duration(text: str) -> timedelta:
    """`30m`, `1h30m`, `2d`: days, hours, minutes, seconds in that order."""
    match = _DURATION.fullmatch(text.strip())
    if not text.strip() or not match:
        raise ValueError(f"{short_repr(text)} is not a duration like 30m, 2h or 1h30m")
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def _duration_between(low: timedelta, high: timedelta) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not low <= parse_duration(value) <= high:
            raise ValueError(f"duration {value!r} is outside {_human(low)}..{_human(high)}")
        return value.strip()
    return check


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size and (unit != "d" or seconds > 86400):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


SilenceDuration = Annotated[str, AfterValidator(_duration_between(timedelta(minutes=1), timedelta(hours=24)))]
QueryRange = Annotated[str, AfterValidator(_duration_between(timedelta(minutes=1), timedelta(days=7)))]
QueryStep = Annotated[str, AfterValidator(_duration_between(timedelta(seconds=1), timedelta(hours=1)))]


# -- URLs ------------------------------------------------------------------------------------------
#
# An allow-list prefix is compared with the normalised URL (RFC 3986 section 6), and that URL is
# the one fetched, so what was checked is what is requested. Anything a server might read as a
# different path than the prefix check did is refused instead: ';' path parameters (`..;/` on
# Tomcat-style servers), encoded '/', '\\', '%' (double encoding), ';' and control characters, and
# encoded '.' or '..' segments.

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PATH_SAFE = frozenset("!$&'()*+,=:@")  # pchar's sub-delims, ':' and '@'; not ';' (refused)
_HOST = re.compile(r"[a-z0-9_]([-a-z0-9_]*[a-z0-9_])?(\.[a-z0-9_]([-a-z0-9_]*[a-z0-9_])?)*\.?"  # DNS, IPv4
                   r"|[0-9a-f:.]*:[0-9a-f:.]*")                                          # IPv6


def _segment(url: str, raw: str) -> str:
    """One path segment with unreserved characters decoded and every other escape upper-cased."""
    if ";" in raw:
        raise ValueError(f"{short_repr(url)} has a ';' path parameter")
    if re.search(r"%(?![0-9A-Fa-f]{2})", raw):
        raise ValueError(f"{short_repr(url)} has an invalid percent-encoding")
    out = []
    for piece in re.split(r"(%[0-9A-Fa-f]{2})", raw):
        if piece.startswith("%"):
            char = chr(int(piece[1:], 16))
            if char in "/\\%;" or char < " " or char == "\x7f":
                raise ValueError(f"{short_repr(url)} has an encoded {char!r} in its path")
            out.append(char if char in _UNRESERVED else piece.upper())
        else:
            out += [c if c in _UNRESERVED or c in _PATH_SAFE else quote(c, safe="") for c in piece]
    segment = "".join(out)
    if segment in (".", "..") and raw not in (".", ".."):
        raise ValueError(f"{short_repr(url)} has an encoded '.' or '..' path segment")
    return segment


def _remove_dot_segments(segments: list[str]) -> str:
    """RFC 3986 section 5.2.4 on a path split at '/' (it starts with '/')."""
    out: list[str] = []
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment in (".", ".."):
            if segment == ".." and out:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(segment)
    return "/" + "/".join(out)


def _normalise(url: str) -> tuple[str, str, int, str, str]:
    """(scheme, host, port, path, query), normalised; ValueError if not a plain http(s) URL."""
    if len(url) > 2048 or re.search(r"[\s\\\x00-\x1f\x7f]", url):
        raise ValueError(f"{short_repr(url)} is not a plain http(s) URL")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{short_repr(url)} is not a valid URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        raise ValueError(f"{short_repr(url)} must be http(s)://host/... without user information")
    host = parts.hostname.lower()
    if not _HOST.fullmatch(host) or ("[" in parts.netloc) != (":" in host):
        raise ValueError(f"{short_repr(url)}: the host must be a DNS name (xn-- for non-ASCII) or an IP address")
    path = _remove_dot_segments([_segment(url, raw) for raw in (parts.path or "/").split("/")[1:]])
    return scheme, host, port or (443 if scheme == "https" else 80), path, parts.query


def normalize_url(url: str) -> str:
    """The URL as fetched: lowercase scheme and host, no default port, unreserved characters
    decoded, dot segments resolved, no fragment (it is never sent). ValueError for a URL that
    would not mean the same to every server (see above)."""
    scheme, host, port, path, query = _normalise(url)
    netloc = f"[{host}]" if ":" in host else host
    if port != (443 if scheme == "https" else 80):
        netloc += f":{port}"
    return f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")


def url_allowed(url: str, allowed: str) -> bool:
    """Same scheme, host and port; the normalised path equal to the allowed one or below it."""
    scheme, host, port, path, _ = _normalise(url)
    a_scheme, a_host, a_port, a_path, _ = _normalise(allowed)
    prefix = a_path.rstrip("/")
    return (scheme, host, port) == (a_scheme, a_host, a_port) and (
        path == a_path or not prefix or path.startswith(prefix + "/"))


def check_url(value: str) -> str:
    """A valid URL allow-list entry (a runbook's or the configuration's `urls`): a prefix is
    written without '.' or '..' segments."""
    _normalise(value)
    if re.search(r"(^|/)\.{1,2}(/|$)", urlsplit(value).path):
        raise ValueError(f"{short_repr(value)} has '.' or '..' path segments")
    return value


# -- Alertmanager silence matchers ---------------------------------------------------------------

@dataclass(frozen=True)
class SilenceMatcher:
    name: str
    value: str
    is_regex: bool
    is_equal: bool

    def api(self) -> dict[str, Any]:
        """The Alertmanager API v2 shape."""
        return {"name": self.name, "value": self.value, "isRegex": self.is_regex, "isEqual": self.is_equal}

    def __str__(self) -> str:
        op = {(False, True): "=", (False, False): "!=", (True, True): "=~", (True, False): "!~"}
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'{self.name}{op[(self.is_regex, self.is_equal)]}"{escaped}"'


_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\\n]|\\.)*)"\s*(,|$)')


def parse_silence_matchers(text: str) -> list[SilenceMatcher]:
    """`alertname="X", namespace=~"prod-.*"`: quoted values only; an alertname equality is
    required so a silence never hides more than the alert it was made for."""
    body, matchers, pos = text.strip().removeprefix("{").removesuffix("}"), [], 0
    while pos < len(body):
        match = _MATCHER.match(body, pos)
        if not match:
            raise ValueError(f"cannot parse matchers at {short_repr(body[pos:])}; write name=\"value\", ...")
        name, op, raw, _ = match.groups()
        value = re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], raw)
        if op in ("=~", "!~"):
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"matcher {name}{op}: invalid regular expression: {exc}") from exc
        matchers.append(SilenceMatcher(name, value, op in ("=~", "!~"), op in ("=", "=~")))
        pos = match.end()
    if len(matchers) > 16:
        raise ValueError("at most 16 matchers")
    if not any(m.name == "alertname" and not m.is_regex and m.is_equal and m.value for m in matchers):
        raise ValueError('matchers must include alertname="<the alert>" so the silence stays narrow')
    return matchers


SilenceMatchers = Annotated[str, AfterValidator(lambda v: ", ".join(map(str, parse_silence_matchers(v)))),
                           TemplateTarget("matchers")]


# -- PromQL: read-only, but still bounded and lexically sound ---------------------------------------

def _promql(value: str) -> str:
    if not 1 <= len(value) <= 2000 or re.search(r"[\x00-\x08\x0b-\x1f\x7f]", value):
        raise ValueError("a PromQL query of 1-2000 printable characters")
    closing, stack, quote, i = {")": "(", "]": "[", "}": "{"}, [], None, 0
    while i < len(value):
        char = value[i]
        if quote:
            if char == "\\" and quote != "`":
                i += 1
            elif char == quote:
                quote = None
        elif char in "\"'`":
            quote = char
        elif char in "([{":
            stack.append(char)
        elif char in closing and (not stack or stack.pop() != closing[char]):
            raise ValueError(f"unbalanced {char!r} in the query")
        i += 1
    if quote or stack:
        raise ValueError("unterminated string or bracket in the query")
    return value


PromQL = Annotated[str, AfterValidator(_promql), TemplateTarget("promql")]
Comment = Annotated[str, Field(max_length=500, pattern=r"^[^\x00-\x1f\x7f]*$")]
ObjectKind = Literal["Pod", "Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob", "Node",
                     "Service", "PersistentVolumeClaim", "HorizontalPodAutoscaler"]

