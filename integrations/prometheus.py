"""Prometheus's HTTP API (`/api/v1/query`, `/api/v1/query_range`) on httpx, and range graphs as PNG.

Typed results, one exception type: `PrometheusError` names the cause and the fix. Knows
nothing of incidents or runbooks.
"""

from __future__ import annotations

import functools
import io
import math
import unicodedata
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from integrations.errors import IntegrationError

__all__ = ["PrometheusClient", "PrometheusError", "Sample", "Series", "from_environment"]

MAX_POINTS = 11_000  # Prometheus refuses a range query with more points per series
LEGEND_ENTRIES = 10
TITLE_COLUMNS = 100  # what fits over a 10-inch graph at 10 pt; CJK characters count twice


class PrometheusError(IntegrationError):
    """A query that did not produce data: unreachable, refused, or malformed."""


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class Series:
    labels: dict[str, str]
    points: list[tuple[datetime, float]]


def _value(raw: Any) -> float:
    """Prometheus sends values as strings, including "NaN", "+Inf" and "-Inf"."""
    try:
        return float(raw)
    except (TypeError, ValueError) as exc:
        raise PrometheusError(f"Prometheus returned a non-numeric sample value {raw!r}") from exc


def _at(timestamp: Any) -> datetime:
    return datetime.fromtimestamp(float(timestamp), tz=UTC)


def _unix(moment: datetime) -> str:
    # A naive datetime would otherwise be read as the host's local time.
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return f"{aware.timestamp():.3f}"


def _seconds(value: float) -> str:
    """Exact decimal seconds; `:g` would round large steps down and break the point cap."""
    return f"{value:.6f}".rstrip("0").rstrip(".")


# What to do about each of Prometheus's documented error types (errorType in the JSON body).
_FIXES = {
    "bad_data": "fix the PromQL or the parameters",
    "execution": "the query is valid PromQL but cannot be evaluated; change the query",
    "timeout": "narrow the selectors or the range, or raise the step",
    "canceled": "retry; Prometheus may be shutting down or overloaded",
    "unavailable": "Prometheus is not ready; retry in a minute",
}


