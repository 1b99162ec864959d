"""``symbiont-app --screenshots DIR``: open the window, run a short scripted conversation
with the shipped SAE's meters, save ``DIR/<panel>.png`` for the window and each panel, exit.

Also saved: ``first_run.png`` (the window once the model and its SAE are up, before any
user action), ``truncated_reply.png`` (the chat after a reply cut by max tokens) and
``failed_load.png`` (the window after asking for a folder that is not a model), and
``lens_docked.png``, ``dashboard_docked.png``, ``main_window_dark.png``, ``dashboard_dark.png``
(:mod:`.screenshot_views`: docked sizes, the dark scheme).

The script drives the window the way a user would (through the session layer the widgets
observe), waiting on the Qt event loop; it never touches the engine directly.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .screenshot_views import docked_and_dark_views

SCRIPT = (
    "What is the capital of France?",
    "Write one short sentence about cats.",
)
PANEL_SIZE = (1100, 700)
TRUNCATED_PROMPT = "Tell me a long story about a dragon."
TRUNCATED_TOKENS = 6
"""The extra turn for ``truncated_reply.png``: a prompt whose answer cannot fit this many tokens."""


def _wait(app, predicate, timeout: float, what: str) -> None:
    from PySide6.QtCore import QEventLoop

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"screenshots: timed out after {timeout:.0f} s waiting for {what}")
        app.processEvents(QEventLoop.AllEvents, 50)


_START = time.monotonic()


def _say(message: str) -> None:
    print(f"[{time.monotonic() - _START:6.1f} s] {message}", flush=True)


def _demo(app, session, timeout: float, stage: str) -> None:
    """The panels' part of the script (``session/panels_demo.py``): before the conversation the
    shipped SAE and a switched-off steering vector; after it watched latents, a latent's
    record, the logit lens and an activation-patching map."""
    from .session import panels_demo

    getattr(panels_demo, stage)(session)
    _wait(app, lambda: not session.active, timeout, f"the panels' {stage.replace('_', ' ')} requests")


def take_screenshots(folder: str | Path, model_spec: str = "default", timeout: float = 600.0,
                     max_tokens: int = 24) -> int:
    from PySide6.QtWidgets import QApplication

    from .gui import build_window

    app = QApplication.instance() or QApplication(sys.argv[:1])
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    window = build_window(model_spec)
    window.resize(1600, 1000)
    window.show()
    session = window.session
    status = 0
    extra: list[Path] = []
    try:
        _wait(app, lambda: session.model_info is not None or session.models.loading_request is None,
              timeout, "the model to load")
        if session.model_info is None:
            raise RuntimeError(f"the model did not load: {session.last_error.message if session.last_error else '?'}")
        _say(f"screenshots: model {session.model_info.name} loaded")
        _wait(app, lambda: not session.active, timeout, "the SAE attached at load")
        app.processEvents()
        extra.append(_save(window, out / "first_run.png"))  # no user action yet
        session.models.request_estimate(model_spec)  # the picker shows it against the budget
        _wait(app, lambda: not session.active, timeout, "the memory estimate")
        _demo(app, session, timeout, "before_conversation")
        from .session.sae import SaeModel

        sae = SaeModel.of(session).info
        _say(f"screenshots: SAE {sae.sae_id if sae else '(none: conversation without meters)'}")
        chat = window.chat
        chat.max_tokens.setValue(max_tokens)
        for prompt in SCRIPT:
            chat.entry.setText(prompt)
            if chat.send() is None:
                raise RuntimeError(f"could not send {prompt!r}: {session.last_error.message if session.last_error else ''}")
            _wait(app, lambda: not session.active, timeout, f"the reply to {prompt!r}")
            _say(f"screenshots: {prompt!r} -> {session.conversation.turns[-1].text!r}")
        extra.append(_truncated_reply(app, window, timeout, out / "truncated_reply.png"))
        tokens = session.conversation.tokens
        if tokens:
            session.conversation.pin(tokens[min(len(tokens) - 1, len(tokens) // 2)].position)
        _demo(app, session, timeout, "after_conversation")
    except Exception as exc:  # noqa: BLE001 - still save what the window shows
        _say(f"screenshots: {exc}")
        status = 1
    for widget in window.panels.values():
        if callable(getattr(widget, "flush", None)):
            widget.flush()  # draw coalesced updates now
    app.processEvents()
    saved = [_save(window, out / "main_window.png"), _save(window.chat, out / "chat.png")]
    saved += docked_and_dark_views(app, window, out)  # before the panels are floated one by one
    for name, dock in window.docks.items():
        saved.append(_save_panel(app, dock, out / f"{name}.png"))
    if session.model_info is not None:
        saved.append(_failed_load(app, window, timeout, out / "failed_load.png"))
    if session.last_error is not None:
        _say(f"screenshots: last error shown in the window: {session.last_error.message}")
    window.close()
    saved = [*extra, *saved]
    _say("screenshots: saved " + ", ".join(str(p) for p in saved))
    from .gui import exit_after

    return exit_after(window, status)


def _truncated_reply(app, window, timeout: float, path: Path) -> Path:
    chat, session = window.chat, window.session
    chat.max_tokens.setValue(TRUNCATED_TOKENS)
    chat.entry.setText(TRUNCATED_PROMPT)
    if chat.send() is None:
        raise RuntimeError(f"could not send {TRUNCATED_PROMPT!r}")
    _wait(app, lambda: not session.active, timeout, "the truncated reply")
    _say(f"screenshots: {TRUNCATED_PROMPT!r} ended with {session.conversation.turns[-1].finish_reason!r}")
    app.processEvents()
    return _save(chat, path)


def _failed_load(app, window, timeout: float, path: Path) -> Path:
    """Ask for a folder that is not a model: the error bar says why, the old model stays loaded."""
    import tempfile

    session = window.session
    with tempfile.TemporaryDirectory(prefix="not-a-model-") as folder:
        (Path(folder) / "config.json").write_text("{ this is not JSON", encoding="utf-8")
        picker = window.panels.get("model")
        if picker is not None:
            window.docks["model"].raise_()
            picker.spec.setEditText(folder)
            picker.load()
        else:
            session.models.load(folder)
        _wait(app, lambda: not session.active, timeout, "the failed load")
    for _ in range(3):
        app.processEvents()
    return _save(window, path)


def _save(widget, path: Path) -> Path:
    if not widget.grab().save(str(path)):
        raise OSError(f"{path}: could not write the screenshot")
    return path


def _save_panel(app, dock, path: Path) -> Path:
    # Each panel is floated at a readable size for its picture, then docked back.
    dock.setFloating(True)
    dock.resize(*PANEL_SIZE)
    dock.show()
    for _ in range(5):
        app.processEvents()
    try:
        return _save(dock.widget(), path)
    finally:
        dock.setFloating(False)
