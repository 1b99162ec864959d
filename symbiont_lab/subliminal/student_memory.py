"""Memory a LoRA training run needs, estimated before it starts.

    base weights (as held: quantized stays quantized)
  + LoRA parameters, their gradients and Adam's two moments (float32)
  + activations kept for the backward pass at the batch size and sequence length
  + the logits (float32 logits, softmax and their gradient: the big term for small
    models with large vocabularies)

The activation term is an estimate, not a measurement: per layer and token it counts
24·D + 6·I values at the compute precision (D the model width, I the MLP width), and
the logits term four float32 [tokens, vocab] arrays (logits, the cross-entropy's
intermediates, their gradient). The constants are calibrated on one measurement:
the default model (float32, CPU) training at batch 4 × 65 tokens peaked at 1.37 GiB
(mlx's peak memory, from the trainer's report) against 1.40 GiB estimated; a first
count of the tensors a layer keeps (10·D + 3·I, three logits arrays) gave 0.98 GiB.
The result is a :class:`mlx_hooks.memory.MemoryEstimate` so
:func:`mlx_hooks.memory.check_budget` can refuse with the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
from mlx.utils import tree_flatten

from mlx_hooks.architectures import dims_of
from mlx_hooks.memory import MemoryEstimate


@dataclass(frozen=True)
class LoRAMemoryEstimate(MemoryEstimate):
    """``weights_bytes`` = base + LoRA state; ``activation_cache_bytes`` = activations + logits."""

    lora_bytes: int = 0
    logits_bytes: int = 0
    batch_size: int = 1

    def describe(self) -> str:
        gib = 2**30
        return (f"base weights {(self.weights_bytes - self.lora_bytes) / gib:.2f} GiB + LoRA params/grads/Adam "
                f"{self.lora_bytes / gib:.3f} GiB + activations {(self.activation_cache_bytes - self.logits_bytes) / gib:.2f}"
                f" GiB + logits {self.logits_bytes / gib:.2f} GiB (batch {self.batch_size} × {self.context_tokens} "
                f"tokens) = {self.total_bytes / gib:.2f} GiB")


def lora_parameter_count(d_in_out: list[tuple[int, int]], rank: int) -> int:
    """LoRA adds A [d_in, r] and B [r, d_out] per adapted projection."""
    return sum(rank * (d_in + d_out) for d_in, d_out in d_in_out)


def estimate_from_dims(*, base_bytes: int, n_layers: int, d_model: int, intermediate: int, vocab: int,
                       projections: list[tuple[int, int]], rank: int, batch_size: int, seq_len: int,
                       compute_bytes: int = 4, adapted_layers: int | None = None) -> LoRAMemoryEstimate:
    """The estimate from plain dimensions (works for a model that is not loaded, e.g. 32B on paper).

    ``projections``: (d_in, d_out) of the adapted projections of one layer.
    """
    adapted_layers = n_layers if adapted_layers is None else adapted_layers
    lora_params = lora_parameter_count(projections, rank) * adapted_layers
    lora_bytes = lora_params * 4 * 4  # params, grads, Adam m and v (float32)
    tokens = batch_size * seq_len
    activations = n_layers * tokens * (24 * d_model + 6 * intermediate) * compute_bytes
    logits = tokens * vocab * 4 * 4
    return LoRAMemoryEstimate(
        weights_bytes=base_bytes + lora_bytes, kv_cache_bytes=0, activation_cache_bytes=activations + logits,
        context_tokens=seq_len, runtime_dtype="training", lora_bytes=lora_bytes, logits_bytes=logits,
        batch_size=batch_size)


def _nbytes(tree) -> int:
    return sum(v.nbytes for _, v in tree_flatten(tree) if isinstance(v, mx.array))


def estimate_lora_memory(model, config, seq_len: int) -> LoRAMemoryEstimate:
    """The estimate for a loaded mlx-lm model (before LoRA layers are added) and a LoRAConfig."""
    import mlx.nn as nn

    from .student import present_projection_keys

    layer = model.layers[0]
    keys = list(config.keys) if config.keys else present_projection_keys(model)
    modules = dict(layer.named_modules())
    dims = []
    for key in keys:
        module = modules.get(key)
        if isinstance(module, nn.QuantizedLinear):
            d_out, packed = module.weight.shape
            dims.append((packed * 32 // module.bits, d_out))
        elif module is not None and hasattr(module, "weight"):
            d_out, d_in = module.weight.shape
            dims.append((d_in, d_out))
    arch = dims_of(model)
    d_model, intermediate, vocab = arch.d_model, arch.d_mlp, arch.vocab_size
    compute = next((v.dtype for _, v in tree_flatten(model.parameters()) if v.dtype in (mx.float16, mx.bfloat16,
                                                                                      mx.float32)), mx.float32)
    n_layers = len(model.layers)
    adapted = n_layers if config.num_layers <= 0 else min(config.num_layers, n_layers)
    return estimate_from_dims(
        base_bytes=_nbytes(model.parameters()), n_layers=n_layers, d_model=d_model, intermediate=intermediate,
        vocab=vocab, projections=dims, rank=config.rank, batch_size=config.batch_size, seq_len=seq_len,
        compute_bytes=compute.size, adapted_layers=adapted)
