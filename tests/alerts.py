"""Builders for Alertmanager webhook payloads (version 4), shaped like the real ones."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

ZERO = "0001-01-01T00:00:00Z"


def alert(alertname: str = "ServiceDown", *, status: str = "firing", labels: dict[str, str] | None = None,
          annotations: dict[str, str] | None = None, starts_at: str | None = None) -> dict[str, Any]:
    """An alert as Alertmanager sends it; it started five minutes ago unless `starts_at` says."""
    all_labels = {"alertname": alertname, "severity": "critical", "namespace": "prod", "service": "api",
                  "team": "payments", **(labels or {})}
    fingerprint = hashlib.sha256(repr(sorted(all_labels.items())).encode()).hexdigest()[:16]
    return {
        "status": status,
        "labels": all_labels,
        "annotations": {"summary": f"{alertname} on api", "description": "up == 0 for 1m",
                        "runbook_url": "https://runbooks.example.com/service-down", **(annotations or {})},
        "startsAt": starts_at or (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
        "endsAt": ZERO if status == "firing" else datetime.now(UTC).isoformat(),
        "generatorURL": "http://prometheus.example.com/graph?g0.expr=up+%3D%3D+0",
        "fingerprint": fingerprint,
    }


def group(*alerts: dict[str, Any], group_key: str = '{}/{team="payments"}:{alertname="ServiceDown"}',
          receiver: str = "oncall-bot", **extra: Any) -> dict[str, Any]:
    alerts = alerts or (alert(),)
    firing = any(a["status"] == "firing" for a in alerts)
    common = {k: v for k, v in alerts[0]["labels"].items() if all(a["labels"].get(k) == v for a in alerts)}
    common_ann = {k: v for k, v in alerts[0]["annotations"].items()
                  if all(a["annotations"].get(k) == v for a in alerts)}
    return {
        "version": "4", "groupKey": group_key, "truncatedAlerts": 0,
        "status": "firing" if firing else "resolved", "receiver": receiver,
        "groupLabels": {"alertname": alerts[0]["labels"]["alertname"]},
        "commonLabels": common, "commonAnnotations": common_ann,
        "externalURL": "http://alertmanager.example.com:9093",
        "alerts": list(alerts), **extra,
    }


def resolved(payload: dict[str, Any]) -> dict[str, Any]:
    alerts = [{**a, "status": "resolved", "endsAt": datetime.now(UTC).isoformat()}
              for a in payload["alerts"]]
    return {**payload, "status": "resolved", "alerts": alerts}
