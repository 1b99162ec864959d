"""PNG plots of a superposition-lab run, drawn with pyqtgraph (helpers in :mod:`symbiont_lab.plotting`).

Plots read seed 0's results where a single picture is meant (WᵀW, norms, pictures, an XOR
network), every seed where a curve is. Needs a ``QApplication``; one is made on Qt's
``offscreen`` platform when none exists. Files are written atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..plotting import COLOURS, WIDTH, grab_png, offscreen_app, plot_widget
from .geometry import PUBLISHED_FRACTIONS


def _layout(title: str):
    import pyqtgraph as pg

    pg.setConfigOptions(antialias=True, background="w", foreground="k")
    widget = pg.GraphicsLayoutWidget()
    widget.addLabel(title, colspan=8, size="12pt")
    widget.nextRow()
    return widget


def _diverging():
    """Blue (−1) → white (0) → red (+1), the usual colours for WᵀW."""
    import pyqtgraph as pg

    return pg.ColorMap([0.0, 0.5, 1.0], [(40, 80, 200), (255, 255, 255), (200, 40, 40)])


def _gram_grid(widget, copies: list[dict]) -> None:
    import pyqtgraph as pg

    cmap = _diverging()
    for c in copies:
        item = widget.addPlot(title=f"S = {c['sparsity']:g}")
        w = np.asarray(c["W"], dtype=np.float32)  # [m, n]
        gram = w.T @ w  # [n, n]
        image = pg.ImageItem(gram.T, levels=(-1.0, 1.0))  # ImageItem's x is its first axis
        image.setColorMap(cmap)
        item.addItem(image)
        item.invertY(True)
        item.setAspectLocked(True)
        item.hideAxis("left")
        item.hideAxis("bottom")


def _norm_grid(widget, copies: list[dict]) -> None:
    import pyqtgraph as pg

    for c in copies:
        item = widget.addPlot(title=f"S = {c['sparsity']:g}")
        norms = np.asarray(c["norms"])
        sup = np.asarray(c["superposition"]) / np.maximum(norms**2, 1e-12)  # share of i's direction others take
        brushes = [pg.mkBrush(0, 0, 0) if s < 0.1 else pg.mkBrush(230, 170, 20) for s in sup]
        item.addItem(pg.BarGraphItem(x0=np.zeros(len(norms)), y=np.arange(len(norms)), height=0.8, width=norms,
                                     brushes=brushes))
        item.invertY(True)
        item.setXRange(0, 1.4, padding=0)
        item.setLabel("bottom", "‖W_i‖")


def _pictures(widget, sweeps: list[list[dict]]) -> None:
    import pyqtgraph as pg

    for sweep in sweeps:
        for c in sweep:
            w = np.asarray(c["W"])  # [m, n]
            item = widget.addPlot(title=f"{c['n']}→{c['m']}, S = {c['sparsity']:g}")
            for i in range(w.shape[1]):
                x, y = (w[0, i], w[1, i]) if w.shape[0] > 1 else (w[0, i], 0.02 * i)
                colour = COLOURS[i % len(COLOURS)]
                item.plot([0, x], [0, y], pen=pg.mkPen(colour, width=3))
                item.plot([x], [y], pen=None, symbol="o", symbolSize=8, symbolBrush=pg.mkBrush(*colour))
            item.setXRange(-1.4, 1.4, padding=0)
            item.setYRange(-1.4, 1.4, padding=0)
            item.setAspectLocked(True)
        widget.nextRow()


def _xor_example(widget, variant: dict) -> None:
    import pyqtgraph as pg

    example = variant["example"]
    names = variant["weights"]
    for lesion, data in example["lesions"].items():
        item = widget.addPlot(title=f"{lesion} one weight: margin lost per mapping ({variant['coding']} inputs, "
                                    f"H = {variant['hidden']})")
        loss = np.asarray(data["margin_loss"])  # [P, 4]
        for j in range(loss.shape[1]):
            item.addItem(pg.BarGraphItem(x=np.arange(len(names)) + (j - 1.5) * 0.2, height=loss[:, j], width=0.19,
                                         brush=pg.mkBrush(*COLOURS[j]), name=("00→0", "01→1", "10→1", "11→0")[j]))
        item.addLegend(offset=(-10, 10))
        for j, name in enumerate(("00→0", "01→1", "10→1", "11→0")):
            item.legend.addItem(pg.BarGraphItem(x=[0], height=[0], width=0, brush=pg.mkBrush(*COLOURS[j])), name)
        item.getAxis("bottom").setTicks([[(i, n) for i, n in enumerate(names)]])
        item.setLabel("left", "margin lost (1 = flipped)")
        item.addLine(y=1.0, pen=pg.mkPen((120, 120, 120), style=pg.QtCore.Qt.PenStyle.DashLine))
        widget.nextRow()


def render_plots(results: dict[str, dict[int, dict]], folder: str | Path) -> dict[str, Path]:
    """Write the plots the results have data for; returns {name: path}."""
    import pyqtgraph as pg

    offscreen_app()
    folder = Path(folder)
    out = {}
    phase = results.get("phase") or {}
    if phase:
        copies = phase[min(phase)]["sweeps"][0]
        widget = _layout("Phase (20 → 5, importance 0.9^i): WᵀW at each sparsity (blue −1, red +1; seed 0)")
        _gram_grid(widget, copies)
        out["phase_gram"] = grab_png(widget, folder / "phase_gram.png", height=260)
        widget = _layout("Feature norms ‖W_i‖ (feature 0 on top; black: orthogonal, yellow: in superposition)")
        _norm_grid(widget, copies)
        out["phase_norms"] = grab_png(widget, folder / "phase_norms.png", height=420)
    geometry = results.get("geometry") or {}
    if phase or geometry:
        widget, item = plot_widget("Features per dimension ‖W‖²_F / m against 1/(1 − S)", "features per dimension",
                                   "1/(1 − S) (log)", legend_offset=(10, 10))
        item.setLogMode(x=True, y=False)
        for k, (name, runs) in enumerate((("phase 20→5", phase), ("geometry", geometry))):
            for seed, result in sorted(runs.items()):
                copies = result["sweeps"][0]
                xs = [1.0 / (1.0 - c["sparsity"]) for c in copies]
                item.plot(xs, [c["features_per_dimension"] for c in copies], pen=pg.mkPen(COLOURS[k], width=2),
                          symbol="o", symbolBrush=pg.mkBrush(*COLOURS[k]), name=f"{name} (n/m = "
                          f"{copies[0]['n'] // copies[0]['m']}), seed {seed}")
        out["features_per_dimension"] = grab_png(widget, folder / "features_per_dimension.png")
    if geometry:
        widget, item = plot_widget("Feature dimensionality D_i of represented features (dashed: published fractions)",
                                   "D_i", "1/(1 − S) (log)", legend_offset=(-10, 10))
        item.setLogMode(x=True, y=False)
        for seed, result in sorted(geometry.items()):
            xs, ys = [], []
            for c in result["sweeps"][0]:
                dims = [d for d, v in zip(c["dimensionality"], c["norms"]) if v > 0.5]
                jitter = np.random.default_rng(seed).uniform(0.97, 1.03, len(dims))
                xs += list(jitter / (1.0 - c["sparsity"]))
                ys += dims
            item.plot(xs, ys, pen=None, symbol="o", symbolSize=5, symbolBrush=pg.mkBrush(*COLOURS[seed % len(COLOURS)], 150),
                      symbolPen=None, name=f"seed {seed}")
        for name, value in PUBLISHED_FRACTIONS.items():
            item.addLine(y=value, pen=pg.mkPen((120, 120, 120), style=pg.QtCore.Qt.PenStyle.DashLine))
        item.setYRange(0, 1.05, padding=0)
        out["dimensionality"] = grab_png(widget, folder / "dimensionality.png")
    pictures = results.get("pictures") or {}
    if pictures:
        widget = _layout("Pictures: each feature's W_i (importance 0.9^i; seed 0)")
        _pictures(widget, pictures[min(pictures)]["sweeps"])
        out["pictures"] = grab_png(widget, folder / "pictures.png", height=700)
    xor = results.get("xor") or {}
    variants = [v for v in (xor[min(xor)]["variants"] if xor else []) if v["example"]]
    if variants:
        widget = _layout("XOR: one network, every weight lesioned in turn")
        _xor_example(widget, variants[0])
        out["xor_lesions"] = grab_png(widget, folder / "xor_lesions.png", height=700)
    toy = results.get("interference") or {}
    sae = results.get("interference_sae") or {}
    if toy or sae:
        widget = _layout("Interference as the width fills")
        if toy:
            item = widget.addPlot(title="toy: pairwise cos of represented features (seed 0)")
            item.addLegend(offset=(10, 10))
            centres = np.linspace(-1.0, 1.0, 81)[:-1] + 0.0125
            for k, c in enumerate(toy[min(toy)]["sweeps"][0]):
                if "pair_hist" in c["cosines"]:
                    item.plot(centres, c["cosines"]["pair_hist"], pen=pg.mkPen(COLOURS[k], width=2),
                              name=f"n/m = {c['n'] // c['m']}")
            item.setLabel("bottom", "cos")
            item.setLabel("left", "share of pairs")
        if sae:
            item = widget.addPlot(title="SAE decoder: nearest-neighbour |cos|")
            item.addLegend(offset=(10, 10))
            rows = sae[min(sae)]["sweep"]
            xs = [r["features_per_dimension"] for r in rows]
            item.setLogMode(x=True, y=False)
            for k, (key, name) in enumerate((("dictionary", "SAE latents"), ("random", "random directions"))):
                item.plot(xs, [r[key]["nn_abs_mean"] for r in rows], pen=pg.mkPen(COLOURS[k], width=2), symbol="o",
                          symbolBrush=pg.mkBrush(*COLOURS[k]), name=f"{name}, mean")
                item.plot(xs, [r[key]["nn_abs_max"] for r in rows], pen=pg.mkPen(COLOURS[k], width=1,
                          style=pg.QtCore.Qt.PenStyle.DashLine), name=f"{name}, max")
            item.setLabel("bottom", "latents per dimension (log)")
        out["interference"] = grab_png(widget, folder / "interference.png", height=480)
    return out


__all__ = ["WIDTH", "render_plots"]
