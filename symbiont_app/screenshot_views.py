"""The screenshots of the plots as a user first sees them (``symbiont-app --screenshots DIR``):

- ``lens_docked.png``: the Lens / patching dock at its default docked size in the window
  (the other panel pictures float each panel at a larger size);
- ``dashboard_docked.png``: the Feature dashboard dock, docked;
- ``main_window_dark.png`` and ``dashboard_dark.png``: the same window in the dark scheme
  (Qt widgets and pyqtgraph plots alike), then the scheme goes back to the system's.
"""

from __future__ import annotations

from pathlib import Path


def _settle(app, rounds: int = 5) -> None:
    for _ in range(rounds):
        app.processEvents()


def _grab(widget, path: Path) -> Path:
    if not widget.grab().save(str(path)):
        raise OSError(f"{path}: could not write the screenshot")
    return path


def docked_and_dark_views(app, window, out: Path) -> list[Path]:
    """Save the docked and dark-scheme pictures into ``out``; returns their paths."""
    from .widgets.theme import set_scheme

    saved = []
    for name in ("lens", "dashboard"):
        dock = window.docks.get(name)
        if dock is not None and not dock.isFloating():
            dock.show()
            dock.raise_()
            _settle(app)
            saved.append(_grab(dock.widget(), out / f"{name}_docked.png"))
    set_scheme(app, "dark")
    try:
        _settle(app)
        saved.append(_grab(window, out / "main_window_dark.png"))
        if "dashboard" in window.docks:
            saved.append(_grab(window.docks["dashboard"].widget(), out / "dashboard_dark.png"))
    finally:
        set_scheme(app, "system")
        _settle(app)
    return saved
