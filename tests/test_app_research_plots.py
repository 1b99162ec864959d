"""Research-grade plots: one theme for Qt and pyqtgraph that follows light/dark, labelled axes,
the temperature view's separate entropy / probability axes and its "apply to the chat"."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtGui import QColor, QImage

pytestmark = pytest.mark.gui


def _pixel(widget, x_frac=0.5, y_frac=0.5) -> QColor:
    image: QImage = widget.grab().toImage()
    return image.pixelColor(int(image.width() * x_frac), int(image.height() * y_frac))


def test_plots_follow_the_palette_light_and_dark(qtbot):
    import pyqtgraph as pg
    from PySide6.QtWidgets import QApplication

    from symbiont_app.widgets import theme

    app = QApplication.instance()
    theme.set_scheme(app, "light")
    plot = pg.PlotWidget(title="t")
    plot.setLabel("left", "entropy", units="bits")
    qtbot.addWidget(plot)
    plot.resize(300, 200)
    plot.show()
    assert _pixel(plot, 0.6, 0.4).lightness() > 200  # a light window gets a light plot, not a black one
    try:
        theme.set_scheme(app, "dark")  # an existing plot is re-coloured with the palette
        assert theme.is_dark(app.palette())
        assert _pixel(plot, 0.6, 0.4).lightness() < 60
        axis = plot.getPlotItem().getAxis("left")
        assert axis.textPen().color().lightness() > 180 and "bits" in axis.labelString()
        later = pg.PlotWidget()  # and plots made later start dark
        qtbot.addWidget(later)
        later.resize(200, 150)
        assert _pixel(later, 0.6, 0.4).lightness() < 60
    finally:
        theme.set_scheme(app, "light")
    assert _pixel(plot, 0.6, 0.4).lightness() > 200
    with pytest.raises(ValueError, match="colour scheme 'sepia'"):
        theme.set_scheme(app, "sepia")


def test_temperature_view_separate_axes_and_apply_to_chat(qtbot, tmp_path):
    from symbiont_app.session.session import AppSession
    from symbiont_app.session.settings import Settings
    from symbiont_app.widgets.temperature import TemperaturePanel

    class Engine:
        def new_id(self):
            return 1

    settings = Settings(path=tmp_path / "settings.json")
    settings.data.sampling.top_k = 7
    session = AppSession(Engine(), settings)
    panel = TemperaturePanel(session)
    qtbot.addWidget(panel)
    assert panel.entropy_plot is not panel.prob_plot  # bits and probability each on their own axis
    assert "bits" in panel.entropy_plot.getPlotItem().getAxis("left").labelString()
    assert "p(chosen)" in panel.prob_plot.getPlotItem().getAxis("left").labelString()
    assert "token position" in panel.prob_plot.getPlotItem().getAxis("bottom").labelString()
    low, high = panel.prob_plot.getViewBox().viewRange()[0]
    assert low >= -1 and high <= 20  # an empty plot reads as tokens, not "position (x0.001)" over -400..400
    seen = []
    settings.subscribe(seen.append)
    panel.temp.setValue(35)
    panel.top_p.setValue(90)
    panel.min_p.setValue(5)
    panel.apply_button.click()
    sampling = settings.data.sampling
    assert (sampling.temp, sampling.top_p, sampling.min_p, sampling.top_k) == (0.35, 0.9, 0.05, 7)
    assert "sampling" in seen and "settings" in seen
    panel.top_p.setValue(100)  # the view's 1.0 keeps every token: the chat's "off" is 0
    panel.apply_button.click()
    assert settings.data.sampling.top_p == 0.0


def test_apply_to_chat_sets_the_chat_controls(qtbot, tmp_path, monkeypatch):
    """In the window: the what-if view's settings land in the chat's spin boxes, and the next send uses them."""
    monkeypatch.setenv("SYMBIONT_CONFIG_DIR", str(tmp_path / "config"))
    from test_app_widgets import FakeEngine

    from symbiont_app.gui import build_window
    from symbiont_app.widgets.panels import PANELS

    window = build_window("fake-model", worker_factory=FakeEngine, panels=[p for p in PANELS if p.name == "temperature"])
    qtbot.addWidget(window)
    panel = window.panels["temperature"]
    panel.temp.setValue(140)
    panel.min_p.setValue(10)
    panel.apply_to_chat()
    assert window.chat.temp.value() == pytest.approx(1.4) and window.chat.min_p.value() == pytest.approx(0.1)
    assert window.chat.sampling_prefs().temp == pytest.approx(1.4)
    window.close()


def test_lens_heatmap_colour_bar_labels_and_large_view(qtbot, tmp_path):
    """A 31-layer × 32-position lens: a colour bar in probability, axes named, ticks thinned to what
    fits the docked size (every layer labelled in the large view), the large view follows new data."""
    from test_app_panels_gui import RecordingEngine

    from symbiont_app.engine.handlers.lens.messages import LensComputed
    from symbiont_app.session.session import AppSession
    from symbiont_app.session.settings import Settings
    from symbiont_app.widgets.lens import LensPanel

    session = AppSession(RecordingEngine(), Settings(path=tmp_path / "settings.json"))
    panel = LensPanel(session)
    qtbot.addWidget(panel)
    for axis in ("left", "bottom"):  # empty (first run) or not, layers and positions never read "(x0.001)"
        item = panel.lens_map.plot.getPlotItem().getAxis(axis)
        assert not item.autoSIPrefix and "x0.001" not in item.labelString()
    P, T, k = 31, 32, 3
    probs = np.random.default_rng(0).uniform(0, 1, (P, T, k)).astype(np.float32)
    texts = tuple(tuple(tuple(f"w{p}.{t}.{j}" for j in range(k)) for t in range(T)) for p in range(P))

    def lens(scale):
        rid = panel.model.run_lens()
        session.handle_event(LensComputed(
            request_id=rid, points=tuple(f"resid_post.{i}" for i in range(P)), positions=np.arange(T) + 100,
            tokens=tuple(f" t{t}" for t in range(T)), top_texts=texts, top_probs=probs * scale,
            target_probs=probs[:, :, 0], source="test"))

    lens(1.0)
    panel.resize(1590, 300)  # the docked size in a 1600 × 1000 window
    panel.show()
    qtbot.waitExposed(panel)
    heatmap = panel.lens_map
    assert heatmap.colour_bar.levels() == (0.0, 1.0) and "p(top token)" in heatmap.colour_bar.getAxis("left").labelText
    plot = heatmap.plot.getPlotItem()
    assert plot.getAxis("left").labelText == "layer" and "position" in plot.getAxis("bottom").labelText
    heatmap._apply_ticks()
    labelled = [t for t in plot.getAxis("left")._tickLevels[0]]
    assert 2 <= len(labelled) < P and labelled[0] == (0.5, "0")  # docked: every k-th layer, no overprint
    view = heatmap.open_large()
    qtbot.waitExposed(view)
    view.map._apply_ticks()
    assert len(view.map.plot.getPlotItem().getAxis("left")._tickLevels[0]) == P  # large: every layer
    np.testing.assert_allclose(view.map.image.image, probs[:, :, 0].T)
    lens(0.5)
    np.testing.assert_allclose(view.map.image.image, 0.5 * probs[:, :, 0].T)  # it follows the next lens
    assert panel.patch_map.colour_bar is not None and "logit difference" in panel.patch_map.colour_bar.getAxis("left").labelText
    view.close()


def test_series_plots_follow_the_tokens(qtbot, tmp_path, monkeypatch):
    """Positions far from 0 (a long conversation) are in view: the empty plot's 0..16 range lets go."""
    monkeypatch.setenv("SYMBIONT_CONFIG_DIR", str(tmp_path / "config"))
    from test_app_widgets import FakeEngine

    from symbiont_app.gui import build_window
    from symbiont_app.widgets.panels import PANELS

    window = build_window("fake-model", worker_factory=FakeEngine, panels=[p for p in PANELS if p.name == "temperature"])
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: window.session.model_info is not None, timeout=10000)
    panel = window.panels["temperature"]
    for _ in range(3):
        window.chat.entry.setText("hello")
        window.chat.send()
        qtbot.waitUntil(lambda: not window.session.active, timeout=10000)
    panel.flush()
    xs = panel.prob_curve.getData()[0]
    assert len(xs) and np.nanmax(xs) > 16

    def in_view():
        low, high = panel.prob_plot.getViewBox().viewRange()[0]
        return low <= np.nanmin(xs) and np.nanmax(xs) <= high

    qtbot.waitUntil(in_view, timeout=10000)  # the view re-fits on its next update (slow on a loaded machine)
    window.close()


def test_every_visible_dock_tab_bar_is_one_group_of_tabbed_panels(qtbot, tmp_path, monkeypatch):
    """No stale second row of tabs (Qt can leave an earlier tabbing state's bar behind), also after Reset layout."""
    monkeypatch.setenv("SYMBIONT_CONFIG_DIR", str(tmp_path / "config"))
    from PySide6.QtWidgets import QTabBar
    from test_app_widgets import FakeEngine

    from symbiont_app.gui import build_window

    window = build_window("fake-model", worker_factory=FakeEngine)
    qtbot.addWidget(window)
    window.resize(1600, 1000)
    window.show()
    qtbot.waitExposed(window)

    def visible_bars():
        return sorted(tuple(sorted(bar.tabText(i) for i in range(bar.count())))
                      for bar in window.findChildren(QTabBar) if bar.parent() is window and bar.isVisible())

    groups = {tuple(sorted({d.windowTitle()} | {o.windowTitle() for o in window.tabifiedDockWidgets(d)}))
              for d in window.docks.values()}
    assert len(groups) == 2 and visible_bars() == sorted(groups)
    window.reset_layout()
    qtbot.wait(50)
    assert visible_bars() == sorted(groups)
    window.close()
