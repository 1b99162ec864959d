"""Handler modules: importing this package imports each one (registering its handlers).

The explicit imports keep a frozen app (PyInstaller) complete, where ``pkgutil``
over the bundled package can miss modules; the ``pkgutil`` loop picks up any module
added later without editing this file.
"""

import importlib
import pkgutil

from . import chat, download, lens, model, sae, sae_dashboard, sae_explain, steering  # noqa: F401

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
