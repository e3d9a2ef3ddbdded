"""Small PNG plots drawn with Pillow (already a dependency): bars, lines, a matrix heat map, a scatter, an overlay.

mrg ships no plotting library (the HTML page draws its own SVG charts); these few plot types are enough for
``mrg analyze`` and keep the install light. Every plot has a title, labelled axes and a legend where there are
several series; colours are the page's Okabe-Ito palette (``mrg.viewer.charts.PALETTE``), safe for the common
colour-vision deficiencies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mrg.files import atomic_write
from mrg.viewer.charts import PALETTE, format_number, nice_ticks

WIDTH, HEIGHT = 640, 400
MARGIN = (64, 16, 40, 52)  # left, right, top, bottom


def _font(size: int = 13) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def _rgb(color: str) -> tuple[int, int, int]:
    return tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def save_png(image: Any, path: Path) -> Path:
    """Write ``image`` (a PIL image) atomically as PNG."""
    with atomic_write(path, "wb", encoding=None) as handle:
        image.save(handle, format="PNG", optimize=True)
    return path


class _Axes:
    """A plot area with linear x and y scales, ticks and titles."""

    def __init__(self, title: str, x_range: tuple[float, float], y_range: tuple[float, float], *,
                 x_label: str, y_label: str, width: int = WIDTH, height: int = HEIGHT) -> None:
        from PIL import Image, ImageDraw

        self.image = Image.new("RGB", (width, height), "white")
        self.draw = ImageDraw.Draw(self.image)
        self.left, right, self.top, bottom = MARGIN
        self.w, self.h = width - self.left - right, height - self.top - bottom
        lo, hi = y_range
        self.y0, self.y1 = (lo, hi) if hi > lo else (lo - 1, hi + 1)
        lo, hi = x_range
        self.x0, self.x1 = (lo, hi) if hi > lo else (lo - 1, hi + 1)
        font = _font(15)
        self.draw.text((width / 2, 8), title, fill="black", font=font, anchor="mt")
        self.draw.text((self.left + self.w / 2, height - 8), x_label, fill="black", font=_font(), anchor="mb")
        label = Image.new("RGB", (self.h, 18), "white")
        ImageDraw.Draw(label).text((self.h / 2, 9), y_label, fill="black", font=_font(), anchor="mm")
        self.image.paste(label.rotate(90, expand=True), (2, self.top))
        self.draw.rectangle([self.left, self.top, self.left + self.w, self.top + self.h], outline="#444444")
        for tick in nice_ticks(self.y0, self.y1, 5):
            if self.y0 <= tick <= self.y1:
                y = self.sy(tick)
                self.draw.line([self.left, y, self.left + self.w, y], fill="#e4e4e4")
                self.draw.text((self.left - 5, y), format_number(tick), fill="#333333", font=_font(11), anchor="rm")

    def x_ticks(self, ticks: Sequence[float] | None = None, labels: Sequence[str] | None = None) -> None:
        ticks = list(ticks if ticks is not None else nice_ticks(self.x0, self.x1, 6))
        for i, tick in enumerate(ticks):
            if self.x0 <= tick <= self.x1:
                text = labels[i] if labels is not None else format_number(tick)
                x = self.sx(tick)
                self.draw.text((x, self.top + self.h + 4), text, fill="#333333", font=_font(11), anchor="mt")

    def sx(self, x: float) -> float:
        return self.left + (x - self.x0) / (self.x1 - self.x0) * self.w

    def sy(self, y: float) -> float:
        return self.top + (1 - (y - self.y0) / (self.y1 - self.y0)) * self.h

    def legend(self, labels: Sequence[str]) -> None:
        x, y = self.left + 8, self.top + 6
        for i, label in enumerate(labels):
            self.draw.rectangle([x, y + 2, x + 10, y + 12], fill=PALETTE[i % len(PALETTE)])
            self.draw.text((x + 14, y), label, fill="black", font=_font(12))
            y += 16


def stacked_bars(path: Path, title: str, categories: Sequence[str], parts: dict[str, Sequence[float]], *,
                 x_label: str, y_label: str) -> Path:
    """One stacked bar per category (e.g. per layer), one colour per part (e.g. token group)."""
    totals = [sum(values[i] for values in parts.values()) for i in range(len(categories))]
    axes = _Axes(title, (-0.5, len(categories) - 0.5), (0.0, max([1.0, *totals]) * 1.15), x_label=x_label, y_label=y_label)
    width = 0.8 * axes.w / max(1, len(categories))
    for i in range(len(categories)):
        bottom = 0.0
        for j, values in enumerate(parts.values()):
            top = bottom + values[i]
            x = axes.sx(i)
            axes.draw.rectangle([x - width / 2, axes.sy(top), x + width / 2, axes.sy(bottom)], fill=PALETTE[j % len(PALETTE)])
            bottom = top
    step = max(1, math.ceil(len(categories) / 16))
    shown = list(range(0, len(categories), step))
    axes.x_ticks(shown, [categories[i] for i in shown])
    axes.legend(list(parts))
    return save_png(axes.image, path)


def lines(path: Path, title: str, series: dict[str, Sequence[tuple[float, float]]], *, x_label: str, y_label: str,
          y_range: tuple[float, float] | None = None) -> Path:
    """One line per series of (x, y) points."""
    points = [p for pts in series.values() for p in pts if math.isfinite(p[1])]
    xs, ys = [p[0] for p in points] or [0.0], [p[1] for p in points] or [0.0]
    axes = _Axes(title, (min(xs), max(xs)), y_range or (min(0.0, min(ys)), max(ys) * 1.1 or 1.0),
                 x_label=x_label, y_label=y_label)
    for i, pts in enumerate(series.values()):
        drawn = [(axes.sx(x), axes.sy(y)) for x, y in pts if math.isfinite(y)]
        if len(drawn) > 1:
            axes.draw.line(drawn, fill=PALETTE[i % len(PALETTE)], width=2)
        for x, y in drawn if len(drawn) <= 40 else []:
            axes.draw.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=PALETTE[i % len(PALETTE)])
    axes.x_ticks()
    axes.legend(list(series))
    return save_png(axes.image, path)


def histograms(path: Path, title: str, samples: dict[str, Sequence[float]], *, x_label: str, bins: int = 40) -> Path:
    """Overlaid histograms (as density outlines, so samples of different sizes compare) of each named sample."""
    values = [v for s in samples.values() for v in s if math.isfinite(v)]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    edges = np.linspace(low, high if high > low else low + 1, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    series = {}
    for name, sample in samples.items():
        counts, _ = np.histogram(np.asarray(sample, dtype=float), bins=edges)
        density = counts / max(1, counts.sum()) / (edges[1] - edges[0])
        series[f"{name} (n={len(sample)})"] = list(zip(centres.tolist(), density.tolist(), strict=True))
    return lines(path, title, series, x_label=x_label, y_label="density")


def scatter(path: Path, title: str, series: dict[str, Sequence[tuple[float, float]]], *, x_label: str, y_label: str) -> Path:
    """Points of each series (semi-transparent, so dense regions show)."""
    from PIL import Image, ImageDraw

    points = [p for pts in series.values() for p in pts]
    xs, ys = [p[0] for p in points] or [0.0], [p[1] for p in points] or [0.0]
    pad_y = (max(ys) - min(ys)) * 0.05 or 0.1
    axes = _Axes(title, (min(xs) - 0.02, max(xs) + 0.02), (min(ys) - pad_y, max(ys) + pad_y), x_label=x_label, y_label=y_label)
    layer = Image.new("RGBA", axes.image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for i, pts in enumerate(series.values()):
        colour = (*_rgb(PALETTE[i % len(PALETTE)]), 110)
        for x, y in pts:
            cx, cy = axes.sx(x), axes.sy(y)
            draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=colour)
    axes.image.paste(layer, (0, 0), layer)
    axes.x_ticks()
    axes.legend(list(series))
    return save_png(axes.image, path)


def _colormap(values: np.ndarray) -> np.ndarray:
    """[0, 1] values -> (..., 3) uint8 colours of a perceptually ordered map (dark blue -> teal -> yellow)."""
    anchors = np.array([[13, 8, 135], [84, 2, 163], [139, 10, 165], [185, 50, 137], [219, 92, 104],
                        [244, 136, 73], [254, 188, 43], [240, 249, 33]], dtype=float)  # plasma, 8 stops
    scaled = np.clip(values, 0, 1) * (len(anchors) - 1)
    low = np.floor(scaled).astype(int).clip(0, len(anchors) - 2)
    frac = (scaled - low)[..., None]
    return (anchors[low] * (1 - frac) + anchors[low + 1] * frac).astype(np.uint8)


def matrix(path: Path, title: str, values: np.ndarray, *, row_label: str, col_label: str,
           row_names: Sequence[str] | None = None, col_names: Sequence[str] | None = None, cell: int = 28) -> Path:
    """A heat map of a (R, C) matrix (e.g. layers x heads), with the value range in the title."""
    from PIL import Image, ImageDraw

    rows, cols = values.shape
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    norm = (values - low) / (high - low) if high > low else np.zeros_like(values)
    left = 24 + 7 * max([len(n) for n in row_names or []] + [3])
    top, width, height = 40, left + cols * cell + 20, 40 + rows * cell + 40
    image = Image.new("RGB", (max(width, 360), height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((image.width / 2, 6), title, fill="black", font=_font(14), anchor="mt")
    draw.text((image.width / 2, 22), f"{format_number(low)} (dark) to {format_number(high)} (light)", fill="#333333",
              font=_font(11), anchor="mt")
    colours = _colormap(np.nan_to_num(norm))
    for r in range(rows):
        for c in range(cols):
            x, y = left + c * cell, top + r * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=tuple(int(v) for v in colours[r, c]))
        name = row_names[r] if row_names is not None else str(r)
        draw.text((left - 4, top + r * cell + cell / 2), name, fill="#333333", font=_font(11), anchor="rm")
    for c in range(cols):
        name = col_names[c] if col_names is not None else str(c)
        draw.text((left + c * cell + cell / 2, top + rows * cell + 3), name, fill="#333333", font=_font(11), anchor="mt")
    draw.text((left + cols * cell / 2, height - 6), col_label, fill="black", font=_font(12), anchor="mb")
    draw.text((4, top - 12), row_label, fill="black", font=_font(12))
    return save_png(image, path)


def overlay(path: Path, title: str, image: np.ndarray, heat: np.ndarray, *, size: int = 256, alpha: float = 0.5) -> Path:
    """The (H, W) grayscale ``image`` in [0, 1] next to itself with the (h, w) ``heat`` map (upsampled) over it."""
    from PIL import Image, ImageDraw

    gray = Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8), mode="L").resize((size, size), Image.Resampling.BILINEAR)
    span = float(heat.max() - heat.min())
    norm = (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)
    heat_img = Image.fromarray(norm.astype(np.float32), mode="F").resize((size, size), Image.Resampling.BILINEAR)
    coloured = Image.fromarray(_colormap(np.asarray(heat_img)), mode="RGB")
    blended = Image.blend(gray.convert("RGB"), coloured, alpha)
    canvas = Image.new("RGB", (2 * size + 30, size + 34), "white")
    canvas.paste(gray.convert("RGB"), (10, 28))
    canvas.paste(blended, (size + 20, 28))
    ImageDraw.Draw(canvas).text((canvas.width / 2, 6), title, fill="black", font=_font(13), anchor="mt")
    return save_png(canvas, path)
