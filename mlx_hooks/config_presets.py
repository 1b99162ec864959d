"""Published ``config.json`` values of a few real models, and Apple chips' memory bandwidth, for
estimates and benchmarks without a download.

The values are those of the checkpoints' own ``config.json`` on the Hugging Face hub (the
keys mlx-lm's ``ModelArgs`` read; tokenizer ids and ``torch_dtype`` left out).
:data:`PUBLISHED_PARAMS` are the parameter counts the model cards give, which the estimate
is checked against (``tests/test_scale_estimate.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import ModelLoadError

_LLAMA3_ROPE = dict(rope_type="llama3", low_freq_factor=1.0, high_freq_factor=4.0,
                    original_max_position_embeddings=8192)

PRESETS: dict[str, dict] = {
    "llama-3.2-1b": dict(
        model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, head_dim=64, vocab_size=128256, max_position_embeddings=131072,
        tie_word_embeddings=True, rms_norm_eps=1e-5, rope_theta=500000.0, attention_bias=False, mlp_bias=False,
        rope_scaling=dict(_LLAMA3_ROPE, factor=32.0)),
    "llama-3.1-8b": dict(
        model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, vocab_size=128256, max_position_embeddings=131072,
        tie_word_embeddings=False, rms_norm_eps=1e-5, rope_theta=500000.0, attention_bias=False, mlp_bias=False,
        rope_scaling=dict(_LLAMA3_ROPE, factor=8.0)),
    "llama-3.1-70b": dict(
        model_type="llama", hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
        num_key_value_heads=8, head_dim=128, vocab_size=128256, max_position_embeddings=131072,
        tie_word_embeddings=False, rms_norm_eps=1e-5, rope_theta=500000.0, attention_bias=False, mlp_bias=False,
        rope_scaling=dict(_LLAMA3_ROPE, factor=8.0)),
    # Qwen2 puts biases on q/k/v (mlx-lm's qwen2 model always does); sliding_window is off (use_sliding_window false).
    "qwen2.5-72b": dict(
        model_type="qwen2", hidden_size=8192, intermediate_size=29568, num_hidden_layers=80, num_attention_heads=64,
        num_key_value_heads=8, vocab_size=152064, max_position_embeddings=32768, tie_word_embeddings=False,
        rms_norm_eps=1e-6, rope_theta=1000000.0, use_sliding_window=False, sliding_window=131072,
        max_window_layers=80),
    "gemma-2-27b": dict(
        model_type="gemma2", hidden_size=4608, intermediate_size=36864, num_hidden_layers=46, num_attention_heads=32,
        num_key_value_heads=16, head_dim=128, vocab_size=256000, max_position_embeddings=8192,
        tie_word_embeddings=True, rms_norm_eps=1e-6, rope_theta=10000.0, query_pre_attn_scalar=144,
        sliding_window=4096, final_logit_softcapping=30.0, attn_logit_softcapping=50.0,
        hidden_activation="gelu_pytorch_tanh"),
}

PUBLISHED_PARAMS: dict[str, float] = {
    "llama-3.2-1b": 1.24e9, "llama-3.1-8b": 8.03e9, "llama-3.1-70b": 70.6e9, "qwen2.5-72b": 72.7e9,
    "gemma-2-27b": 27.2e9,
}
"""Parameter counts from the model cards."""


CHIP_BANDWIDTH_GBS: dict[str, float] = {
    "m1-pro": 200, "m1-max": 400, "m1-ultra": 800,
    "m2-pro": 200, "m2-max": 400, "m2-ultra": 800,
    "m3-pro": 150, "m3-max": 400, "m3-max-30gpu": 300, "m3-ultra": 819,
    "m4-pro": 273, "m4-max": 546, "m4-max-32gpu": 410,
}
"""Apple's published unified-memory bandwidth per chip, GB/s (10^9 bytes/s). The 96 GB
Macs are M2 Max (400) and the 30-GPU-core M3 Max (300)."""

def preset_config(name: str) -> dict:
    """A copy of a preset's config (names are case-insensitive); unknown names are refused with the list."""
    key = name.lower()
    if key not in PRESETS:
        raise ModelLoadError(f"no preset {name!r} (presets: {', '.join(PRESETS)})")
    return json.loads(json.dumps(PRESETS[key]))  # deep copy: callers may edit it


def is_preset(spec: str | None) -> bool:
    return bool(spec) and spec.lower() in PRESETS


def config_from_spec(spec: str) -> tuple[str, dict]:
    """``(name, config)`` of a preset name or a ``config.json`` path (a folder holding one works too)."""
    if is_preset(spec):
        return spec.lower(), preset_config(spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot read the config ({exc.strerror or exc})") from exc
    except ValueError as exc:
        raise ModelLoadError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise ModelLoadError(f"{path}: expected a JSON object, got {type(config).__name__}")
    return path.parent.name or str(path), config
