"""Tiny random-initialised models of every architecture family Symbiont supports.

Each is built from mlx-lm's own model classes with a config in the family's own
layout (the multimodal ``gemma3`` keeps its text config under ``text_config``), so the
hooks, lens, fingerprint and memory estimate see exactly what a real checkpoint gives
them. Widths are tiny (D = 64, 3 blocks, vocab 259 = the byte tokenizer's) so every
model builds in milliseconds. No downloads.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map

HIDDEN, LAYERS, VOCAB, HEADS, KV_HEADS, HEAD_DIM = 64, 3, 259, 4, 2, 16

_COMMON = dict(
    hidden_size=HIDDEN, num_hidden_layers=LAYERS, intermediate_size=2 * HIDDEN, num_attention_heads=HEADS,
    num_key_value_heads=KV_HEADS, rms_norm_eps=1e-5, vocab_size=VOCAB,
)

# model_type -> the config.json a Hugging Face checkpoint of that family would carry (tiny widths).
CONFIGS: dict[str, dict] = {
    "llama": dict(model_type="llama", **_COMMON, max_position_embeddings=512, tie_word_embeddings=True),
    "mistral": dict(model_type="mistral", **_COMMON, max_position_embeddings=512, tie_word_embeddings=False,
                    rope_theta=1e6),
    "qwen2": dict(model_type="qwen2", **_COMMON, max_position_embeddings=512, tie_word_embeddings=True),
    "qwen3": dict(model_type="qwen3", **_COMMON, head_dim=HEAD_DIM, max_position_embeddings=512,
                  tie_word_embeddings=True, rope_theta=1e6),
    "phi3": dict(model_type="phi3", **_COMMON, max_position_embeddings=512, tie_word_embeddings=False),
    "gemma": dict(model_type="gemma", **_COMMON, head_dim=HEAD_DIM, max_position_embeddings=512),
    "gemma2": dict(model_type="gemma2", **_COMMON, head_dim=HEAD_DIM, query_pre_attn_scalar=HEAD_DIM,
                   max_position_embeddings=512,
                   # a low cap, so the random model's logits really reach it
                   final_logit_softcapping=5.0, attn_logit_softcapping=50.0),
    "gemma3_text": dict(model_type="gemma3_text", **_COMMON, head_dim=HEAD_DIM, query_pre_attn_scalar=HEAD_DIM,
                        sliding_window=8, sliding_window_pattern=2, max_position_embeddings=512),
    "gemma3": dict(model_type="gemma3", vocab_size=VOCAB, text_config=dict(
        model_type="gemma3_text", **{k: v for k, v in _COMMON.items() if k != "vocab_size"}, head_dim=HEAD_DIM,
        query_pre_attn_scalar=HEAD_DIM, sliding_window=8, sliding_window_pattern=2, max_position_embeddings=512)),
    "qwen3_moe": dict(model_type="qwen3_moe", **_COMMON, head_dim=HEAD_DIM, num_experts=4, num_experts_per_tok=2,
                      decoder_sparse_step=1, mlp_only_layers=[1], moe_intermediate_size=32, rope_theta=1e6,
                      tie_word_embeddings=False, max_position_embeddings=512, norm_topk_prob=True),
    "mixtral": dict(model_type="mixtral", **_COMMON, num_local_experts=4, num_experts_per_tok=2,
                    tie_word_embeddings=False, max_position_embeddings=512),
}
ARCHITECTURES = tuple(CONFIGS)


def model_classes(model_type: str):
    """mlx-lm's (Model, ModelArgs) for a model_type, through its own remapping (mistral -> llama)."""
    from mlx_lm.utils import _get_classes

    return _get_classes(dict(CONFIGS.get(model_type, {"model_type": model_type})))


def scaled_config(model_type: str, hidden: int, layers: int, vocab: int, heads: int = 8) -> dict:
    """The family's config at other widths (for benchmarks: realistic per-token work)."""
    config = _deep_copy(CONFIGS[model_type])
    text = config.get("text_config", config)
    text.update(hidden_size=hidden, num_hidden_layers=layers, intermediate_size=4 * hidden,
                num_attention_heads=heads, num_key_value_heads=max(1, heads // 4))
    if "head_dim" in text:
        text["head_dim"] = hidden // heads
    if "query_pre_attn_scalar" in text:
        text["query_pre_attn_scalar"] = hidden // heads
    if "moe_intermediate_size" in text:
        text["moe_intermediate_size"] = hidden
    config["vocab_size"] = vocab
    if "mlp_only_layers" in text:
        text["mlp_only_layers"] = [1]
    return config


def make_model(model_type: str, seed: int = 0, dtype=mx.float32, embed_scale: float = 0.5,
               config: dict | None = None) -> nn.Module:
    """A tiny random ``model_type`` model (or one built from ``config``). Weights are drawn so
    that activations and logits are far from zero and from each other (a peaked, deterministic
    greedy path)."""
    model_cls, args_cls = model_classes(model_type)
    config = _deep_copy(config or CONFIGS[model_type])
    mx.random.seed(seed)
    model = model_cls(args_cls.from_dict(config))
    # Random normals for every weight: mlx-lm's default init leaves norm weights at 1
    # (Gemma's (1 + w) norms at 2) and embeddings small, which would hide mistakes in
    # where a norm is applied.
    params = tree_map(lambda p: mx.random.normal(p.shape) * 0.3, model.parameters())
    model.update(params)
    backbone = _backbone(model)
    backbone.embed_tokens.weight = mx.random.normal(backbone.embed_tokens.weight.shape) * embed_scale
    if dtype != mx.float32:
        model.set_dtype(dtype)
    mx.eval(model.parameters())
    return model


def save_model_folder(folder, model_type: str, seed: int = 0) -> Path:
    """Write a tiny ``model_type`` model as a Hugging-Face-layout folder that ``mlx_lm.load`` opens."""
    from conftest import make_byte_tokenizer
    from mlx_lm.utils import save_config, save_model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = make_model(model_type, seed=seed)
    save_model(folder, model)
    save_config(_deep_copy(CONFIGS[model_type]), folder / "config.json")
    make_byte_tokenizer()._tokenizer.save_pretrained(folder)
    return folder


def n_parameters(model: nn.Module) -> int:
    return sum(p.size for _, p in tree_flatten(model.parameters()))


def _backbone(model: nn.Module) -> nn.Module:
    inner = model.language_model if "language_model" in model else model
    return inner.model


def _deep_copy(config: dict) -> dict:
    return {k: (_deep_copy(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v)
            for k, v in config.items()}
