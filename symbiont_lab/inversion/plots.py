"""PNG plots of an inversion summary, drawn with pyqtgraph (helpers in :mod:`symbiont_lab.plotting`).

``accuracy.png``: test accuracy of the teachers, their decoders and every student regime (95% CI);
``mechanism.png``: cosine of A's and blind B's residual shifts and the lens departure per layer.
Files are written atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..plotting import COLOURS, grab_png, offscreen_app, plot_widget


def render_plots(folder: str | Path, out: dict) -> dict[str, Path]:
    import pyqtgraph as pg

    offscreen_app()
    folder = Path(folder) / "plots"
    pngs = {}
    teachers = list(out["teachers"])
    groups = [("A", {k: v["accuracy"] for k, v in out["teachers"].items()}),
              ("decoder", {k: v["decoder"]["accuracy"] for k, v in out["teachers"].items()})]
    short = {"blind negated (LoRA × −1)": "blind B × −1", "blind as trained": "blind B",
             "steered −(B − base)": "steer −(B−base)"}
    groups += [(short.get(label, label), {k: row["accuracy"] for k, row in rows.items()})
               for label, rows in out["students"].items()]
    if teachers:
        widget, item = plot_widget("Test accuracy (95% CI); dashed: the base model", "accuracy",
                                   legend_offset=(10, 10))
        width = 0.8 / len(teachers)
        for k, kind in enumerate(teachers):
            xs = np.array([g + (k - (len(teachers) - 1) / 2) * width for g in range(len(groups))])
            means = np.array([groups[g][1].get(kind, {}).get("mean", np.nan) for g in range(len(groups))], dtype=float)
            lows = np.array([groups[g][1].get(kind, {}).get("low", np.nan) for g in range(len(groups))], dtype=float)
            highs = np.array([groups[g][1].get(kind, {}).get("high", np.nan) for g in range(len(groups))], dtype=float)
            ok = np.isfinite(means)
            item.addItem(pg.BarGraphItem(x=xs[ok], height=means[ok], width=width * 0.9, brush=pg.mkBrush(*COLOURS[k]),
                                         name=kind))
            item.addItem(pg.ErrorBarItem(x=xs[ok], y=means[ok], top=np.nan_to_num(highs - means)[ok],
                                         bottom=np.nan_to_num(means - lows)[ok], beam=width * 0.3))
        base = out["base"]["accuracy"]["mean"]
        item.addItem(pg.InfiniteLine(pos=base, angle=0, pen=pg.mkPen("k", width=1, style=pg.QtCore.Qt.PenStyle.DashLine)))
        item.getAxis("bottom").setTicks([[(g, groups[g][0]) for g in range(len(groups))]])
        item.setYRange(0, 1.05, padding=0)
        pngs["accuracy"] = grab_png(widget, folder / "accuracy.png")
    if out["mechanism"]:
        widget, item = plot_widget("Per layer: cos(A − base, blind B − base) (solid), share of prompts whose "
                                   "lens top-1 under A departs from the base's (dotted)", "value", "layer",
                                   legend_offset=(10, 10))
        for k, (kind, recs) in enumerate(out["mechanism"].items()):
            departed = np.mean([r["lens_departed"] for r in recs], axis=0)
            item.plot(np.arange(departed.size), departed, name=f"{kind} departs",
                      pen=pg.mkPen(COLOURS[k], width=2, style=pg.QtCore.Qt.PenStyle.DotLine))
            if recs[0].get("cosine"):
                cos = np.nanmean(np.array([[np.nan if c is None else c for c in r["cosine"]] for r in recs],
                                          dtype=float), axis=0)
                item.plot(np.arange(cos.size), np.nan_to_num(cos), pen=pg.mkPen(COLOURS[k], width=2), name=f"{kind} cos")
        item.setYRange(-1.05, 1.05, padding=0)
        pngs["mechanism"] = grab_png(widget, folder / "mechanism.png")
    return pngs
