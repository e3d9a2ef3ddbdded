"""Line charts as inline SVG, written by hand so the report needs no plotting library and no network.

A chart is a ``<figure>`` holding one ``<svg>`` (a ``<title>`` and a ``<desc>`` that says what the line
does, for screen readers), axes with "nice" ticks, one ``<path>`` per series and, when there are few
points, a circle per point with a native tooltip. A vertical marker (the best checkpoint) can be drawn
across the plot. Long series (a loss logged at every one of 100,000 steps) are thinned to at most
``max_points`` by keeping each bucket's lowest and highest point, so spikes stay visible; the path
records both counts (``data-points`` in the data, ``data-drawn`` on the page).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
PALETTE: tuple[str, ...] = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")

Point = tuple[float, float]


@dataclass
class Series:
    """One line of a chart."""

    label: str
    points: Sequence[Point]
    """(x, y) pairs; non-finite values are left out."""
    color: str | None = None
    """A CSS colour; by default the next colour of ``PALETTE``."""
    highlight: list[Point] = field(default_factory=list)
    """Points drawn with a larger ring on top of the line (e.g. the best validation)."""


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values (1, 2 or 5 times a power of ten apart) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    if high < low:
        low, high = high, low
    if high == low:
        return [low]
    raw = (high - low) / max(1, count - 1)
    magnitude = 10 ** math.floor(math.log10(raw))

    def ticks_with(step: float) -> int:
        return math.floor(high / step + 1e-9) - math.ceil(low / step - 1e-9) + 1

    # the round step whose tick count is closest to ``count`` (the smaller step on a tie)
    step = min((m * magnitude for m in (0.5, 1, 2, 2.5, 5, 10)), key=lambda s: (abs(ticks_with(s) - count), s))
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(0.0 if abs(value) < step * 1e-9 else round(value, 3 - math.floor(math.log10(step))))
        value = first + len(ticks) * step
    return ticks


def format_number(value: float, span: float | None = None) -> str:
    """A short label for a tick or tooltip: ``3e-04`` for tiny values, ``1.2k`` for thousands, else 4 significant digits."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    reference = magnitude if span is None else max(magnitude, span)
    if reference < 1e-2:
        return f"{value:.1e}".replace("e-0", "e-").replace(".0e", "e")
    if magnitude >= 10_000:
        return f"{value / 1000:.4g}k"
    return f"{value:.4g}"


