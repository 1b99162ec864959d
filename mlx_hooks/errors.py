"""Errors the engine raises for bad input: each names the file or point and the problem."""

from __future__ import annotations


class SymbiontError(Exception):
    """Base class: a problem the user can act on (shown as-is in the CLI and the app)."""


class ModelLoadError(SymbiontError):
    """A model could not be found, read or converted (missing, truncated, corrupt, unsupported)."""


class GGUFError(ModelLoadError):
    """A GGUF file is unreadable or uses an architecture or tensor type we do not support."""


class HookPointError(SymbiontError, KeyError):
    """A hook point name that does not exist on this model (or a layer index out of range)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class MemoryBudgetError(SymbiontError):
    """Loading or caching would exceed the configured memory budget."""


class ContextLengthError(SymbiontError):
    """A prompt longer than the model's context length."""


class SAELoadError(SymbiontError):
    """An SAE file that cannot be read or does not fit the model (names the file and the problem)."""


class HubAccessError(ModelLoadError):
    """A Hugging Face repo that cannot be fetched: missing, gated or private, or the Hub unreachable
    (the message names the repo and what to do)."""


class DownloadCancelled(SymbiontError):
    """A hub download stopped because the user cancelled it; files already complete stay in the cache."""


class NonFiniteError(SymbiontError):
    """A number that must be finite is NaN or infinite: a setting, a weight file, an activation after
    an intervention (the message names which and where)."""
