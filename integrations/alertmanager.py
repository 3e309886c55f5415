"""Prometheus Alertmanager: the webhook payload it sends us (version 4).

Knows nothing of incidents. Alert labels and annotations are untrusted input:
they are bounded here and validated again wherever they are used.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["WebhookAlert", "WebhookMessage", "ZERO_TIME"]

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
