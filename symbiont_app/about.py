"""What ``symbiont-app --version`` prints and Help › About shows: versions, backend, model.

Qt-free and cheap: versions come from the installed packages' metadata (nothing imported).
"""

from __future__ import annotations

import platform
import sys

PACKAGES = ("symbiont", "mlx", "mlx-lm", "PySide6", "pyqtgraph", "numpy", "safetensors", "tokenizers")
"""Distributions whose versions are reported (the app, its engine, its window)."""


def package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    """``{distribution: version}`` for :data:`PACKAGES`, plus Python's."""
    return {**{name: package_version(name) for name in PACKAGES}, "Python": platform.python_version()}


def version_line(prog: str = "symbiont-app") -> str:
    """One line: the app's version and what it runs on (``--version``)."""
    found = versions()
    rest = ", ".join(f"{name} {found[name]}" for name in ("mlx", "mlx-lm", "PySide6", "Python"))
    return f"{prog} {found['symbiont']} ({rest}; {sys.platform} {platform.machine()})"


def about_text(model_info=None, backend_summary: str | None = None) -> str:
    """Plain text for the About box: versions, backend (device, BLAS), the loaded model."""
    lines = [version_line(), "", "Versions:"]
    lines += [f"  {name} {value}" for name, value in versions().items()]
    backend = model_info.backend if model_info is not None else backend_summary
    if backend:
        lines += ["", "Backend:", *[f"  {line}" for line in backend.splitlines()]]
    if model_info is not None:
        lines += ["", "Model:", f"  {model_info.name} ({model_info.spec})",
                  f"  {model_info.n_layers} layers, d_model {model_info.d_model}, vocab {model_info.vocab_size}, "
                  f"{model_info.runtime_dtype}", f"  fingerprint {model_info.fingerprint}"]
    else:
        lines += ["", "Model: none loaded"]
    return "\n".join(lines)