class PrometheusClient:
    """Instant and range queries. `query_timeout` is Prometheus's own evaluation limit: by default
    a little under `timeout`, so an expensive query ends with Prometheus's clear 503 rather than
    a dropped connection, and Prometheus stops working on a query nobody waits for."""

    def __init__(self, base_url: str, *, timeout: float = 10.0, headers: Mapping[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None, query_timeout: float | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._query_timeout = query_timeout if query_timeout is not None else max(timeout - 1, timeout * 0.8)
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=dict(headers or {}),
                                  transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PrometheusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def instant(self, query: str) -> list[Sample]:
        """The query's value now: one sample per series (a scalar is one unlabelled sample)."""
        data = self._get("/api/v1/query", {"query": query})
        kind = data.get("resultType")
        result: Any = data.get("result")  # untrusted JSON: a wrong shape is caught below
        try:
            if kind == "scalar":
                return [Sample({}, _value(result[1]))]
            if kind == "string":  # e.g. the query `"text"`: no number to show
                return []
            if kind == "vector":
                return [Sample(dict(item.get("metric", {})), _value(item["value"][1])) for item in result or []]
            if kind == "matrix":  # a range selector in an instant query: the newest point of each
                return [Sample(dict(item.get("metric", {})), _value(item["values"][-1][1]))
                        for item in result or [] if item.get("values")]
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise self._shape_error(exc) from exc
        raise PrometheusError(f"Prometheus returned an unknown result type {kind!r}")

    def range(self, query: str, start: datetime, end: datetime, step: timedelta) -> list[Series]:
        """The query over [start, end]; the step is widened when the span would exceed Prometheus's
        11,000 points per series."""
        span = (end - start).total_seconds()
        seconds = max(step.total_seconds(), math.ceil(span / (MAX_POINTS - 1)), 1.0)
        data = self._get("/api/v1/query_range", {"query": query, "start": _unix(start), "end": _unix(end),
                                                 "step": _seconds(seconds)})
        if data.get("resultType") != "matrix":
            raise PrometheusError(f"Prometheus returned {data.get('resultType')!r} for a range query")
        try:
            return [Series(dict(item.get("metric", {})), [(_at(t), _value(v)) for t, v in item.get("values", [])])
                    for item in data.get("result") or []]
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise self._shape_error(exc) from exc

    def _get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        params = {**params, "timeout": _seconds(self._query_timeout)}
        try:
            response = self._http.get(path, params=params)
        except httpx.TimeoutException as exc:
            raise PrometheusError(f"Prometheus at {self.base_url} did not answer in time; the query may be too "
                                  "expensive, or check PROMETHEUS_URL") from exc
        except httpx.HTTPError as exc:
            raise PrometheusError(f"cannot reach Prometheus at {self.base_url} ({exc.__class__.__name__}: {exc}); "
                                  "check PROMETHEUS_URL") from exc
        if response.status_code in (401, 403):
            raise PrometheusError(f"Prometheus at {self.base_url} refused access (HTTP {response.status_code}); "
                                  "check the credentials passed as headers")
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or "status" not in body:
            raise self._not_json(response, path)
        if response.status_code != 200 or body["status"] != "success":
            kind = str(body.get("errorType") or "error")
            error = body.get("error") or f"HTTP {response.status_code}"
            fix = _FIXES.get(kind, "see Prometheus's log")
            raise PrometheusError(f"Prometheus refused the query ({kind}, HTTP {response.status_code}): {error}; "
                                  f"{fix}")
        return dict(body.get("data") or {})

    def _not_json(self, response: httpx.Response, path: str) -> PrometheusError:
        if response.status_code == 503:  # the plain-text answer while it starts or replays its WAL
            return PrometheusError(f"Prometheus at {self.base_url} is not ready (HTTP 503); retry in a minute")
        return PrometheusError(f"{self.base_url}{path} answered HTTP {response.status_code} with something that is "
                               "not Prometheus's JSON API; check PROMETHEUS_URL (the server's base URL, e.g. "
                               "http://prometheus:9090)")

    def _shape_error(self, exc: Exception) -> PrometheusError:
        return PrometheusError(f"Prometheus at {self.base_url} answered in an unexpected shape "
                               f"({exc.__class__.__name__}: {exc}); check PROMETHEUS_URL")

    @staticmethod
    def render_png(series: list[Series], title: str) -> bytes:
        """A line graph, one line per series (UTC time axis), as PNG bytes."""
        from matplotlib import dates as mdates
        from matplotlib.backends.backend_agg import (
            FigureCanvasAgg,  # Agg, without switching pyplot's backend
        )
        from matplotlib.figure import Figure

        # DejaVu has no CJK glyphs: fall back to any CJK font installed (the Docker image ships Noto CJK).
        family = ["DejaVu Sans", *_cjk_fonts()]
        figure = Figure(figsize=(10, 4.5), dpi=100)
        canvas = FigureCanvasAgg(figure)
        axes = figure.subplots()
        for n, item in enumerate(series):
            times = [t for t, _ in item.points]
            values = [v if math.isfinite(v) else math.nan for _, v in item.points]  # ±Inf cannot be drawn
            axes.plot(times, values,  # type: ignore[arg-type]  # matplotlib's stubs omit datetimes, which it plots
                      linewidth=1.2, label=_legend(item.labels) if n < LEGEND_ENTRIES else None)
        # parse_math off: "$1" in a label_replace query is not TeX.
        axes.set_title(_clip(title, TITLE_COLUMNS), fontsize=10, family=family, parse_math=False)
        locator = mdates.AutoDateLocator(tz=UTC)
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))
        axes.set_xlabel("UTC")
        axes.grid(True, alpha=0.3)
        if series:
            more = f"+{len(series) - LEGEND_ENTRIES} more series" if len(series) > LEGEND_ENTRIES else None
            legend = axes.legend(loc="upper left", title=more, title_fontsize=7, prop={"family": family, "size": 7})
            for text in legend.get_texts():
                text.set_parse_math(False)
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            # Without a CJK font, such characters draw as boxes; the graph is still worth posting.
            warnings.filterwarnings("ignore", message="Glyph .* missing from font")
            figure.tight_layout()
            canvas.print_png(buffer)
        return buffer.getvalue()


@functools.cache
def _cjk_fonts() -> tuple[str, ...]:
    from matplotlib import font_manager

    names = {font.name for font in font_manager.fontManager.ttflist}
    return tuple(sorted(n for n in names if any(k in n for k in ("CJK", "Gothic", "Mincho", "Hei", "Noto Sans JP"))))


def _clip(text: str, columns: int) -> str:
    """One line of at most `columns` display columns (wide CJK characters take two)."""
    text = " ".join(text.split())
    widths = [2 if unicodedata.east_asian_width(char) in ("W", "F") else 1 for char in text]
    if sum(widths) <= columns:
        return text
    used = 0
    for i, width in enumerate(widths):
        used += width
        if used > columns - 1:  # room for the ellipsis
            return text[:i] + "…"
    return text


def _legend(labels: dict[str, str]) -> str:
    """Prometheus's own notation: name{k="v", ...}."""
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    name = labels.get("__name__", "")
    return _clip(name + "{" + inner + "}" if inner or not name else name, 80)


def from_environment(env: Mapping[str, str]) -> PrometheusClient | None:
    """A client for PROMETHEUS_URL, or None when it is not set."""
    url = env.get("PROMETHEUS_URL", "").strip()
    return PrometheusClient(url) if url else None
