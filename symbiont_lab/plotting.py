"""What the labs' PNG plots share: a headless ``QApplication``, a styled plot widget, atomic PNG saves.

Rendering needs a ``QApplication``; when none exists one is made on Qt's ``offscreen``
platform (unless ``QT_QPA_PLATFORM`` says otherwise), so this works headless. Inside the
app, call these on the GUI thread. pyqtgraph is imported inside the functions so that
importing a lab's report does not pull in Qt.
"""

from __future__ import annotations

import os
from pathlib import Path

from mlx_hooks.atomic_io import atomic_path

WIDTH = 1000
"""Width of every lab PNG, in pixels."""

COLOURS = [(70, 110, 200), (220, 120, 40), (60, 160, 90), (180, 70, 160), (150, 150, 60), (90, 170, 200),
           (200, 80, 80), (120, 120, 120)]
"""Series colours (RGB), in order of use."""


def offscreen_app():
    """The running ``QApplication``, or a new one on the ``offscreen`` platform."""
    from pyqtgraph.Qt import QtWidgets

    app = QtWidgets.QApplication.instance()
    if app is None:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        app = QtWidgets.QApplication([])
    return app


def plot_widget(title: str, left: str, bottom: str = "", *, legend_offset=(-10, 10), columns: int = 1,
                height: int = 560):
    """A white ``PlotWidget`` (``WIDTH`` x ``height``) with a y grid and a legend; returns (widget, plot item)."""
    import pyqtgraph as pg

    pg.setConfigOptions(antialias=True, background="w", foreground="k")
    widget = pg.PlotWidget(title=title)
    widget.resize(WIDTH, height)
    item = widget.getPlotItem()
    item.setLabel("left", left)
    if bottom:
        item.setLabel("bottom", bottom)
    item.showGrid(y=True, alpha=0.3)
    legend = item.addLegend(offset=legend_offset)
    legend.setColumnCount(columns)
    return widget, item


def _write_png(image, widget, path: Path) -> Path:
    """Save the ``QImage`` atomically, then close the widget."""
    with atomic_path(path) as tmp:
        if not image.save(str(tmp), "PNG"):
            raise OSError(f"{path}: could not write the PNG")
    widget.close()
    widget.deleteLater()
    return path


def export_png(widget, item, path: Path) -> Path:
    """Render ``item`` with pyqtgraph's ``ImageExporter`` at ``WIDTH`` pixels and save it to ``path``."""
    from pyqtgraph.exporters import ImageExporter

    exporter = ImageExporter(item)
    exporter.parameters()["width"] = WIDTH
    return _write_png(exporter.export(toBytes=True), widget, path)


def grab_png(widget, path: Path, height: int = 620) -> Path:
    """Render the widget as it is laid out (``grab``) at ``WIDTH`` x ``height`` and save it to ``path``:
    ImageExporter's rescaled render can draw the bottom axis label over the tick labels."""
    widget.resize(WIDTH, height)
    return _write_png(widget.grab(), widget, path)


__all__ = ["COLOURS", "WIDTH", "export_png", "grab_png", "offscreen_app", "plot_widget"]
