"""Sparse autoencoders: the model, community formats, training, feature records, meters."""

from .model import ARCHITECTURES, SAE, SAEConfig, SAEOutput, fraction_unexplained

__all__ = ["ARCHITECTURES", "SAE", "SAEConfig", "SAEOutput", "fraction_unexplained"]
