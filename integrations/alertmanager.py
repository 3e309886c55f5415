"""Prometheus Alertmanager: the webhook payload it sends us (version 4), and its API v2 for silences.

Knows nothing of incidents. Alert labels and annotations are untrusted input. Alertmanager never
retries a 4xx, so a rejected notification is an alert lost: the models below refuse only what is
malformed (wrong types, missing fields) and make everything else storable, the same on SQLite and
PostgreSQL (README "Limits"):
- text: NUL and lone surrogates (PostgreSQL refuses both) become U+FFFD; values longer than their
  limit are cut, ending in CUT_MARKER ("…[cut 12345 chars]");
- maps: at most MAX_ENTRIES entries, the rest replaced by one "…[cut N entries]" key;
- keys the database indexes (receiver, groupKey, fingerprint): over their byte limit, a prefix and
  the SHA-256 of the whole value, so that the same group still finds its incident;
- alerts: at most MAX_ALERTS per notification, firing ones first, duplicates of a fingerprint
  dropped; the rest is added to truncated_alerts, which is clamped to MAX_COUNT;
- times: aware UTC (a time without a zone is taken as UTC).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import httpx
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from integrations.errors import IntegrationError

__all__ = ["AlertmanagerClient", "AlertmanagerError", "CUT_MARKER", "MAX_ALERTS", "MAX_ANNOTATION_CHARS",
           "MAX_COUNT", "MAX_ENTRIES", "MAX_KEY_CHARS", "MAX_LABEL_CHARS", "SilenceInfo", "SilenceMatcherInfo",
           "WebhookAlert", "WebhookMessage", "ZERO_TIME", "from_environment", "storable_key"]

# Alertmanager marks a still-firing alert with Go's zero time.
ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)
_LAST_TIME = datetime.max.replace(tzinfo=UTC)

MAX_ALERTS = 1_000  # per notification; Alertmanager's own max_alerts is the better place to cut
MAX_COUNT = 2**31 - 1  # truncatedAlerts fits a 32-bit INTEGER column
MAX_ENTRIES = 256  # labels or annotations per map
MAX_KEY_CHARS = 256  # a label or annotation name
MAX_LABEL_CHARS = 4_096  # a label value, a URL
MAX_ANNOTATION_CHARS = 16_384  # an annotation value (summary, description, ...)
CUT_MARKER = "…[cut {} chars]"
# Byte limits of the indexed keys: receiver + groupKey stay within PostgreSQL's btree row limit (2704).
_MAX_RECEIVER_BYTES, _MAX_GROUP_KEY_BYTES, _MAX_FINGERPRINT_BYTES = 256, 2_048, 256

_REFUSED = re.compile("[\x00\ud800-\udfff]")  # PostgreSQL text and json refuse NUL and lone surrogates


def storable(text: str, limit: int) -> str:
    """`text` with the characters PostgreSQL refuses replaced, cut to `limit` characters plus a marker."""
    if _REFUSED.search(text):
        text = _REFUSED.sub("\ufffd", text)
    if len(text) <= limit:
        return text
    return text[:limit] + CUT_MARKER.format(len(text) - limit)


def storable_key(text: str, max_bytes: int) -> str:
    """A key that stays unique and stable: unchanged if it fits, else a prefix and its SHA-256."""
    text = storable(text, len(text))
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    digest = hashlib.sha256(encoded).hexdigest()
    prefix = encoded[: max_bytes - 80].decode("utf-8", errors="ignore")
    return f"{prefix}…[sha256:{digest}]"


def _storable_map(mapping: dict[str, str], value_limit: int) -> dict[str, str]:
    items = list(mapping.items())
    cleaned = {storable(key, MAX_KEY_CHARS): storable(value, value_limit) for key, value in items[:MAX_ENTRIES]}
    if len(items) > MAX_ENTRIES:
        cleaned[f"…[cut {len(items) - MAX_ENTRIES} entries]"] = ""
    return cleaned


def _clamped_count(value: Any) -> Any:
    # Alertmanager sends a uint64; a JSON number too big for an int (1e30) is still a count.
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return min(max(int(value), 0), MAX_COUNT)
    return value  # pydantic names the wrong type


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # year 1 east of UTC, or 9999 west of it
        return ZERO_TIME if moment.year == 1 else _LAST_TIME


def _refused_replaced(value: Any) -> Any:
    # Before pydantic's own checks: its min_length cannot read a lone surrogate and would refuse
    # the whole notification ("unable to parse raw data as a unicode string").
    return _REFUSED.sub("\ufffd", value) if isinstance(value, str) else value


_Key = Annotated[str, StringConstraints(min_length=1), BeforeValidator(_refused_replaced)]  # receiver, groupKey, ...


LabelText = Annotated[str, AfterValidator(lambda v: storable(v, MAX_LABEL_CHARS))]
Labels = Annotated[dict[str, str], AfterValidator(lambda v: _storable_map(v, MAX_LABEL_CHARS))]
Annotations = Annotated[dict[str, str], AfterValidator(lambda v: _storable_map(v, MAX_ANNOTATION_CHARS))]
Count = Annotated[int, BeforeValidator(_clamped_count)]
UTCTime = Annotated[datetime, AfterValidator(_utc)]


class _Model(BaseModel):
    # Newer Alertmanagers add fields (notification_reason, routeLabels, ...): accept them.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class WebhookAlert(_Model):
    status: Literal["firing", "resolved"]
    labels: Labels
    annotations: Annotations = Field(default_factory=dict)
    starts_at: UTCTime = Field(alias="startsAt")
    ends_at: UTCTime | None = Field(default=None, alias="endsAt")
    generator_url: LabelText = Field(default="", alias="generatorURL")
    fingerprint: Annotated[_Key, AfterValidator(lambda v: storable_key(v, _MAX_FINGERPRINT_BYTES))]

    @field_validator("labels")
    @classmethod
    def _has_alertname(cls, value: dict[str, str]) -> dict[str, str]:
        if "alertname" not in value:
            raise ValueError("every alert needs an 'alertname' label")
        return value

    @property
    def alertname(self) -> str:
        return self.labels["alertname"]

    @property
    def ended_at(self) -> datetime | None:
        """When the alert stopped firing, or None while it fires."""
        if self.ends_at is None or self.ends_at <= ZERO_TIME or self.status == "firing":
            return None
        return self.ends_at


class WebhookMessage(_Model):
    version: Literal["4"]
    group_key: Annotated[_Key, AfterValidator(lambda v: storable_key(v, _MAX_GROUP_KEY_BYTES))] = \
        Field(alias="groupKey")
    truncated_alerts: Count = Field(default=0, alias="truncatedAlerts")
    status: Literal["firing", "resolved"]
    receiver: Annotated[_Key, AfterValidator(lambda v: storable_key(v, _MAX_RECEIVER_BYTES))]
    group_labels: Labels = Field(default_factory=dict, alias="groupLabels")
    common_labels: Labels = Field(default_factory=dict, alias="commonLabels")
    common_annotations: Annotations = Field(default_factory=dict, alias="commonAnnotations")
    external_url: LabelText = Field(default="", alias="externalURL")
    alerts: list[WebhookAlert] = Field(min_length=1)
    notification_reason: Annotated[str, AfterValidator(lambda v: storable(v, MAX_KEY_CHARS))] | None = None
    route_labels: Labels = Field(default_factory=dict, alias="routeLabels")

    @model_validator(mode="after")
    def _at_most_max_alerts(self) -> WebhookMessage:
        # Firing alerts first: they are what opens and keeps an incident. The rest is only counted.
        # A fingerprint sent twice would break the one-row-per-fingerprint rule: the first one counts.
        ordered = [a for a in self.alerts if a.status == "firing"] + [a for a in self.alerts if a.status != "firing"]
        unique: dict[str, WebhookAlert] = {}
        for alert in ordered:
            unique.setdefault(alert.fingerprint, alert)
        kept = list(unique.values())[:MAX_ALERTS]
        if len(kept) < len(self.alerts):
            self.alerts = kept
            self.truncated_alerts = min(self.truncated_alerts + len(unique) - len(kept), MAX_COUNT)
        return self


# -- API v2: silences ------------------------------------------------------------------------------

class AlertmanagerError(IntegrationError):
    """A silence call that failed; the message names the cause and the fix. `retryable`: no
    answer came (a timeout, a dropped connection) or Alertmanager had trouble (5xx): the call
    may have taken effect, and may succeed later."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class SilenceMatcherInfo(BaseModel):
    """One matcher of a silence, as Alertmanager stores it."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    name: str
    value: str
    is_regex: bool = Field(alias="isRegex")
    is_equal: bool = Field(default=True, alias="isEqual")  # absent from silences made before v0.22


class SilenceInfo(BaseModel):
    """A silence as `GET /api/v2/silences` lists it."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    id: str
    matchers: tuple[SilenceMatcherInfo, ...]
    starts_at: UTCTime = Field(alias="startsAt")
    ends_at: UTCTime = Field(alias="endsAt")
    created_by: str = Field(alias="createdBy")
    comment: str
    state: str  # active | pending | expired (from `status.state`)

    @model_validator(mode="before")
    @classmethod
    def _state_of_status(cls, value: Any) -> Any:
        if isinstance(value, dict) and "state" not in value:
            return {**value, "state": (value.get("status") or {}).get("state", "")}
        return value


