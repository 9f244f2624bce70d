"""Self-contained HTML evaluation reports and the figures that go in them.

`render_html_report` writes one HTML page with no external assets: a PROMOTE / DO NOT PROMOTE banner, the
gates table, then the sections in order. Every piece of text is escaped; figures are embedded as base64
PNG. The plot helpers build `matplotlib.figure.Figure` objects on the Agg canvas (no pyplot, no display,
no global state) and draw NaN values as gaps.
"""

from __future__ import annotations

import base64
import html
import io
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from mangadistill.core.gates import GateDecision

_PASS_COLOR = "#1b7f3b"
_FAIL_COLOR = "#b3261e"
_STYLE = f"""
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #1d1d1f; line-height: 1.45; padding: 0 1rem; }}
.banner {{ color: #fff; padding: 1rem 1.5rem; border-radius: 8px; font-size: 1.6rem; font-weight: 700; }}
.banner small {{ display: block; font-size: 0.95rem; font-weight: 400; }}
.promote {{ background: {_PASS_COLOR}; }}
.reject {{ background: {_FAIL_COLOR}; }}
table {{ border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.92rem; }}
th, td {{ border: 1px solid #d0d0d5; padding: 0.3rem 0.7rem; text-align: left; vertical-align: top; }}
th {{ background: #f2f2f5; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
td.pass {{ color: {_PASS_COLOR}; font-weight: 700; }}
td.fail {{ color: {_FAIL_COLOR}; font-weight: 700; }}
figure {{ margin: 0.5rem 0 1.5rem; }}
figure img {{ max-width: 100%; }}
figcaption {{ color: #555; font-size: 0.9rem; }}
"""


