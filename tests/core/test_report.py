import base64
import re

import numpy as np
import pytest
from matplotlib.figure import Figure

from mangadistill.core.gates import Gate, evaluate_gates
from mangadistill.core.report import (
    FigureSection,
    KeyValueSection,
    ParagraphSection,
    TableSection,
    confusion_matrix_figure,
    format_value,
    grouped_bar_chart,
    reliability_diagram,
    render_html_report,
    scatter_tradeoff,
)
from mangadistill.intent.metrics import reliability_bins

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GATES = [Gate("accuracy_retained", ">=", 0.98), Gate("ece", "<=", 0.1)]


def _embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_banner_says_promote_or_not():
    promoted = render_html_report("run", evaluate_gates(GATES, {"accuracy_retained": 0.99, "ece": 0.05}))
    rejected = render_html_report("run", evaluate_gates(GATES, {"accuracy_retained": 0.99, "ece": None}))
    assert "PROMOTE" in promoted and "DO NOT PROMOTE" not in promoted
    assert "DO NOT PROMOTE" in rejected
    assert "2 of 2 gates passed" in promoted and "1 of 2 gates passed" in rejected


def test_gates_table_lists_each_gate_with_value_and_reason():
    decision = evaluate_gates(GATES, {"accuracy_retained": 0.9712, "ece": float("nan")})
    page = render_html_report("run", decision)
    gates_table = page.split("<h2>Gates</h2>", 1)[1]
    assert "accuracy_retained" in gates_table and "0.9712" in gates_table
    assert "&gt;=" in gates_table and "&lt;=" in gates_table
    assert gates_table.count('class="fail"') == 2
    assert "NaN metric" in gates_table and "n/a" in gates_table


def test_user_text_is_escaped_everywhere():
    attack = "<script>alert(1)</script>"
    decision = evaluate_gates([Gate(attack, ">=", 0)], {attack: 1.0})
    sections = [
        KeyValueSection(attack, {attack: attack}),
        TableSection("t", [attack], [[attack]]),
        ParagraphSection("p", f"first {attack}\n\nsecond"),
        FigureSection("f", Figure(), caption=attack),
    ]
    page = render_html_report(attack, decision, sections)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<p>") == 2


def test_sections_render_in_order_with_embedded_pngs():
    figure = grouped_bar_chart(["a", "b"], {"teacher": [0.9, 0.8], "student": [0.85, float("nan")]}, "t", "y")
    sections = [
        KeyValueSection("Run", {"student": "s1", "rows": 120, "accuracy": 0.912345}),
        FigureSection("Recall", figure, caption="per-class recall"),
        TableSection("Rows", ["name", "value"], [["x", 1.5], ["y", None]]),
    ]
    page = render_html_report("report", evaluate_gates(GATES, {}), sections)
    assert page.index("<h2>Run</h2>") < page.index("<h2>Recall</h2>") < page.index("<h2>Rows</h2>")
    assert "0.9123" in page and ">120<" in page
    pngs = _embedded_pngs(page)
    assert len(pngs) == 1 and pngs[0].startswith(PNG_MAGIC)
    assert "http://" not in page and "https://" not in page


def test_table_section_rejects_ragged_rows():
    with pytest.raises(ValueError, match="row 1 has 1 values for 2 columns"):
        TableSection("t", ["a", "b"], [[1, 2], [3]])


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "n/a"), (float("nan"), "n/a"), (np.float32(0.123456), "0.1235"), (np.int64(7), "7"), (True, "True")],
)
def test_format_value(value, text):
    assert format_value(value) == text


def _png(figure: Figure) -> bytes:
    return _embedded_pngs(render_html_report("r", evaluate_gates([], {}), [FigureSection("f", figure)]))[0]


def test_grouped_bar_chart_draws_finite_bars_only():
    figure = grouped_bar_chart(
        ["account_security", "escalation", "faq"],
        {"teacher": [0.9, 0.8, 0.95], "student": [0.7, float("nan"), 0.9], "hard-label": [0.6, 0.5, 0.9]},
        "Per-class recall",
        "recall",
    )
    bars = figure.axes[0].patches
    assert len(bars) == 8  # 9 values, one NaN
    assert all(np.isfinite(bar.get_height()) for bar in bars)
    assert [text.get_text() for text in figure.axes[0].texts] == ["n/a"]
    assert _png(figure).startswith(PNG_MAGIC)
    with pytest.raises(ValueError, match="series 'x' has shape"):
        grouped_bar_chart(["a", "b"], {"x": [1.0]}, "t", "y")


def test_reliability_diagram_plots_one_line_per_model_with_gaps():
    probs = np.array([[0.95, 0.05], [0.9, 0.1], [0.6, 0.4]])
    bins = {"student": reliability_bins(probs, [0, 1, 0]), "teacher": reliability_bins(probs, [0, 0, 0])}
    figure = reliability_diagram(bins)
    lines = figure.axes[0].lines
    assert [line.get_label() for line in lines] == ["perfectly calibrated", "student", "teacher"]
    assert np.isnan(lines[1].get_ydata()).sum() == 7  # 10 bins; 0.6, 0.9 and 0.95 occupy three
    assert _png(figure).startswith(PNG_MAGIC)


def test_confusion_matrix_figure_annotates_counts():
    cm = np.array([[3, 1, 0], [0, 0, 0], [2, 0, 5]])
    figure = confusion_matrix_figure(cm, ["a", "b", "c"])
    texts = [text.get_text() for text in figure.axes[0].texts]
    assert texts == ["3", "1", "0", "0", "0", "0", "2", "0", "5"]
    image = figure.axes[0].images[0].get_array()
    assert image.mask[1].all() and not image.mask[0].any()  # the empty row is blank, not 0
    assert _png(figure).startswith(PNG_MAGIC)
    with pytest.raises(ValueError, match="expected 2x2"):
        confusion_matrix_figure(cm, ["a", "b"])


def test_scatter_tradeoff_leaves_out_nan_points():
    figure = scatter_tradeoff(
        {"teacher": (120.0, 0.81), "student": (9.5, 0.79), "int8": (None, 0.78)}, "p95 ms", "NDCG@10", "t"
    )
    axes = figure.axes[0]
    assert [text.get_text() for text in axes.texts] == ["teacher", "student"]
    assert "int8 (n/a)" in [text.get_text() for text in axes.get_legend().get_texts()]
    assert _png(figure).startswith(PNG_MAGIC)
