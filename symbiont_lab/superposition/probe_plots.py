"""PNG plots of a sparse-probing run: F1 against layer, one line per k (dashed: dense), per set and kind.

Drawn with pyqtgraph (helpers in :mod:`symbiont_lab.plotting`); needs a ``QApplication`` (made on
Qt's ``offscreen`` platform when none exists). Files are written atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..plotting import COLOURS, grab_png, offscreen_app


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def render_probe_plots(results: dict[str, dict[str, dict]], folder: str | Path) -> dict[str, Path]:
    """``<set>.png`` per set: one panel per point kind (an SAE's single point: F1 against k)."""
    import pyqtgraph as pg

    offscreen_app()
    pg.setConfigOptions(antialias=True, background="w", foreground="k")
    folder = Path(folder)
    out = {}
    for name, kinds in results.items():
        widget = pg.GraphicsLayoutWidget()
        widget.addLabel(f"{name}: held-out F1 of k-sparse probes", colspan=max(1, len(kinds)), size="12pt")
        widget.nextRow()
        for kind, result in kinds.items():
            layers = result["layers"]
            ks = sorted(layers[0]["f1"], key=int)
            item = widget.addPlot(title=kind)
            item.addLegend(offset=(-10, -10))
            item.showGrid(y=True, alpha=0.3)
            item.setYRange(0, 1.02, padding=0)
            if len(layers) > 1:
                xs = np.arange(len(layers))
                for j, k in enumerate(ks):
                    item.plot(xs, [r["f1"][k] for r in layers], pen=pg.mkPen(COLOURS[j % len(COLOURS)], width=2),
                              name=f"k={k}")
                item.plot(xs, [r["dense_f1"] for r in layers], pen=pg.mkPen("k", width=2,
                          style=pg.QtCore.Qt.PenStyle.DashLine), name="dense")
                item.setLabel("bottom", "layer")
                item.getAxis("bottom").setTicks([[(i, r["point"].split(".")[-1]) for i, r in enumerate(layers)
                                                  if i % max(1, len(layers) // 10) == 0]])
            else:
                xs = np.log2([int(k) for k in ks])
                item.plot(xs, [layers[0]["f1"][k] for k in ks], pen=pg.mkPen(COLOURS[0], width=2), symbol="o",
                          symbolBrush=pg.mkBrush(*COLOURS[0]), name=layers[0]["point"])
                item.addLine(y=layers[0]["dense_f1"], pen=pg.mkPen("k", style=pg.QtCore.Qt.PenStyle.DashLine))
                item.getAxis("bottom").setTicks([[(x, k) for x, k in zip(xs, ks)]])
                item.setLabel("bottom", "k (dashed: dense)")
            item.setLabel("left", "F1")
        out[name] = grab_png(widget, folder / f"{_safe(name)}.png", height=480)
    return out


__all__ = ["render_probe_plots"]
