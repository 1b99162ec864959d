"""PNG plot of an NMF run: held-out FVU of NMF, PCA and the SAE against k (pyqtgraph, written atomically)."""

from __future__ import annotations

from pathlib import Path

from ..plotting import COLOURS, grab_png, offscreen_app, plot_widget
from .nmf_report import METHODS, TITLES


def render_nmf_plots(summary: dict, folder: str | Path) -> dict[str, Path]:
    import pyqtgraph as pg

    offscreen_app()
    rows = summary["fvu"]
    ks = sorted(rows)
    widget, item = plot_widget(f"Held-out reconstruction at {summary['settings']['point']} (dashed: train)",
                               "fraction of variance unexplained", "k components (log)", legend_offset=(-10, 10))
    item.setLogMode(x=True, y=False)
    for j, method in enumerate(METHODS):
        colour = COLOURS[j]
        item.plot(ks, [rows[k][method]["test_fvu"] for k in ks], pen=pg.mkPen(colour, width=2), symbol="o",
                  symbolBrush=pg.mkBrush(*colour), name=TITLES[method])
        item.plot(ks, [rows[k][method]["train_fvu"] for k in ks],
                  pen=pg.mkPen(colour, width=1, style=pg.QtCore.Qt.PenStyle.DashLine))
    item.setYRange(0, 1.05, padding=0)
    return {"fvu": grab_png(widget, Path(folder) / "fvu.png")}


__all__ = ["render_nmf_plots"]