def format_value(value: object) -> str:
    """Display text for a cell: numbers to 4 significant digits, None / NaN as "n/a"."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return "n/a" if math.isnan(value) else f"{float(value):.4g}"
    return str(value)


def _cell(value: object, tag: str = "td") -> str:
    numeric = isinstance(value, numbers.Real) and not isinstance(value, bool)
    css = ' class="num"' if numeric and tag == "td" else ""
    return f"<{tag}{css}>{html.escape(format_value(value))}</{tag}>"


def _table(columns: Sequence[object], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(_cell(column, "th") for column in columns)
    body = "".join("<tr>" + "".join(_cell(value) for value in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


@dataclass
class KeyValueSection:
    """A two-column table of named values (run parameters, headline metrics)."""

    title: str
    items: Mapping[str, object]

    def to_html(self) -> str:
        return _table(["name", "value"], list(self.items.items()))


@dataclass
class TableSection:
    """A table with a header row; every row has one value per column."""

    title: str
    columns: Sequence[str]
    rows: Sequence[Sequence[object]]

    def __post_init__(self) -> None:
        for index, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(
                    f"table {self.title!r}: row {index} has {len(row)} values for {len(self.columns)} columns"
                )

    def to_html(self) -> str:
        return _table(self.columns, self.rows)


@dataclass
class FigureSection:
    """A matplotlib figure, embedded as a base64 PNG."""

    title: str
    figure: Figure
    caption: str = ""
    dpi: int = 100

    def to_html(self) -> str:
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=self.dpi, bbox_inches="tight")
        encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
        alt = html.escape(self.caption or self.title)
        caption = f"<figcaption>{html.escape(self.caption)}</figcaption>" if self.caption else ""
        return f'<figure><img alt="{alt}" src="data:image/png;base64,{encoded}">{caption}</figure>'


@dataclass
class ParagraphSection:
    """Plain text; blank lines separate paragraphs."""

    title: str
    text: str

    def to_html(self) -> str:
        paragraphs = [part.strip() for part in self.text.split("\n\n") if part.strip()]
        return "".join(f"<p>{html.escape(part)}</p>" for part in paragraphs)


Section = KeyValueSection | TableSection | FigureSection | ParagraphSection


def _gates_html(decision: GateDecision) -> str:
    if not decision.results:
        return "<p>No gates were evaluated.</p>"
    rows = []
    for result in decision.results:
        verdict = '<td class="pass">pass</td>' if result.passed else '<td class="fail">FAIL</td>'
        cells = [_cell(result.metric), _cell(result.op), _cell(result.threshold), _cell(result.value)]
        rows.append("<tr>" + "".join(cells) + verdict + _cell(result.reason) + "</tr>")
    head = "".join(_cell(c, "th") for c in ("metric", "op", "threshold", "value", "result", "reason"))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def render_html_report(title: str, decision: GateDecision, sections: Sequence[Section] = ()) -> str:
    """One self-contained HTML page: decision banner, gates table, then `sections` in order."""
    passed = sum(result.passed for result in decision.results)
    verdict, css = ("PROMOTE", "promote") if decision.promote else ("DO NOT PROMOTE", "reject")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<div class="banner {css}">{verdict}'
        f"<small>{passed} of {len(decision.results)} gates passed</small></div>",
        "<h2>Gates</h2>",
        _gates_html(decision),
    ]
    for section in sections:
        parts.append(f"<section><h2>{html.escape(section.title)}</h2>{section.to_html()}</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _new_figure(width: float, height: float) -> tuple[Figure, Axes]:
    """A figure on the Agg canvas with one axes."""
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def grouped_bar_chart(
    categories: Sequence[str],
    series: Mapping[str, ArrayLike],
    title: str,
    ylabel: str,
) -> Figure:
    """One group of bars per category, one bar per series (e.g. per-class recall of three models).

    A NaN value draws no bar and an "n/a" mark at the baseline.
    """
    if not series:
        raise ValueError("grouped_bar_chart: no series given")
    figure, axes = _new_figure(max(8.0, 0.9 * len(categories) + 2), 4.5)
    positions = np.arange(len(categories))
    width = 0.8 / len(series)
    for index, (name, raw_values) in enumerate(series.items()):
        values = np.asarray(raw_values, dtype=np.float64)
        if values.shape != (len(categories),):
            raise ValueError(
                f"grouped_bar_chart: series {name!r} has shape {values.shape}, "
                f"expected {len(categories)} values"
            )
        offsets = positions - 0.4 + width * (index + 0.5)
        finite = np.isfinite(values)
        axes.bar(offsets[finite], values[finite], width, label=name)
        for x in offsets[~finite]:
            axes.text(x, 0, "n/a", ha="center", va="bottom", rotation=90, fontsize=7, color="#777")
    axes.set_xticks(positions, list(categories), rotation=30, ha="right")
    axes.set_title(title)
    axes.set_ylabel(ylabel)
    # beside the axes, so the legend never hides a bar
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    return figure


def reliability_diagram(bins_by_model: Mapping[str, Sequence[Mapping[str, float]]]) -> Figure:
    """Accuracy against mean confidence per bin (`metrics.reliability_bins` rows), one line per model.

    The diagonal is perfect calibration; empty bins (NaN) leave gaps in a model's line.
    """
    figure, axes = _new_figure(5.5, 5.0)
    axes.plot([0, 1], [0, 1], linestyle="--", color="#999", label="perfectly calibrated")
    for name, table in bins_by_model.items():
        confidence = [row["confidence"] for row in table]
        accuracy = [row["accuracy"] for row in table]
        axes.plot(confidence, accuracy, marker="o", label=name)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("mean confidence in bin")
    axes.set_ylabel("accuracy in bin")
    axes.set_title("Reliability diagram")
    axes.legend(loc="upper left")
    return figure


def confusion_matrix_figure(cm: ArrayLike, labels: Sequence[str]) -> Figure:
    """Counts annotated in each cell, colored by row share (recall); rows with no true rows stay blank."""
    counts = np.asarray(cm)
    if counts.shape != (len(labels), len(labels)):
        raise ValueError(f"confusion matrix has shape {counts.shape}, expected {len(labels)}x{len(labels)}")
    row_totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.where(row_totals > 0, counts / row_totals, np.nan)
    size = max(5.0, 0.6 * len(labels) + 2)
    figure, axes = _new_figure(size + 1, size)
    image = axes.imshow(np.ma.masked_invalid(shares), cmap="Blues", vmin=0, vmax=1)
    for true_index in range(counts.shape[0]):
        for pred_index in range(counts.shape[1]):
            share = shares[true_index, pred_index]
            color = "white" if np.isfinite(share) and share > 0.5 else "black"
            axes.text(pred_index, true_index, str(counts[true_index, pred_index]), ha="center", va="center",
                      fontsize=8, color=color)
    axes.set_xticks(range(len(labels)), list(labels), rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), list(labels))
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    figure.colorbar(image, ax=axes, label="share of true row")
    return figure


def scatter_tradeoff(
    points: Mapping[str, tuple[float | None, float | None]], xlabel: str, ylabel: str, title: str
) -> Figure:
    """One labelled point per model (e.g. NDCG@10 against p95 latency); a point with a NaN / None
    coordinate is left out and listed as "n/a" in the legend."""
    figure, axes = _new_figure(6.5, 4.5)
    for name, (raw_x, raw_y) in points.items():
        x, y = (float("nan") if v is None else float(v) for v in (raw_x, raw_y))
        if math.isfinite(x) and math.isfinite(y):
            axes.scatter([x], [y], s=60, label=name)
            axes.annotate(name, (x, y), textcoords="offset points", xytext=(6, 6))
        else:
            axes.scatter([], [], marker="x", color="#999", label=f"{name} (n/a)")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if points:
        axes.legend()
    return figure
