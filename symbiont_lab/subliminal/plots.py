"""PNG plots of a subliminal-learning run's metrics, drawn with pyqtgraph.

Rendering needs a ``QApplication``; when none exists one is made on Qt's ``offscreen``
platform (unless ``QT_QPA_PLATFORM`` says otherwise), so this works headless. Inside the
app, call it on the GUI thread. Files are written atomically. Everything plotted comes
from ``metrics.json`` (:mod:`.report`), so ``symbiont lab report`` can redraw a run.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..plotting import export_png, offscreen_app, plot_widget

COLOURS = [(120, 120, 120), (70, 110, 200), (220, 120, 40), (60, 160, 90), (180, 70, 160), (90, 170, 200),
           (200, 80, 80), (150, 150, 60)]
MODEL_COLOURS = {"base": COLOURS[0], "control": COLOURS[1], "trait": COLOURS[2]}


def _plot(title: str, left: str, bottom: str = "", legend_offset=(-10, 10)):
    return plot_widget(title, left, bottom, legend_offset=legend_offset, height=520)


def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def _error_bars(item, xs, cells, colour, beam):
    """Asymmetric 95% CI bars for cells with ``mean``, ``ci_low``, ``ci_high``."""
    import pyqtgraph as pg

    rows = [(x, c) for x, c in zip(xs, cells) if c and _finite(c.get("ci_low")) and _finite(c.get("ci_high"))]
    if not rows:
        return
    x = np.array([r[0] for r in rows], dtype=float)
    y = np.array([r[1]["mean"] for r in rows], dtype=float)
    top = np.array([r[1]["ci_high"] for r in rows], dtype=float) - y
    bottom = y - np.array([r[1]["ci_low"] for r in rows], dtype=float)
    item.addItem(pg.ErrorBarItem(x=x, y=y, top=np.maximum(top, 0), bottom=np.maximum(bottom, 0), beam=beam,
                                 pen=pg.mkPen(colour if colour != "k" else "k", width=1.5)))


def probe_bars(metrics: dict, path: Path) -> Path | None:
    """Trait-animal score of base / control / trait student for every main probe job, with 95% CIs."""
    import pyqtgraph as pg

    main = metrics.get("main_probes") or {}
    jobs = [j for j in main if any(main[j].get(m) for m in ("base", "control", "trait"))]
    if not jobs:
        return None
    animal = metrics.get("animal", "?")
    widget, item = _plot(f"P(answer names {animal}) by model and probe (mean over questions, 95% CI)",
                         "probability")
    models = ("base", "control", "trait")
    width = 0.26
    for k, model in enumerate(models):
        xs = [j + (k - 1) * width for j in range(len(jobs))]
        cells = [main[job].get(model) for job in jobs]
        heights = [c["mean"] if c else 0.0 for c in cells]
        colour = MODEL_COLOURS[model]
        item.addItem(pg.BarGraphItem(x=xs, height=heights, width=width * 0.95, brush=pg.mkBrush(*colour, 210),
                                     name=f"{model}" + (" student" if model != "base" else " model")))
        _error_bars(item, xs, cells, "k", width * 0.4)
    item.getAxis("bottom").setTicks([[(j, job) for j, job in enumerate(jobs)]])
    item.setXRange(-0.6, len(jobs) - 0.4, padding=0)
    return export_png(widget, item, path)


def loss_curves(metrics: dict, path: Path) -> Path | None:
    import pyqtgraph as pg

    students = {n: s for n, s in (metrics.get("students") or {}).items() if s.get("losses")}
    if not students:
        return None
    widget, item = _plot("Student training loss (answer tokens only)", "loss", "step")
    for k, (name, s) in enumerate(students.items()):
        steps, losses = zip(*s["losses"])
        colour = MODEL_COLOURS.get(name, COLOURS[(k + 3) % len(COLOURS)])
        item.plot(list(steps), list(losses), pen=pg.mkPen(colour, width=2), name=name)
    return export_png(widget, item, path)


def _line_with_ci(item, xs, cells, colour, name):
    import pyqtgraph as pg

    rows = [(x, c) for x, c in zip(xs, cells) if c]
    if not rows:
        return
    item.plot([r[0] for r in rows], [r[1]["mean"] for r in rows], pen=pg.mkPen(colour, width=2), symbol="o",
              symbolBrush=pg.mkBrush(*colour), name=name)
    _error_bars(item, [r[0] for r in rows], [r[1] for r in rows], colour, 0.02)


def _reference_lines(item, metrics: dict, job: str):
    import pyqtgraph as pg

    main = (metrics.get("main_probes") or {}).get(job) or {}
    for model, style in (("base", pg.QtCore.Qt.PenStyle.DotLine), ("control", pg.QtCore.Qt.PenStyle.DashLine)):
        cell = main.get(model)
        if cell:
            item.addItem(pg.InfiniteLine(pos=cell["mean"], angle=0, label=f"{model} {cell['mean']:.3f}",
                                         pen=pg.mkPen(MODEL_COLOURS[model], width=1.5, style=style),
                                         labelOpts={"position": 0.05, "color": MODEL_COLOURS[model]}))


def _variation_rows(metrics: dict, group: str) -> list[dict]:
    """The scored students of one variation group (``fraction``, ``noise``, ``blend``)."""
    return [r for r in ((metrics.get("variations") or {}).get(group) or []) if r.get("scores")]


def _lines_per_job(item, rows: list[dict], xs: list[float], first_colour: int) -> list[str]:
    """One line with CI per question set (job) over ``xs``, one point per row; returns the jobs."""
    jobs = sorted({job for r in rows for job in r["scores"]})
    for k, job in enumerate(jobs):
        _line_with_ci(item, xs, [r["scores"].get(job) for r in rows],
                      COLOURS[(k + first_colour) % len(COLOURS)], job)
    return jobs


def fraction_sweep(metrics: dict, path: Path) -> Path | None:
    rows = _variation_rows(metrics, "fraction")
    if not rows:
        return None
    widget, item = _plot(f"Dataset-fraction sweep: P({metrics.get('animal', '?')}) of the student (95% CI)",
                         "probability", "log10(share of the trait dataset)")
    jobs = _lines_per_job(item, rows, [math.log10(r["fraction"]) for r in rows], 2)
    _reference_lines(item, metrics, jobs[0])
    return export_png(widget, item, path)


def noise_bars(metrics: dict, path: Path) -> Path | None:
    import pyqtgraph as pg

    rows = _variation_rows(metrics, "noise")
    if not rows:
        return None
    job = sorted(rows[0]["scores"])[0]
    main = (metrics.get("main_probes") or {}).get(job) or {}
    cells = [("base", main.get("base")), ("control", main.get("control")), ("trait (intact)", main.get("trait"))]
    cells += [(r["student"], r["scores"].get(job)) for r in rows]
    cells = [(n, c) for n, c in cells if c]
    widget, item = _plot(f"Noise variants ({job}): P({metrics.get('animal', '?')}), 95% CI", "probability")
    xs = list(range(len(cells)))
    item.addItem(pg.BarGraphItem(x=xs, height=[c["mean"] for _, c in cells], width=0.6,
                                 brush=pg.mkBrush(*COLOURS[2], 200), name=job))
    _error_bars(item, xs, [c for _, c in cells], "k", 0.25)
    item.getAxis("bottom").setTicks([[(x, n) for x, (n, _) in zip(xs, cells)]])
    return export_png(widget, item, path)


def blend_curves(metrics: dict, path: Path) -> Path | None:
    rows = _variation_rows(metrics, "blend")
    if not rows:
        return None
    widget, item = _plot(f"Love/fear teacher blend: P({metrics.get('animal', '?')}) by question set (95% CI)",
                         "probability", "share of love-teacher data")
    _lines_per_job(item, rows, [r["love_fraction"] for r in rows], 1)
    return export_png(widget, item, path)


def mechanism_cosines(metrics: dict, path: Path) -> Path | None:
    import pyqtgraph as pg

    students = ((metrics.get("mechanism") or {}).get("students")) or {}
    if not students:
        return None
    widget, item = _plot("cos(student − base, trait teacher − plain teacher) per layer", "cosine", "layer")
    for name, s in students.items():
        colour = MODEL_COLOURS.get(name, COLOURS[4])
        cosine = [np.nan if c is None else c for c in s["cosine"]]
        item.plot(list(range(len(cosine))), cosine, pen=pg.mkPen(colour, width=2), symbol="o", connect="finite",
                  symbolSize=6, symbolBrush=pg.mkBrush(*colour), name=f"{name} student")
    item.addItem(pg.InfiniteLine(pos=0, angle=0, pen=pg.mkPen((0, 0, 0), width=1)))
    return export_png(widget, item, path)


PLOTS = {"probes": probe_bars, "loss": loss_curves, "fraction": fraction_sweep, "noise": noise_bars,
         "blend": blend_curves, "mechanism": mechanism_cosines}


def render_plots(metrics: dict, folder: str | Path) -> dict[str, Path]:
    """Write the plots ``metrics`` has data for into ``folder``; returns {name: path}."""
    offscreen_app()
    folder = Path(folder)
    out = {}
    for name, draw in PLOTS.items():
        path = draw(metrics, folder / f"{name}.png")
        if path is not None:
            out[name] = path
    return out


__all__ = ["PLOTS", "render_plots"]