def _thin(points: list[Point], max_points: int) -> list[Point]:
    """At most ``max_points`` points: per bucket of consecutive points, its lowest and highest (in x order)."""
    if len(points) <= max_points:
        return points
    buckets = max(1, max_points // 2)
    size = len(points) / buckets
    kept: list[Point] = []
    for b in range(buckets):
        chunk = points[int(b * size) : int((b + 1) * size)]
        if not chunk:
            continue
        low = min(chunk, key=lambda p: p[1])
        high = max(chunk, key=lambda p: p[1])
        kept.extend(sorted({low, high}, key=lambda p: p[0]))
    if kept[-1] != points[-1]:
        kept.append(points[-1])
    if kept[0] != points[0]:
        kept.insert(0, points[0])
    return kept


def _finite(points: Sequence[Point]) -> list[Point]:
    return sorted(
        ((float(x), float(y)) for x, y in points if math.isfinite(float(x)) and math.isfinite(float(y))),
        key=lambda p: p[0],
    )


@dataclass
class _Frame:
    """The plot area of a chart and its data ranges (after padding), with the scales between them."""

    width: int
    height: int
    x_min: float
    x_max: float
    y_min: float
    y_max: float
    left: int = 58
    right: int = 14
    top: int = 12
    bottom: int = 40

    @property
    def plot_w(self) -> int:
        return self.width - self.left - self.right

    @property
    def plot_h(self) -> int:
        return self.height - self.top - self.bottom

    def sx(self, x: float) -> float:
        return self.left + (x - self.x_min) / (self.x_max - self.x_min) * self.plot_w

    def sy(self, y: float) -> float:
        return self.top + (1 - (y - self.y_min) / (self.y_max - self.y_min)) * self.plot_h


def _frame(lines: list[tuple[Series, list[Point]]], marker_x: float | None, width: int, height: int) -> _Frame:
    """Data ranges of the lines (and the marker), padded by 6 % in y and never below 0 for non-negative data."""
    xs = [x for _, pts in lines for x, _ in pts] + ([marker_x] if marker_x is not None else [])
    ys = [y for _, pts in lines for _, y in pts]
    x_min, x_max = min(xs), max(xs)
    y_min, y_max = min(ys), max(ys)
    if x_max == x_min:
        x_min, x_max = x_min - 1, x_max + 1
    if y_max == y_min:
        pad = abs(y_min) * 0.1 or 1.0
        y_min, y_max = y_min - pad, y_max + pad
    else:
        pad = (y_max - y_min) * 0.06
        y_min, y_max = y_min - pad, y_max + pad
    if min(ys) >= 0 > y_min:  # never show a negative axis for a non-negative quantity
        y_min = 0.0
    return _Frame(width, height, x_min, x_max, y_min, y_max)


def _description(lines: list[tuple[Series, list[Point]]], x_label: str, marker_x: float | None, marker_label: str) -> str:
    """What the lines do, in words (the SVG's ``<desc>``, for screen readers)."""
    desc = "; ".join(
        f"{s.label}: {len(pts)} points, from {format_number(pts[0][1])} at {x_label} {format_number(pts[0][0])} "
        f"to {format_number(pts[-1][1])} at {x_label} {format_number(pts[-1][0])}, "
        f"minimum {format_number(min(p[1] for p in pts))}, maximum {format_number(max(p[1] for p in pts))}"
        for s, pts in lines
    )
    if marker_x is not None:
        desc += f"; {marker_label} at {x_label} {format_number(marker_x)}"
    return desc


def _axes_svg(f: _Frame, x_label: str, y_label: str) -> list[str]:
    """Grid lines, ticks, the frame and the axis titles."""
    parts: list[str] = []
    y_ticks = [t for t in nice_ticks(f.y_min, f.y_max, 5) if f.y_min - 1e-12 <= t <= f.y_max + 1e-12]
    y_span = max(abs(f.y_min), abs(f.y_max))
    for tick in y_ticks:
        y = f.sy(tick)
        parts.append(f'<line class="grid" x1="{f.left}" y1="{y:.1f}" x2="{f.left + f.plot_w}" y2="{y:.1f}"/>')
        parts.append(f'<text class="tick" x="{f.left - 6}" y="{y + 3.5:.1f}" text-anchor="end">{escape(format_number(tick, y_span))}</text>')
    x_ticks = [t for t in nice_ticks(f.x_min, f.x_max, 6) if f.x_min - 1e-12 <= t <= f.x_max + 1e-12]
    bottom = f.top + f.plot_h
    for tick in x_ticks:
        x = f.sx(tick)
        parts.append(f'<line class="tickmark" x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}"/>')
        parts.append(f'<text class="tick" x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">{escape(format_number(tick))}</text>')
    parts.append(f'<rect class="frame" x="{f.left}" y="{f.top}" width="{f.plot_w}" height="{f.plot_h}"/>')
    parts.append(f'<text class="axis" x="{f.left + f.plot_w / 2:.1f}" y="{f.height - 6}" text-anchor="middle">{escape(x_label)}</text>')
    if y_label:
        parts.append(
            f'<text class="axis" transform="translate(13 {f.top + f.plot_h / 2:.1f}) rotate(-90)" text-anchor="middle">{escape(y_label)}</text>'
        )
    return parts


def _marker_svg(f: _Frame, marker_x: float, marker_label: str) -> str:
    """A dashed vertical line at ``marker_x`` with its label on the side that has room."""
    x = f.sx(marker_x)
    anchor = "end" if x > f.left + f.plot_w * 0.7 else "start"
    offset = -4 if anchor == "end" else 4
    return (
        f'<line class="marker" x1="{x:.1f}" y1="{f.top}" x2="{x:.1f}" y2="{f.top + f.plot_h}" data-x="{marker_x:g}"/>'
        f'<text class="marker-label" x="{x + offset:.1f}" y="{f.top + 11}" text-anchor="{anchor}">'
        f"{escape(marker_label)}</text>"
    )


def _series_svg(f: _Frame, index: int, s: Series, pts: list[Point], *, x_label: str, marker_label: str,
                max_points: int, dot_limit: int) -> list[str]:
    """One series: its (thinned) path, a dot with a tooltip per point when there are few, its highlights."""
    color = escape(s.color or PALETTE[index % len(PALETTE)], quote=True)
    drawn = _thin(pts, max_points)
    d = " ".join(f"{'M' if i == 0 else 'L'}{f.sx(x):.1f},{f.sy(y):.1f}" for i, (x, y) in enumerate(drawn))
    parts = [
        f'<path class="line" d="{d}" stroke="{color}" data-series="{escape(s.label, quote=True)}" '
        f'data-points="{len(pts)}" data-drawn="{len(drawn)}"/>'
    ]
    if len(pts) <= dot_limit:
        for x, y in pts:
            parts.append(
                f'<circle class="dot" cx="{f.sx(x):.1f}" cy="{f.sy(y):.1f}" r="2.6" fill="{color}">'
                f"<title>{escape(s.label)}: {format_number(y)} at {escape(x_label)} {format_number(x)}</title></circle>"
            )
    for x, y in _finite(s.highlight):
        parts.append(
            f'<circle class="highlight" cx="{f.sx(x):.1f}" cy="{f.sy(y):.1f}" r="6" stroke="{color}">'
            f"<title>{escape(marker_label)}: {escape(s.label)} {format_number(y)} at {escape(x_label)} {format_number(x)}</title>"
            "</circle>"
        )
    return parts


def _legend(lines: list[tuple[Series, list[Point]]]) -> str:
    if len(lines) <= 1:
        return ""
    items = "".join(
        f'<li><span class="swatch" style="background:{escape(s.color or PALETTE[i % len(PALETTE)], quote=True)}"></span>'
        f"{escape(s.label)}</li>"
        for i, (s, _) in enumerate(lines)
    )
    return f'<ul class="legend">{items}</ul>'


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str = "step",
    y_label: str = "",
    marker_x: float | None = None,
    marker_label: str = "best",
    width: int = 380,
    height: int = 230,
    max_points: int = 1500,
    dot_limit: int = 60,
    chart_id: str = "",
) -> str:
    """An inline-SVG line chart inside a ``<figure>``; an empty-data note when no series has a point.

    Args:
        series: the lines; each keeps its own colour (``PALETTE`` in order by default).
        title: the caption, also the SVG's accessible name.
        x_label, y_label: axis titles.
        marker_x: draw a dashed vertical line here (e.g. the step of the best checkpoint).
        marker_label: the text next to that line.
        width, height: the SVG's size in CSS pixels (it scales down with the page).
        max_points: a longer series is thinned to this many points (``_thin``).
        dot_limit: series with at most this many points get a dot with a tooltip per point.
        chart_id: a prefix for element ids (must be unique in the page).
    """
    lines = [(s, _finite(s.points)) for s in series]
    lines = [(s, pts) for s, pts in lines if pts]
    uid = escape(chart_id or "chart", quote=True)
    if not lines:
        return (
            f'<figure class="chart empty" id="{uid}"><div class="nodata">no data</div>'
            f"<figcaption>{escape(title)}</figcaption></figure>"
        )
    frame = _frame(lines, marker_x, width, height)
    desc = _description(lines, x_label, marker_x, marker_label)
    parts = [
        f'<svg class="chart-svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-labelledby="{uid}-t {uid}-d">'
        f'<title id="{uid}-t">{escape(title)}</title><desc id="{uid}-d">{escape(desc)}</desc>',
        *_axes_svg(frame, x_label, y_label),
    ]
    if marker_x is not None:
        parts.append(_marker_svg(frame, marker_x, marker_label))
    for index, (s, pts) in enumerate(lines):
        parts += _series_svg(frame, index, s, pts, x_label=x_label, marker_label=marker_label, max_points=max_points,
                             dot_limit=dot_limit)
    parts.append("</svg>")
    return f'<figure class="chart" id="{uid}">{"".join(parts)}{_legend(lines)}<figcaption>{escape(title)}</figcaption></figure>'
