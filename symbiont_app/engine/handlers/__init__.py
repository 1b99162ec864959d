"""One package per engine feature: ``<feature>/messages.py`` (its requests and events) beside
``<feature>/handler.py`` (what the engine thread does with them, registered with ``@handles``).

Why a package per feature rather than ``<feature>_messages.py`` files beside the handler
modules: the messages must import without MLX or Qt (the session layer and widgets import
them; the handlers import MLX), and a package lets one import-linter contract cover them
all, the next feature's included — ``symbiont_app.engine.handlers.*.messages`` may not
import MLX, mlx-lm or Qt (pyproject.toml). The next panel is one new folder here.

Importing this package imports nothing else (so importing a feature's messages loads no
handler); :func:`import_all` imports every handler module, which registers its handlers.

A new panel: ``<feature>/messages.py`` (``@dataclass(frozen=True, kw_only=True)`` subclasses of
``protocol.Request`` / ``protocol.Event``, plain values only, no default on a field the sender
must give), ``<feature>/handler.py`` (``@handles(TheRequest)`` functions of ``(state, request,
ctx)``), a line in :func:`import_all`; then a Qt-free sub-model in ``symbiont_app/session/``
that sends the requests and folds the events, and a widget in ``symbiont_app/widgets/`` that
observes it. Steering-like state the generation must apply goes in ``EngineState.table``.
"""

import functools
import importlib
import pkgutil


@functools.cache  # once: it runs before every request
def import_all() -> None:
    """Import every feature's handler module (registering its handlers)."""
    # The explicit imports keep a frozen app (PyInstaller) complete, where ``pkgutil`` over the
    # bundled package can miss modules; the loop picks up a feature added later.
    from .chat import handler as _chat  # noqa: F401
    from .download import handler as _download  # noqa: F401
    from .lens import handler as _lens  # noqa: F401
    from .model import handler as _model  # noqa: F401
    from .sae import handler as _sae  # noqa: F401
    from .sae_dashboard import handler as _sae_dashboard  # noqa: F401
    from .sae_explain import handler as _sae_explain  # noqa: F401
    from .steering import handler as _steering  # noqa: F401

    for feature in pkgutil.iter_modules(__path__):
        if feature.ispkg:
            importlib.import_module(f"{__name__}.{feature.name}.handler")
