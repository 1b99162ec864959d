"""`symbiont-app`: the desktop window.

The window never calls MLX: it submits requests to the engine thread
(:mod:`symbiont_app.engine`) and receives its events through a queued Qt signal
into the Qt-free session layer (:mod:`symbiont_app.session`), which the widgets observe.
``--screenshots DIR`` opens the window on a model, runs a short scripted conversation,
saves ``DIR/<panel>.png`` for the window and each panel, and exits.
"""

from __future__ import annotations

import argparse
import sys

from mlx_hooks.backend import reexec_with_fast_blas

QUIT_GRACE_S = 3.0
"""After the window closed, how long the process waits for the engine thread to finish its
current MLX call (a token: milliseconds) before exiting without it (a model load cannot be
interrupted and can take minutes)."""


def build_window(model_spec: str | None = "default", worker_factory=None, panels=None):
    """The main window, its engine thread started and ``model_spec`` loading (None: load nothing)."""
    from .widgets.main_window import MainWindow
    from .widgets.theme import apply_theme

    apply_theme()  # plots take the palette's colours (light or dark) before any is made
    return MainWindow(model_spec, worker_factory=worker_factory, panels=panels)


def start_model(requested: str | None) -> str:
    """The model to open: the one asked for, else the last one loaded (settings), else the default."""
    if requested:
        return requested
    from .session.settings import Settings

    recent = Settings.load().data.recent_models
    return recent[0] if recent else "default"


def main(argv=None) -> int:
    from .about import version_line

    # Raw: the --version line is printed as one line, not wrapped at the terminal width.
    parser = argparse.ArgumentParser(prog="symbiont-app", description="Symbiont desktop app",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=version_line(),
                        help="print the app's version and those of MLX, mlx-lm, PySide6 and Python, and exit")
    parser.add_argument("--model", default=None,
                        help="model to open: default, a repo id, a folder or a .gguf (default: the last model "
                             "loaded, else the default model)")
    parser.add_argument("--screenshots", metavar="DIR", default=None,
                        help="open the window on the model (the default model unless --model), save the first "
                             "run, a short scripted conversation (with the shipped SAE's meters), a truncated "
                             "reply and a failed load as DIR/<name>.png with each panel, and exit")
    args = parser.parse_args(argv)
    if argv is None:
        reexec_with_fast_blas()  # after parsing: --version and --help answer at once
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Symbiont")
    if args.screenshots:
        from .screenshots import take_screenshots

        return take_screenshots(args.screenshots, args.model or "default")
    window = build_window(start_model(args.model))
    window.show()
    return exit_after(window, app.exec())


def exit_after(window, code: int, grace_s: float = QUIT_GRACE_S) -> int:
    """Return ``code`` once the engine thread has ended, or leave after ``grace_s``.

    A daemon thread still inside an MLX call when the interpreter exits aborts the process
    ("terminate called without an active exception"); if the engine cannot finish in time,
    leave without tearing the interpreter down: settings were saved when the window closed,
    and every file the engine writes is written atomically (a conversion cut short leaves
    only its hidden ``.partial`` folder).
    """
    import os

    if not window.wait_for_engine(timeout=grace_s):
        print(f"symbiont-app: the engine thread was still busy {grace_s:.0f} s after the window closed "
              "(a model load?); exiting without waiting for it", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
