"""Prometheus Alertmanager: the webhook payload it sends us (version 4), and its API v2 for silences.

Knows nothing of incidents. Alert labels and annotations are untrusted input:
they are bounded here and validated again wherever they are used.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["AlertmanagerClient", "AlertmanagerError", "WebhookAlert", "WebhookMessage", "ZERO_TIME",
           "from_environment"]

# Alertmanager marks a still-firing alert with Go's zero time.
ZERO_TIME = datetime(1, 1, 1, tzinfo=timezone.utc)

_MAX_LABELS = 64
_MAX_KEY = 256
_MAX_VALUE = 16_384


def _bounded(mapping: dict[str, str], what: str) -> dict[str, str]:
    if len(mapping) > _MAX_LABELS:
        raise ValueError(f"{what} has {len(mapping)} entries; at most {_MAX_LABELS} are accepted")
    for key, value in mapping.items():
        if len(key) > _MAX_KEY:
            raise ValueError(f"{what} key {key[:40]!r}... is longer than {_MAX_KEY} characters")
        if len(value) > _MAX_VALUE:
            raise ValueError(f"{what}[{key!r}] is longer than {_MAX_VALUE} characters")
    return mapping


class _Model(BaseModel):
    # Newer Alertmanagers add fields (notification_reason, routeLabels, ...): accept them.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class WebhookAlert(_Model):
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime = Field(alias="startsAt")
    ends_at: datetime | None = Field(default=None, alias="endsAt")
    generator_url: str = Field(default="", alias="generatorURL", max_length=4096)
    fingerprint: str = Field(min_length=1, max_length=64)

    @field_validator("labels")
    @classmethod
    def _labels_bounded(cls, value: dict[str, str]) -> dict[str, str]:
        if "alertname" not in value:
            raise ValueError("every alert needs an 'alertname' label")
        return _bounded(value, "labels")

    @field_validator("annotations")
    @classmethod
    def _annotations_bounded(cls, value: dict[str, str]) -> dict[str, str]:
        return _bounded(value, "annotations")

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
    group_key: str = Field(alias="groupKey", min_length=1, max_length=2048)
    truncated_alerts: int = Field(default=0, alias="truncatedAlerts", ge=0)
    status: Literal["firing", "resolved"]
    receiver: str = Field(min_length=1, max_length=256)
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[str, str] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field(default="", alias="externalURL", max_length=4096)
    alerts: list[WebhookAlert] = Field(min_length=1, max_length=1000)
    notification_reason: str | None = None
    route_labels: dict[str, str] = Field(default_factory=dict, alias="routeLabels")

    @field_validator("group_labels", "common_labels", "common_annotations", "route_labels")
    @classmethod
    def _maps_bounded(cls, value: dict[str, str]) -> dict[str, str]:
        return _bounded(value, "map")


# -- API v2: silences ------------------------------------------------------------------------------

class AlertmanagerError(Exception):
    """A silence call that failed; the message names the cause and the fix."""


_SILENCE_ID = re.compile(r"[0-9A-Za-z-]{1,64}")


def _rfc3339(moment: datetime) -> str:
    # A naive datetime would be sent without a zone; treat it as UTC rather than guess.
    aware = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return aware.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise AlertmanagerError(f"Alertmanager at {self.base_url} did not answer in time; "
                                    "check ALERTMANAGER_URL") from exc
        except httpx.HTTPError as exc:
            raise AlertmanagerError(f"cannot reach Alertmanager at {self.base_url} ({exc.__class__.__name__}); "
                                    "check ALERTMANAGER_URL") from exc
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
        return AlertmanagerError(f"Alertmanager failed (HTTP {status}): {message or 'no message'}; see its log")


def from_environment(env: Mapping[str, str]) -> AlertmanagerClient | None:
    """A client for ALERTMANAGER_URL, or None when it is not set."""
    url = env.get("ALERTMANAGER_URL", "").strip()
    return AlertmanagerClient(url) if url else None