_SILENCE_ID = re.compile(r"[0-9A-Za-z-]{1,64}")


def _rfc3339(moment: datetime) -> str:
    # A naive datetime would be sent without a zone; treat it as UTC rather than guess.
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _message(response: httpx.Response) -> str:
    """Alertmanager answers 400 with a bare JSON string and 422 with {"code", "message"}."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500]
    if isinstance(body, dict):
        body = body.get("message") or body
    return str(body).strip()[:500]


def _silence_path(silence_id: str) -> str:
    # Ids are UUIDs. Refuse only what could change the request path ("../", "?", "#"): Alertmanager
    # judges the rest, with its own message.
    if not _SILENCE_ID.fullmatch(silence_id):
        raise AlertmanagerError(f"{silence_id[:100]!r} is not an Alertmanager silence id (a UUID)")
    return f"/api/v2/silence/{silence_id}"


class AlertmanagerClient:
    """Silences through Alertmanager's API v2. Matchers are v2 dicts: name, value, isRegex, isEqual."""

    def __init__(self, base_url: str, *, timeout: float = 10.0, transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AlertmanagerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create_silence(self, matchers: list[dict[str, Any]], starts_at: datetime, ends_at: datetime,
                       created_by: str, comment: str) -> str:
        """The new silence's id."""
        body = {"matchers": matchers, "startsAt": _rfc3339(starts_at), "endsAt": _rfc3339(ends_at),
                "createdBy": created_by, "comment": comment}
        return str(self._call("POST", "/api/v2/silences", json=body)["silenceID"])

    def get_silence(self, silence_id: str) -> dict[str, Any]:
        """The silence as Alertmanager stores it (status.state: active, pending or expired)."""
        return dict(self._call("GET", _silence_path(silence_id)))

    def expire_silence(self, silence_id: str) -> None:
        """Ends the silence now; expiring an expired silence is not an error."""
        self._call("DELETE", _silence_path(silence_id))

    def list_silences(self, filter: Sequence[str] = ()) -> list[SilenceInfo]:  # noqa: A002 - the API's name
        """Every silence Alertmanager keeps (expired ones too, until its retention drops them) whose
        matchers match each of `filter`'s matchers (`alertname="X"`), as `amtool silence query` asks."""
        found = self._call("GET", "/api/v2/silences", params=[("filter", f) for f in filter])
        if not isinstance(found, list):
            raise AlertmanagerError(f"{self.base_url}/api/v2/silences did not answer a list; check ALERTMANAGER_URL")
        try:
            return [SilenceInfo.model_validate(item) for item in found]
        except ValidationError as exc:
            raise AlertmanagerError(f"{self.base_url}/api/v2/silences answered silences of an unknown shape "
                                    f"({exc.error_count()} problems); check ALERTMANAGER_URL") from None

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise AlertmanagerError(f"Alertmanager at {self.base_url} did not answer in time; "
                                    "check ALERTMANAGER_URL", retryable=True) from exc
        except httpx.HTTPError as exc:
            # No answer: the request may or may not have reached it (a connection dropped after it acted).
            raise AlertmanagerError(f"cannot reach Alertmanager at {self.base_url} ({exc.__class__.__name__}); "
                                    "check ALERTMANAGER_URL", retryable=True) from exc
        if response.is_redirect:  # e.g. http to https, or a path prefix the URL lacks
            raise AlertmanagerError(f"{self.base_url}{path} redirects to {response.headers.get('location')!r}; "
                                    "check ALERTMANAGER_URL")
        if response.status_code >= 400:
            raise self._refused(response, path)
        if not response.content:
            return {}
        try:
            return response.json()
        except ValueError:
            raise AlertmanagerError(f"{self.base_url}{path} did not answer JSON; check ALERTMANAGER_URL") from None

    def _refused(self, response: httpx.Response, path: str) -> AlertmanagerError:
        status, message = response.status_code, _message(response)
        # Alertmanager answers DELETE of an unknown id with 500 "silence not found".
        if status == 404 or "silence not found" in message:
            return AlertmanagerError(f"Alertmanager has no {path} (HTTP {status}): a wrong silence id, or "
                                     "ALERTMANAGER_URL does not point at Alertmanager's API v2")
        if status in (401, 403):
            return AlertmanagerError(f"Alertmanager at {self.base_url} refused access (HTTP {status}); check the "
                                     "credentials of the proxy in front of it")
        if status in (400, 422):
            fix = "fix the matchers or the start and end times" if path == "/api/v2/silences" else \
                "check the silence id"
            return AlertmanagerError(f"Alertmanager refused the request (HTTP {status}): {message}; {fix}")
        return AlertmanagerError(f"Alertmanager failed (HTTP {status}): {message or 'no message'}; see its log",
                                 retryable=status >= 500)


def from_environment(env: Mapping[str, str]) -> AlertmanagerClient | None:
    """A client for ALERTMANAGER_URL, or None when it is not set."""
    url = env.get("ALERTMANAGER_URL", "").strip()
    return AlertmanagerClient(url) if url else None
