"""Bar charts as SVG geometry, drawn by the template ``admin/crmify/lead/includes/bar_chart.html``.

Called by the health page (:mod:`crmify.admin.health`) with a :class:`crmify.health.Series`. Server-side:
no JavaScript, no CDN; the page works and prints as it is. Each bar carries a ``<title>`` with its value, so
hovering (or a screen reader) reads the figure.
"""

from __future__ import annotations

from dataclasses import dataclass

from crmify.health import Series

WIDTH = 720
HEIGHT = 180
#: Room for the axis labels on the left and below.
LEFT = 44
BOTTOM = 20
TOP = 8


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    key: str
    title: str


@dataclass(frozen=True)
class Chart:
    """What the template draws: bars, axis labels, an optional limit line, a legend and totals."""

    name: str
    title: str
    bars: list[Bar]
    x_labels: list[tuple[float, str]]
    y_max: str
    legend: list[tuple[str, str]]
    summary: str
    limit_y: float | None = None
    limit_label: str = ""
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    plot_bottom: float = HEIGHT - BOTTOM
    empty: bool = False


def _nice(value: float) -> float:
    """The axis top: ``value`` rounded up to 1, 2 or 5 times a power of ten."""
    if value <= 0:
        return 1.0
    power = 1.0
    while power * 10 <= value:
        power *= 10
    while power > value:
        power /= 10
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power


def bar_chart(
    name: str,
    title: str,
    series: Series,
    labels: dict[str, str],
    *,
    stacked: bool,
    unit: str = "",
    limit: float | None = None,
    limit_label: str = "",
    label_every: int = 1,
    summary: str = "",
) -> Chart:
    """Bars for each point of ``series``: its keys stacked (counts by outcome) or side by side
    (percentiles); ``limit`` draws a dashed line (the daily quota)."""
    values = [point for _label, point in series.points]
    totals = [sum(p.values()) if stacked else max(p.values(), default=0) for p in values]
    top = _nice(max([*totals, limit or 0, 0]))
    plot_width = WIDTH - LEFT - 4
    plot_height = HEIGHT - BOTTOM - TOP
    slot = plot_width / max(len(values), 1)
    gap = min(2.0, slot * 0.15)
    bars: list[Bar] = []
    for index, (label, point) in enumerate(series.points):
        x = LEFT + index * slot + gap / 2
        base = float(HEIGHT - BOTTOM)
        for position, key in enumerate(series.keys):
            value = point[key]
            if not value:
                continue
            height = plot_height * value / top
            text = f"{label}: {labels[key]} {value:g}{unit}"
            if stacked:
                base -= height
                bars.append(Bar(x, base, slot - gap, height, key, text))
            else:
                width = (slot - gap) / len(series.keys)
                bars.append(Bar(x + position * width, base - height, width, height, key, text))
    x_labels = [
        (LEFT + index * slot + slot / 2, label)
        for index, (label, _point) in enumerate(series.points)
        if index % label_every == 0
    ]
    limit_y = HEIGHT - BOTTOM - plot_height * limit / top if limit else None
    return Chart(
        name=name,
        title=title,
        bars=bars,
        x_labels=x_labels,
        y_max=f"{top:g}{unit}",
        legend=[(key, labels[key]) for key in series.keys],
        summary=summary,
        limit_y=limit_y,
        limit_label=limit_label,
        empty=not any(totals),
    )
