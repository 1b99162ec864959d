"""Type and range checks on a model's ``config.json`` before anything is built from it.

mlx-lm's ``ModelArgs.from_dict`` takes values as they come, so ``"hidden_size": "576x"`` or a
head count of 0 surfaced later as a bare Python message (``invalid literal for int()``,
``division by zero``) with no file or key named. These are the keys the hooks, the memory
estimate and the loader derive widths from; a value that is present must have the right type
and lie in range (absent keys keep their defaults).
"""

from __future__ import annotations

import math

POSITIVE_INTS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
                 "intermediate_size", "vocab_size", "max_position_embeddings")
"""Whole numbers above 0 (JSON integers: ``576.0`` and ``"576"`` are refused too)."""
POSITIVE_FLOATS = ("rms_norm_eps", "layer_norm_eps", "rope_theta", "final_logit_softcapping",
                   "attn_logit_softcapping", "query_pre_attn_scalar")
"""Finite numbers above 0."""


def config_problems(config: dict, prefix: str = "") -> list[str]:
    """``"key: what is wrong"`` for each checked key of ``config`` (and of a nested ``text_config``)."""
    problems = []
    for key in POSITIVE_INTS:
        value = config.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            problems.append(f"{prefix}{key}: expected a whole number above 0, got {value!r}")
    for key in POSITIVE_FLOATS:
        value = config.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value) or value <= 0):
            problems.append(f"{prefix}{key}: expected a finite number above 0, got {value!r}")
    heads, kv_heads = config.get("num_attention_heads"), config.get("num_key_value_heads")
    if not problems and isinstance(heads, int) and isinstance(kv_heads, int) and heads % kv_heads:
        problems.append(f"{prefix}num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")
    text = config.get("text_config")
    if isinstance(text, dict):
        problems += config_problems(text, f"{prefix}text_config.")
    return problems
