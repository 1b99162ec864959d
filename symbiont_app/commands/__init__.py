"""Sub-commands of `symbiont` beyond the engine's own (chat, lens, patch, models).

Each module here defines ``register(subparsers)``, which adds its sub-command(s) with
``set_defaults(func=...)``; :mod:`symbiont_app.cli` registers every module it finds.
Keep module-level imports light (no MLX): `--help` must stay fast.
"""

from __future__ import annotations

import importlib
import pkgutil


def register_all(subparsers) -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(subparsers)
