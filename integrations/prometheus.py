"""Prometheus's HTTP API (`/api/v1/query`, `/api/v1/query_range`) on httpx, and range graphs as PNG.

Typed results, one exception type: `PrometheusError` names the cause and the fix. Knows
nothing of incidents or runbooks.
"""

from __future__ import annotations

import functools
import io
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx

__all__ = ["PrometheusClient", "PrometheusError", "Sample", "Series", "from_environment"]

MAX_POINTS = 11_000  # Prometheus refuses a range query with more points per series
LEGEND_ENTRIES = 10


class PrometheusError(Exception):
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
    return datetime.fromtimestamp(float(timestamp), tz=timezone.utc)


class PrometheusClient:
    def __init__(self, base_url: str, *, timeout: float = 10.0, headers: Mapping[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=dict(headers or {}),
                                  transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "PrometheusClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def instant(self, query: str) -> list[Sample]:
        """The query's value now: one sample per series (a scalar is one unlabelled sample)."""
        data = self._get("/api/v1/query", {"query": query})
        kind, result = data.get("resultType"), data.get("result")
        if kind in ("scalar", "string"):
            return [Sample({}, _value(result[1]))] if kind == "scalar" else []
        if kind == "vector":
            return [Sample(dict(item.get("metric", {})), _value(item["value"][1])) for item in result or []]
        if kind == "matrix":  # a range selector in an instant query: the newest point of each
            return [Sample(dict(item.get("metric", {})), _value(item["values"][-1][1]))
                    for item in result or [] if item.get("values")]
        raise PrometheusError(f"Prometheus returned an unknown result type {kind!r}")

    def range(self, query: str, start: datetime, end: datetime, step: timedelta) -> list[Series]:
        """The query over [start, end]; the step is widened when the span would exceed Prometheus's
        11,000 points per series."""
        span = (end - start).total_seconds()
        seconds = max(step.total_seconds(), math.ceil(span / (MAX_POINTS - 1)), 1.0)
        data = self._get("/api/v1/query_range", {"query": query, "start": f"{start.timestamp():.3f}",
                                                 "end": f"{end.timestamp():.3f}", "step": f"{seconds:g}"})
        if data.get("resultType") != "matrix":
            raise PrometheusError(f"Prometheus returned {data.get('resultType')!r} for a range query")
        return [Series(dict(item.get("metric", {})), [(_at(t), _value(v)) for t, v in item.get("values", [])])
                for item in data.get("result") or []]

    def _get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        try:
            response = self._http.get(path, params=params)
        except httpx.TimeoutException as exc:
            raise PrometheusError(f"Prometheus at {self.base_url} did not answer in time; the query may be too "
                                  "expensive, or check PROMETHEUS_URL") from exc
        except httpx.HTTPError as exc:
            raise PrometheusError(f"cannot reach Prometheus at {self.base_url} ({exc.__class__.__name__}: {exc}); "
                                  "check PROMETHEUS_URL") from exc
        try:
            body = response.json()
        except ValueError:
            raise PrometheusError(f"{self.base_url}{path} answered HTTP {response.status_code} with something "
                                  "that is not Prometheus's JSON; check PROMETHEUS_URL") from None
        if response.status_code != 200 or body.get("status") != "success":
            error = body.get("error") or f"HTTP {response.status_code}"
            raise PrometheusError(f"Prometheus refused the query ({body.get('errorType', 'error')}): {error}")
        return dict(body.get("data") or {})

    @staticmethod
    def render_png(series: list[Series], title: str) -> bytes:
        """A line graph, one line per series (UTC time axis), as PNG bytes."""
        import matplotlib

        matplotlib.use("Agg")  # no display; safe in threads
        from matplotlib import dates as mdates
        from matplotlib.figure import Figure

        # DejaVu has no CJK glyphs: fall back to any CJK font installed (the Docker image ships Noto CJK).
        family = ["DejaVu Sans", *_cjk_fonts()]
        figure = Figure(figsize=(10, 4.5), dpi=100)
        axes = figure.subplots()
        for n, item in enumerate(series):
            times = [t for t, v in item.points]
            values = [v if math.isfinite(v) else math.nan for _, v in item.points]
            axes.plot(times, values, linewidth=1.2, label=_legend(item.labels) if n < LEGEND_ENTRIES else None)
        axes.set_title(title if len(title) <= 90 else title[:89] + "…", fontsize=10, family=family)
        axes.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=timezone.utc))
        axes.set_xlabel("UTC")
        axes.grid(True, alpha=0.3)
        if any(item.labels for item in series):
            extra = f" (+{len(series) - LEGEND_ENTRIES} more)" if len(series) > LEGEND_ENTRIES else ""
            axes.legend(loc="upper left", title=extra or None, title_fontsize=7,
                        prop={"family": family, "size": 7})
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            # Without a CJK font, such characters draw as boxes; the graph is still worth posting.
            warnings.filterwarnings("ignore", message="Glyph .* missing from font")
            figure.tight_layout()
            figure.savefig(buffer, format="png")
        return buffer.getvalue()


@functools.cache
def _cjk_fonts() -> tuple[str, ...]:
    from matplotlib import font_manager

    names = {font.name for font in font_manager.fontManager.ttflist}
    return tuple(sorted(n for n in names if any(k in n for k in ("CJK", "Gothic", "Mincho", "Hei", "Noto Sans JP"))))


def _legend(labels: dict[str, str]) -> str:
    text = "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__") + "}"
    return text if len(text) <= 80 else text[:79] + "…"


def from_environment(env: Mapping[str, str]) -> PrometheusClient | None:
    url = env.get("PROMETHEUS_URL")
    return PrometheusClient(url) if url else None
