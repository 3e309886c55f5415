"""The escalation and PagerDuty policy of the YAML config (keys `escalation:` and `pagerduty:`).

Pure models, no storage: `bot.config` imports them, `bot.escalation` acts on them. The defaults
are the seeds' timetable (../shared/seeds/README.md): respond within 15 min / 30 min / 4 h /
next business day; L2 primary on-call, then L3 engineering lead, then L4 management.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "BusinessHours", "EscalationLevel", "EscalationPolicy", "MaintenanceWindowConfig", "PagerDutyConfig",
    "PagerDutyRoute", "SeverityEscalation", "check_regexes", "labels_match",
]

Severity = Literal["P1", "P2", "P3", "P4"]
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# A week: longer waits are typos (hours or seconds written as minutes), and timers that long
# outlive the incident they guard.
MAX_MINUTES = 10080


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def check_regexes(value: dict[str, str]) -> dict[str, str]:
    for label, pattern in value.items():
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"match[{label!r}] is not a valid regular expression: {exc}") from exc
    return value


def labels_match(match: dict[str, str], labels: dict[str, str]) -> bool:
    """Every label matches its full-match regular expression; an empty matcher matches all."""
    return all(re.fullmatch(p, labels.get(k, "")) for k, p in match.items())


class EscalationLevel(_Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)  # `while` in YAML, `while_` in Python

    name: str = Field(min_length=1, max_length=80, description="shown in Slack, e.g. 'L3 engineering lead'")
    after_minutes: int = Field(ge=0, description="minutes after the page at which this level is paged")
    pagerduty_level: int = Field(ge=1, description="the PagerDuty escalation rule (1-based) paged for it")

    @field_validator("after_minutes")
    @classmethod
    def _within_a_week(cls, value: int) -> int:
        if value > MAX_MINUTES:
            raise ValueError(f"must be 0 to {MAX_MINUTES} minutes (a week)")
        return value
    while_: Literal["unacknowledged", "unresolved"] | None = Field(
        None, alias="while", description="page this level only while the incident is unacknowledged, or "
        "while it is unresolved (an ack does not stop it); null: the severity's escalate_while")

    def condition(self, rule: SeverityEscalation) -> Literal["unacknowledged", "unresolved"]:
        """What must still hold when this level comes due."""
        return self.while_ or rule.escalate_while


class SeverityEscalation(_Strict):
    ack_minutes: int | None = Field(description="acknowledge within this many minutes; null: no deadline")
    page_after_minutes: int | Literal["ack_deadline"] | None = Field(
        "ack_deadline", description="page through PagerDuty this many minutes after opening unless "
        "acknowledged (0: at once), or when the ack deadline passes; null: never page")
    levels: list[EscalationLevel] = Field(default_factory=list, description="paged in order; the first at the page")
    escalate_while: Literal["unacknowledged", "unresolved"] = Field(
        "unacknowledged", description="climb the levels while the incident is unacknowledged, or until resolved "
        "(a level's own `while` overrides it)")
    update_minutes: int | None = Field(description="remind the commander to post a status update this often")
    business_hours_only: bool = Field(False, description="a page due outside business hours waits for the next "
                                                         "business day")

    @field_validator("ack_minutes", "update_minutes")
    @classmethod
    def _within_a_week(cls, value: int | None) -> int | None:
        if value is not None and not 1 <= value <= MAX_MINUTES:
            raise ValueError(f"must be 1 to {MAX_MINUTES} minutes (a week), or null for none")
        return value

    @field_validator("page_after_minutes")
    @classmethod
    def _page_within_a_week(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and not 0 <= value <= MAX_MINUTES:
            raise ValueError(f"must be 0 (at once) to {MAX_MINUTES} minutes, 'ack_deadline' or null (never page)")
        return value

    @model_validator(mode="after")
    def _deadline_known(self) -> SeverityEscalation:
        if self.page_after_minutes == "ack_deadline" and self.ack_minutes is None:
            raise ValueError("page_after_minutes is 'ack_deadline' but ack_minutes is null; give minutes")
        return self

    @property
    def page_minutes(self) -> int | None:
        """Minutes after opening at which the page goes out; None: never."""
        if self.page_after_minutes == "ack_deadline":
            return self.ack_minutes
        return self.page_after_minutes

    @field_validator("levels")
    @classmethod
    def _increasing(cls, value: list[EscalationLevel]) -> list[EscalationLevel]:
        waits = [level.after_minutes for level in value]
        if waits != sorted(waits) or len(set(waits)) != len(waits):
            raise ValueError("levels must have strictly increasing after_minutes")
        if value and value[0].after_minutes != 0:
            raise ValueError("the first level is the one paged, so its after_minutes must be 0")
        return value


def _levels(*steps: tuple[int, str | None]) -> list[dict[str, Any]]:
    names = ("L2 primary on-call", "L3 engineering lead", "L4 management")
    return [{"name": names[i], "after_minutes": w, "pagerduty_level": i + 1, "while": cond}
            for i, (w, cond) in enumerate(steps)]


# The seeds (operations-plan-ja.md 4.1): P1 "escalate at once": L2 is paged on open, L3 if still
# unacknowledged 15 min later (the response deadline), L4 if still unresolved at 60 min (the
# restore target), whoever acknowledged; status updates every 15 min. P2 "escalate after an
# hour": paged when unacknowledged at 30 min, L3 at 60 min (30 after the page). P3 within 4 h,
# in business hours. P4 next business day, never paged.
SEVERITY_DEFAULTS: dict[str, dict[str, Any]] = {
    "P1": {"ack_minutes": 15, "page_after_minutes": 0,
           "levels": _levels((0, None), (15, "unacknowledged"), (60, "unresolved")), "update_minutes": 15},
    "P2": {"ack_minutes": 30, "page_after_minutes": "ack_deadline", "levels": _levels((0, None), (30, None)),
           "update_minutes": 30},
    "P3": {"ack_minutes": 240, "page_after_minutes": "ack_deadline", "levels": _levels((0, None)),
           "update_minutes": None, "business_hours_only": True},
    "P4": {"ack_minutes": None, "page_after_minutes": None, "levels": [], "update_minutes": None,
           "business_hours_only": True},
}


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def _weekdays() -> list[Weekday]:
    return ["mon", "tue", "wed", "thu", "fri"]


class BusinessHours(_Strict):
    timezone: str = Field("UTC", description="IANA time zone, e.g. Asia/Tokyo")
    days: list[Weekday] = Field(default_factory=_weekdays)
    start: time = Field(time(9, 0), description="opening time, local")
    end: time = Field(time(18, 0), description="closing time, local")
    holidays: list[date] = Field(default_factory=list, description="local dates that are not business days")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _sane(self) -> BusinessHours:
        if self.start >= self.end:
            raise ValueError("business hours must start before they end")
        if not self.days:
            raise ValueError("at least one business day is needed")
        return self

    def next_open(self, at: datetime) -> datetime:
        """`at` itself when it falls in business hours, else the next opening (UTC)."""
        zone = ZoneInfo(self.timezone)
        local = at.astimezone(zone)
        for offset in range(0, 370):  # a year of holidays cannot hide every business day
            day = local.date() + timedelta(days=offset)
            if _DAYS[day.weekday()] not in self.days or day in self.holidays:
                continue
            opens = datetime.combine(day, self.start, zone)
            closes = datetime.combine(day, self.end, zone)
            if offset == 0 and opens <= local < closes:
                return at
            if local < opens:
                return opens.astimezone(UTC)
        raise ValueError("no business day within a year; check escalation.business_hours")


class MaintenanceWindowConfig(_Strict):
    """Incidents whose labels match (full-match regexes; empty: all) page nobody from start to end."""

    name: str = Field(min_length=1, max_length=128)
    match: dict[str, str] = Field(default_factory=dict)
    start: datetime
    end: datetime

    @field_validator("match")
    @classmethod
    def _regexes(cls, value: dict[str, str]) -> dict[str, str]:
        return check_regexes(value)

    @model_validator(mode="after")
    def _ordered(self) -> MaintenanceWindowConfig:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("start and end need a time zone, e.g. 2026-12-01T02:00:00Z")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class EscalationPolicy(_Strict):
    """Per severity: the ack deadline, when to page, the levels, the status-update cadence."""

    P1: SeverityEscalation = Field(
        default_factory=lambda: SeverityEscalation(**SEVERITY_DEFAULTS["P1"]),
        description="default: pages L2 on open; L3 if unacknowledged at 15 min; L4 if unresolved at 60 min; "
                    "status updates every 15 min")
    P2: SeverityEscalation = Field(
        default_factory=lambda: SeverityEscalation(**SEVERITY_DEFAULTS["P2"]),
        description="default: pages L2 if unacknowledged at 30 min; L3 at 60 min; status updates every 30 min")
    P3: SeverityEscalation = Field(
        default_factory=lambda: SeverityEscalation(**SEVERITY_DEFAULTS["P3"]),
        description="default: pages L2 if unacknowledged at 4 h, in business hours only")
    P4: SeverityEscalation = Field(
        default_factory=lambda: SeverityEscalation(**SEVERITY_DEFAULTS["P4"]), description="default: never pages")
    business_hours: BusinessHours = Field(default_factory=BusinessHours)
    maintenance: list[MaintenanceWindowConfig] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _merge_defaults(cls, data: Any) -> Any:
        # `P1: {ack_minutes: 10}` changes one field and keeps the seeds' defaults for the rest.
        if isinstance(data, dict):
            data = dict(data)
            for severity, defaults in SEVERITY_DEFAULTS.items():
                if isinstance(data.get(severity), dict):
                    data[severity] = {**defaults, **data[severity]}
        return data

    def for_severity(self, severity: str) -> SeverityEscalation:
        return getattr(self, severity) if severity in SEVERITY_DEFAULTS else self.P3


class PagerDutyRoute(_Strict):
    match: dict[str, str] = Field(min_length=1, description="label -> regex, e.g. {team: payments}")
    routing_key: str | None = Field(None, min_length=32, max_length=32, description="Events API v2 integration key")
    escalation_policy: str | None = Field(None, description="PagerDuty escalation policy id (P…), for who is on call")

    @field_validator("match")
    @classmethod
    def _regexes(cls, value: dict[str, str]) -> dict[str, str]:
        return check_regexes(value)


class PagerDutyConfig(_Strict):
    routing_key: str | None = Field(None, min_length=32, max_length=32,
                                    description="default integration key (else env PAGERDUTY_ROUTING_KEY)")
    escalation_policy: str | None = Field(None, description="default escalation policy id")
    routes: list[PagerDutyRoute] = Field(default_factory=list, description="per service/team; first match wins")

    def route(self, labels: dict[str, str]) -> tuple[str | None, str | None]:
        """(routing key, escalation policy id) for an incident with these labels."""
        for route in self.routes:
            if labels_match(route.match, labels):
                return route.routing_key or self.routing_key, route.escalation_policy or self.escalation_policy
        return self.routing_key, self.escalation_policy
