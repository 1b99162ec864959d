"""PNG plots of a negation-lab summary, drawn with pyqtgraph (helpers in :mod:`symbiont_lab.plotting`).

Rendering needs a ``QApplication``; when none exists one is made on Qt's ``offscreen``
platform (unless ``QT_QPA_PLATFORM`` says otherwise), so this works headless. Inside the
app, call it on the GUI thread. Files are written atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..plotting import COLOURS, export_png, offscreen_app, plot_widget
from .experiments import REPRESENTATION_TASKS
from .report import METRIC_NAMES, PUBLISHED_COLLAPSE, PUBLISHED_SORTED, _variant_title
from .tasks import REPRESENTATIONS

def _bars(item, xs, means, sds, colour, name, width):
    import pyqtgraph as pg

    item.addItem(pg.BarGraphItem(x=xs, height=means, width=width, brush=pg.mkBrush(*colour, 200), name=name))
    finite = [(x, m, s) for x, m, s in zip(xs, means, sds) if s == s]  # skip NaN sd (one seed)
    if finite:
        fx, fm, fs = zip(*finite)
        item.addItem(pg.ErrorBarItem(x=np.array(fx), y=np.array(fm), height=2 * np.array(fs), beam=width * 0.4,
                                     pen=pg.mkPen("k", width=1.5)))


def render_plots(summary: dict, folder: str | Path) -> dict[str, Path]:
    """Write the plots the summary has data for; returns {name: path}."""
    import pyqtgraph as pg

    offscreen_app()
    folder = Path(folder)
    out = {}
    s = summary.get("sorted")
    if s:
        widget, item = plot_widget(f"Sorted task: baseline vs concept (mean ± sd, {s['n']} seeds; ◆ published)",
                             "accuracy %", legend_offset=(-10, 10))
        metrics = list(METRIC_NAMES)
        for k, variant in enumerate(("baseline", "concept")):
            xs = [i + (k - 0.5) * 0.36 for i in range(len(metrics))]
            _bars(item, xs, [s["rows"][m][variant]["mean"] for m in metrics],
                  [s["rows"][m][variant]["sd"] for m in metrics], COLOURS[k], f"{variant} (ours)", 0.34)
            item.plot(xs, [PUBLISHED_SORTED[m][variant][0] for m in metrics], pen=None, symbol="d", symbolSize=13,
                      symbolBrush=pg.mkBrush(*COLOURS[k]), symbolPen=pg.mkPen("k"), name=f"{variant} (published)")
        item.getAxis("bottom").setTicks([[(i, METRIC_NAMES[m]) for i, m in enumerate(metrics)]])
        item.setYRange(0, 118, padding=0)
        item.setXRange(-0.55, len(metrics) - 0.45, padding=0)
        out["sorted"] = export_png(widget, item, folder / "sorted.png")
    c = summary.get("collapse")
    if c and c["variants"]:
        widget, item = plot_widget(f"Collapse chain: hard acc (L=20) per generation (mean ± sd, {c['n']} seeds)",
                             "hard accuracy %", legend_offset=(10, -10))
        gens = [0, 1, 2]
        for k, (variant, data) in enumerate(c["variants"].items()):
            means = [c["gen0"]["hard"]["mean"], data["gen1"]["hard"]["mean"], data["gen2"]["hard"]["mean"]]
            sds = [c["gen0"]["hard"]["sd"], data["gen1"]["hard"]["sd"], data["gen2"]["hard"]["sd"]]
            xs = [g + (k - (len(c["variants"]) - 1) / 2) * 0.05 for g in gens]
            colour = COLOURS[k % len(COLOURS)]
            item.plot(xs, means, pen=pg.mkPen(colour, width=2), symbol="o", symbolBrush=pg.mkBrush(*colour),
                      name=f"ours, {_variant_title(variant)}")
            item.addItem(pg.ErrorBarItem(x=np.array(xs), y=np.array(means), height=2 * np.nan_to_num(np.array(sds)),
                                         beam=0.03,
                                         pen=pg.mkPen(colour)))
        pub = [PUBLISHED_COLLAPSE[g][0] for g in ("gen0", "gen1", "gen2")]
        item.plot(gens, pub, pen=pg.mkPen("k", width=2, style=pg.QtCore.Qt.PenStyle.DashLine), symbol="d",
                  symbolSize=12, symbolBrush=pg.mkBrush("k"), name="published, hard labels")
        item.plot([2], [PUBLISHED_COLLAPSE["gen2_soft"][0]], pen=None, symbol="t", symbolSize=13,
                  symbolBrush=pg.mkBrush("w"), symbolPen=pg.mkPen("k", width=2), name="published, soft labels")
        item.getAxis("bottom").setTicks([[(g, f"Gen{g}") for g in gens]])
        item.setYRange(30, 100, padding=0)
        out["collapse"] = export_png(widget, item, folder / "collapse.png")
    r = summary.get("representation")
    if r:
        widget, item = plot_widget(f"Input representations: best acc at L=40 (mean ± sd, {r['n']} seeds; ○ best seed)",
                             "accuracy %", legend_offset=(10, 10), columns=3)
        for k, rep in enumerate(REPRESENTATIONS):
            xs = [i + (k - 1) * 0.26 for i in range(len(REPRESENTATION_TASKS))]
            cells = [r["tasks"][task][rep]["best"] for task in REPRESENTATION_TASKS]
            _bars(item, xs, [cell["mean"] for cell in cells], [cell["sd"] for cell in cells], COLOURS[k], rep, 0.24)
            item.plot(xs, [cell["max"] for cell in cells], pen=None, symbol="o", symbolSize=9,
                      symbolBrush=pg.mkBrush("w"), symbolPen=pg.mkPen(*COLOURS[k], width=2))
        item.getAxis("bottom").setTicks([[(i, task) for i, task in enumerate(REPRESENTATION_TASKS)]])
        item.setYRange(0, 112, padding=0)
        item.setXRange(-0.55, len(REPRESENTATION_TASKS) - 0.45, padding=0)
        out["representation"] = export_png(widget, item, folder / "representation.png")
    return out
