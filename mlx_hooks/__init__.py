"""mlx_hooks: Symbiont's headless engine (no Qt here, enforced by import-linter).

Hooks on an mlx-lm model's residual stream, activation capture across a streamed
generation, interventions, logit lens and activation patching, and one loader for
the embedded default model, Hugging Face repos, local folders and GGUF files.
"""

from .activation_cache import ActivationRecorder, CacheConfig
from .chat import ChatSession
from .errors import (
    ContextLengthError,
    GGUFError,
    HookPointError,
    MemoryBudgetError,
    ModelLoadError,
    SymbiontError,
)
from .fingerprint import ModelFingerprint, fingerprint_model
from .generate import GenerationStep, TokenAlternative, hooked_stream_generate
from .hooks import HookSession, hook_points, hooked
from .interventions import Ablate, AddVector, ForwardContext, FunctionIntervention, Patch, position_mask
from .lens import LensResult, logit_lens, run_logit_lens
from .loader import LoadedModel, load_model, resolve_source
from .patching import PatchingResult, activation_patching
from .points import HookPoint, ModelAdapter
from .sampling import SamplingSettings, entropy_bits

__version__ = "0.1.0"

__all__ = [
    "Ablate", "ActivationRecorder", "AddVector", "CacheConfig", "ChatSession", "ContextLengthError",
    "ForwardContext", "FunctionIntervention", "GGUFError", "GenerationStep", "HookPoint", "HookPointError",
    "HookSession", "LensResult", "LoadedModel", "MemoryBudgetError", "ModelAdapter", "ModelFingerprint",
    "ModelLoadError", "Patch", "PatchingResult", "SamplingSettings", "SymbiontError", "TokenAlternative",
    "activation_patching", "entropy_bits", "fingerprint_model", "hook_points", "hooked",
    "hooked_stream_generate", "load_model", "logit_lens", "position_mask", "resolve_source", "run_logit_lens",
]
