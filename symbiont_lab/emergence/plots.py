"""PNG plots of an emergence summary, drawn with pyqtgraph (helpers in :mod:`symbiont_lab.plotting`).

Needs a ``QApplication``; one is made on Qt's ``offscreen`` platform when none exists. Inside
the app, call it on the GUI thread. Files are written atomically.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..plotting import COLOURS, grab_png, offscreen_app, plot_widget
from .config import ARMS
from .ei_grokking import SCALES as GROK_SCALES
from .ei_model import SCALES as MODEL_SCALES
from .prompt_sets import PROMPT_SETS


def _curves(summary: dict, key: str, title: str, left: str, path: Path, transform=None) -> Path:
    import pyqtgraph as pg

    widget, item = plot_widget(title, left, "step")
    k = 0
    for arm in ARMS:
        a = summary["arms"].get(arm)
        if not a:
            continue
        steps = np.array([r["step"] for r in a["records"]], dtype=float)
        for part, style in (("train", pg.QtCore.Qt.PenStyle.DashLine), ("test", pg.QtCore.Qt.PenStyle.SolidLine)):
            name = key.format(part=part)
            if name not in a["records"][0]:
                continue
            values = np.array([r[name] if r[name] is not None else np.nan for r in a["records"]], dtype=float)
            if transform:
                values = transform(values)
            label = f"{arm} {part}" if "{part}" in key else arm
            item.plot(steps, values, pen=pg.mkPen(COLOURS[k % len(COLOURS)], width=2, style=style), name=label)
            if "{part}" not in key:
                break
        k += 1
    return grab_png(widget, path)


def _ei_over_training(summary: dict, arm: str, path: Path) -> Path:
    import pyqtgraph as pg

    data = summary["grok_ei"][arm]
    widget, item = plot_widget(f"Conditional EI across training ({arm}), 95% intervals; dotted: test accuracy × max bits",
                               "EI (bits)", "step")
    item.getAxis("left").enableAutoSIPrefix(False)
    steps = np.array([row["step"] for row in data["checkpoints"]], dtype=float)
    for k, name in enumerate(GROK_SCALES):
        entries = [row["scales"][name]["conditional"] for row in data["checkpoints"]]
        values = np.array([e["ei_bits"] for e in entries])
        low = np.array([e["intervals"]["ei_bits"][0] for e in entries])
        high = np.array([e["intervals"]["ei_bits"][1] for e in entries])
        colour = COLOURS[k]
        item.plot(steps, values, pen=pg.mkPen(colour, width=2), symbol="o", symbolSize=5,
                  symbolBrush=pg.mkBrush(*colour), name=name)
        item.addItem(pg.ErrorBarItem(x=steps, y=values, top=high - values, bottom=values - low, beam=0,
                                     pen=pg.mkPen(colour)))
    bits = summary["settings"]["grok_ei"]["units"]
    acc = np.array([row["test_accuracy"] if row["test_accuracy"] is not None else np.nan for row in data["checkpoints"]])
    item.plot(steps, acc * bits, pen=pg.mkPen("k", width=1, style=pg.QtCore.Qt.PenStyle.DotLine), name="test accuracy")
    return grab_png(widget, path)


def _model_bars(summary: dict, path: Path) -> Path:
    import pyqtgraph as pg

    m = summary["model_ei"]
    widget, item = plot_widget("Conditional EI on the language model by scale and prompt set (95% intervals)",
                               "EI (bits)")
    item.getAxis("left").enableAutoSIPrefix(False)
    groups = ["all", *PROMPT_SETS]
    width = 0.8 / len(groups)
    for g, group in enumerate(groups):
        xs = np.arange(len(MODEL_SCALES)) + (g - (len(groups) - 1) / 2) * width
        entries = [m["scales"][n]["conditional"] if group == "all" else m["by_set"][n][group] for n in MODEL_SCALES]
        values = np.array([e["ei_bits"] for e in entries])
        low = np.array([e["intervals"]["ei_bits"][0] for e in entries])
        high = np.array([e["intervals"]["ei_bits"][1] for e in entries])
        colour = COLOURS[g % len(COLOURS)]
        item.addItem(pg.BarGraphItem(x=xs, height=values, width=width * 0.9, brush=pg.mkBrush(*colour)))
        item.addItem(pg.ErrorBarItem(x=xs, y=values, top=high - values, bottom=values - low, beam=width * 0.4,
                                     pen=pg.mkPen("k")))
        item.plot([], [], pen=pg.mkPen(colour, width=6), name=group)  # legend entry
    item.getAxis("bottom").setTicks([[(k, n) for k, n in enumerate(MODEL_SCALES)]])
    item.setYRange(0, len(summary["settings"]["model_ei"]["steering_sets"]) + 0.2, padding=0)  # 0 .. log2(states)
    return grab_png(widget, path)


def render_plots(summary: dict, folder: str | Path) -> dict[str, Path]:
    """``accuracy.png``, ``loss.png``, ``weight_norm.png``, ``fourier_sparsity.png``, ``progress_measures.png``,
    ``ei_<arm>.png`` per EI arm and ``ei_language_model.png`` (what the summary has)."""
    import pyqtgraph as pg

    offscreen_app()
    folder = Path(folder)
    out = {"accuracy": _curves(summary, "{part}_accuracy", "Train (dashed) and test accuracy", "accuracy",
                               folder / "accuracy.png"),
           "loss": _curves(summary, "{part}_loss", "Train (dashed) and test loss (log10)", "log10 loss (nats)",
                           folder / "loss.png", transform=lambda v: np.log10(np.maximum(v, 1e-12))),
           "weight_norm": _curves(summary, "weight_norm", "Weight norm (L2 over all parameters)", "norm",
                                  folder / "weight_norm.png"),
           "fourier_sparsity": _curves(summary, "fourier_sparsity",
                                       f"Fourier sparsity of the embedding (share of power in the "
                                       f"{summary['settings']['top_frequencies']} strongest frequencies)", "share",
                                       folder / "fourier_sparsity.png")}
    progress = summary.get("progress_measures")
    if progress and "grokking" in progress:
        widget, item = plot_widget("Main arm: restricted and excluded loss (Nanda et al.) beside train and test loss",
                                   "log10 loss (nats)", "step")
        rows = progress["grokking"]["checkpoints"]
        steps = np.array([r["step"] for r in rows], dtype=float)
        for k, key in enumerate(("train_loss", "test_loss", "restricted_loss", "excluded_loss")):
            values = np.log10(np.maximum([r[key] for r in rows], 1e-12))
            item.plot(steps, values, pen=pg.mkPen(COLOURS[k], width=2), symbol="o", symbolSize=4,
                      symbolBrush=pg.mkBrush(*COLOURS[k]), name=key.replace("_", " "))
        out["progress_measures"] = grab_png(widget, folder / "progress_measures.png")
    for arm, data in summary.get("grok_ei", {}).items():
        if data["checkpoints"]:
            out[f"ei_{arm}"] = _ei_over_training(summary, arm, folder / f"ei_{arm}.png")
    if summary.get("model_ei"):
        out["ei_language_model"] = _model_bars(summary, folder / "ei_language_model.png")
    return {k: v for k, v in out.items() if v is not None and not (isinstance(v, float) and math.isnan(v))}


__all__ = ["render_plots"]
