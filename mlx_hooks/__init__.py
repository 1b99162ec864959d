"""mlx_hooks: Symbiont's headless engine (no Qt here, enforced by import-linter).

Hooks on an mlx-lm model's residual stream, activation capture across a streamed
generation, interventions, logit lens and activation patching, and one loader for
the embedded default model, Hugging Face repos, local folders and GGUF files.

Names are imported lazily, so ``import mlx_hooks.backend`` does not load MLX: a
launcher must be able to re-execute itself with an optimized BLAS before MLX's
bundled one is mapped (see :mod:`mlx_hooks.backend`).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "activation_cache": ["ActivationRecorder", "CacheConfig"],
    "chat": ["ChatSession"],
    "effective_information": ["EIEstimate", "EffectiveInformation", "bootstrap_contrast", "bootstrap_ei",
                              "effective_information"],
    "errors": ["ContextLengthError", "GGUFError", "HookPointError", "MemoryBudgetError", "ModelLoadError",
               "SymbiontError"],
    "fingerprint": ["ModelFingerprint", "fingerprint_model"],
    "generate": ["GenerationStep", "TokenAlternative", "hooked_stream_generate"],
    "hooks": ["HookSession", "hook_points", "hooked"],
    "interventions": ["Ablate", "AddVector", "ForwardContext", "FunctionIntervention", "Patch", "position_mask"],
    "intervention_states": ["AddDirections", "ClampLatents", "SetCoordinates", "SetProjections", "transition_samples"],
    "lens": ["LensResult", "logit_lens", "run_logit_lens"],
    "loader": ["LoadedModel", "load_model", "resolve_source"],
    "patching": ["PatchingResult", "activation_patching"],
    "points": ["HookPoint", "ModelAdapter"],
    "sampling": ["SamplingSettings", "entropy_bits"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'mlx_hooks' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


def __dir__():
    return sorted([*globals(), *__all__])
