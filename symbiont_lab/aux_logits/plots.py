"""PNG plots of an auxiliary-logit summary, drawn with pyqtgraph (helpers in :mod:`symbiont_lab.plotting`).

Needs a ``QApplication``; one is made on Qt's ``offscreen`` platform when none exists. Inside
the app, call it on the GUI thread. Files are written atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..plotting import COLOURS, grab_png, offscreen_app, plot_widget
from .experiments import MAIN_AUX, ROLES
from .report import PUBLISHED_SWEEP, ROLE_TITLES


def render_plots(summary: dict, results: dict, folder: str | Path) -> dict[str, Path]:
    """``sweep.png`` (accuracy against m) and ``training.png`` (test accuracy per epoch at m = 3)."""
    import pyqtgraph as pg

    offscreen_app()
    folder = Path(folder)
    out = {}
    by_m = summary["by_m"]
    ms = sorted(by_m)
    if ms:
        widget, item = plot_widget("Test accuracy against the number of auxiliary logits m (mean ± sd)",
                             "accuracy %", legend_offset=(10, -10))
        xs = np.arange(len(ms), dtype=float)
        for k, role in enumerate(ROLES):
            means = np.array([by_m[m][role]["mean"] for m in ms])
            sds = np.nan_to_num(np.array([by_m[m][role]["sd"] for m in ms], dtype=float))
            item.plot(xs, means, pen=pg.mkPen(COLOURS[k], width=2), symbol="o", symbolBrush=pg.mkBrush(*COLOURS[k]),
                      name=ROLE_TITLES[role])
            item.addItem(pg.ErrorBarItem(x=xs, y=means, height=2 * sds, beam=0.08, pen=pg.mkPen(COLOURS[k])))
        pub = [(x, PUBLISHED_SWEEP[m]) for x, m in zip(xs, ms) if m in PUBLISHED_SWEEP]
        if pub:
            item.plot([p[0] for p in pub], [p[1] for p in pub], pen=pg.mkPen("k", width=1), symbol="d",
                      symbolSize=12, symbolBrush=pg.mkBrush(*COLOURS[1]), symbolPen=pg.mkPen("k"),
                      name="student, same init (published, MNIST)")
        item.getAxis("bottom").setTicks([[(x, f"m={m}") for x, m in zip(xs, ms)]])
        item.setYRange(0, 105, padding=0)
        item.setXRange(-0.3, len(ms) - 0.7, padding=0)
        out["sweep"] = grab_png(widget, folder / "sweep.png")
    main = results.get(MAIN_AUX) or (results.get(ms[-1]) if ms else None)
    if main:
        m = MAIN_AUX if results.get(MAIN_AUX) else ms[-1]
        widget, item = plot_widget(f"Test accuracy per epoch, m = {m} (mean of {len(main)} seeds)",
                             "accuracy %", legend_offset=(-10, 130))
        teacher = np.mean([r["curves"]["teacher"]["accuracy"] for r in main.values()], axis=0) * 100
        epochs = len(teacher)
        for k, role in enumerate(ROLES):
            curve = np.mean([r["curves"][role]["accuracy"] for r in main.values()], axis=0) * 100
            xs = np.arange(1, len(curve) + 1) + (0 if role == "teacher" else epochs)
            item.plot(xs, curve, pen=pg.mkPen(COLOURS[k], width=2), name=ROLE_TITLES[role])
        item.setLabel("bottom", "epoch (teacher 1..E, students E+1..2E)")
        item.setYRange(0, 105, padding=0)
        out["training"] = grab_png(widget, folder / "training.png")
    return out


__all__ = ["render_plots"]
