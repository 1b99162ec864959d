"""Sparse autoencoders: the model, community formats, training, feature records, meters.

- :mod:`.model` — one SAE class (standard ReLU, TopK, BatchTopK, JumpReLU) and clamping;
- :mod:`.formats` — load SAELens / Gemma Scope / Llama Scope / sparsify, save SAELens-native;
- :mod:`.train`, :mod:`.pipeline`, :mod:`.corpus`, :mod:`.activations`, :mod:`.evaluate` — training;
- :mod:`.features` — per-latent records and labels; :mod:`.meters` — live meters and clamps;
- :mod:`.search` — find latents by label, by token, or by contrast between prompt sets.
"""

from .formats import load_sae, save_sae
from .meters import FeatureMeter, MeterReading, clamp
from .model import ARCHITECTURES, SAE, SAEConfig, SAEOutput, fraction_unexplained

__all__ = [
    "ARCHITECTURES", "FeatureMeter", "MeterReading", "SAE", "SAEConfig", "SAEOutput", "clamp",
    "fraction_unexplained", "load_sae", "save_sae",
]
