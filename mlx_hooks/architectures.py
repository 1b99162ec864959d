"""What Symbiont knows about each architecture family, in one place.

The hooks, the lens, the fingerprint, the memory estimate and the context guard all
read these entries; adding a family is one :class:`Architecture` entry plus the shared
test matrix (``tests/test_architectures.py``).

Why an explicit table rather than guessing from module names: the same child name
means different things across families. In llama-style blocks the attention output
(``self_attn``) is added to the residual as is, and ``post_attention_layernorm`` is the
*pre*-MLP norm; in Gemma 2/3 ``post_attention_layernorm`` normalises the attention
output and *its* output is what the residual receives. A guess would attach Gemma
Scope's MLP SAEs to the wrong tensor without any error.

:class:`ModelDims` holds one model's widths, read through mlx-lm's own ``ModelArgs``
(so its defaults apply exactly as when mlx-lm builds the model), from a loaded model
(:func:`dims_of`) or from a ``config.json`` before loading (:func:`dims_from_config`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from .errors import HookPointError


@dataclass(frozen=True)
class Architecture:
    """Where things live in one family's mlx-lm model, and how its forward pass differs."""

    name: str
    """Family name (the mlx-lm module: ``llama``, ``gemma2``...)."""
    model_types: tuple[str, ...]
    """``config.json`` ``model_type`` values of this family (``mistral`` is a llama in mlx-lm)."""
    decoder_path: tuple[str, ...] = ("model",)
    """Attributes from the loaded model to the decoder (``embed_tokens``, ``layers``, ``norm``)."""
    text_config_key: str | None = None
    """Config key of the text model's own config in multimodal wrappers (``text_config``)."""
    attn_attr: str = "self_attn"
    """The block's attention child (its ``o_proj`` input is ``attn_z``)."""
    mlp_attr: str = "mlp"
    """The block's MLP (or mixture-of-experts) child (its ``down_proj`` input is ``mlp_hidden``)."""
    attn_out_attr: str = "self_attn"
    """The block child whose output is exactly what attention adds to the residual stream."""
    mlp_out_attr: str = "mlp"
    """The block child whose output is exactly what the MLP adds to the residual stream."""
    out_proj_attr: str = "o_proj"
    """The attention's output projection."""
    down_proj_attr: str = "down_proj"
    """The MLP's down projection (absent on mixture-of-experts layers: no ``mlp_hidden`` there)."""
    embed_scale: str = "none"
    """``none``; ``sqrt_d``: the backbone multiplies the embedding by sqrt(d_model) in the
    activation dtype; ``sqrt_d_bf16``: by sqrt(d_model) rounded to bfloat16 first (Gemma 3)."""
    final_softcap_key: str | None = None
    """ModelArgs field of the final-logit soft cap ``c·tanh(logits / c)`` (Gemma 2), if any."""
    gguf_name: str = ""
    """llama.cpp's name for the family (``general.architecture`` in GGUF files and control vectors)."""
    default_context: int | None = None
    """Context length when mlx-lm's ModelArgs does not keep it (its Gemma, Gemma 2 and Mixtral args drop it)."""


_GEMMA_POST_NORMS = dict(attn_out_attr="post_attention_layernorm", mlp_out_attr="post_feedforward_layernorm")

ARCHITECTURES: tuple[Architecture, ...] = (
    Architecture("llama", ("llama", "mistral"), gguf_name="llama"),
    Architecture("qwen2", ("qwen2",), gguf_name="qwen2"),
    Architecture("qwen3", ("qwen3",), gguf_name="qwen3"),
    Architecture("phi3", ("phi3",), gguf_name="phi3"),
    # Gemma (1)'s published context is 8192 tokens; mlx-lm's gemma ModelArgs has no field for it.
    Architecture("gemma", ("gemma",), embed_scale="sqrt_d", gguf_name="gemma", default_context=8192),
    # Gemma 2's published context is 8192 tokens; mlx-lm's gemma2 ModelArgs has no field for it.
    Architecture("gemma2", ("gemma2",), embed_scale="sqrt_d", gguf_name="gemma2", final_softcap_key="final_logit_softcapping",
                 default_context=8192, **_GEMMA_POST_NORMS),
    Architecture("gemma3_text", ("gemma3_text",), embed_scale="sqrt_d_bf16", gguf_name="gemma3", **_GEMMA_POST_NORMS),
    Architecture("gemma3", ("gemma3",), decoder_path=("language_model", "model"), text_config_key="text_config",
                 embed_scale="sqrt_d_bf16", gguf_name="gemma3", **_GEMMA_POST_NORMS),
    Architecture("qwen3_moe", ("qwen3_moe",), gguf_name="qwen3moe"),
    # Mixtral's published context is 32768 tokens; mlx-lm's mixtral ModelArgs has no field for it.
    Architecture("mixtral", ("mixtral",), mlp_attr="block_sparse_moe", mlp_out_attr="block_sparse_moe", gguf_name="llama",
                 default_context=32768),
)
_BY_MODEL_TYPE = {t: a for a in ARCHITECTURES for t in a.model_types}
SUPPORTED_MODEL_TYPES = tuple(_BY_MODEL_TYPE)


def architecture_for(model_type: str) -> Architecture:
    """The entry for a ``model_type``; unknown types are refused by name."""
    try:
        return _BY_MODEL_TYPE[model_type]
    except KeyError:
        raise HookPointError(
            f"architecture {model_type!r} is not supported by Symbiont's hooks "
            f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})"
        ) from None


def gguf_architecture(model_type: str) -> str:
    """llama.cpp's name for a ``model_type`` (the model type itself when the family is unknown)."""
    arch = _BY_MODEL_TYPE.get(model_type)
    return arch.gguf_name if arch is not None and arch.gguf_name else model_type


def model_type_of(model: nn.Module) -> str:
    args = getattr(model, "args", None)
    model_type = getattr(args, "model_type", None)
    return str(model_type) if model_type else type(model).__module__.rsplit(".", 1)[-1]


def architecture_of(model: nn.Module) -> Architecture:
    return architecture_for(model_type_of(model))


@dataclass(frozen=True)
class ModelDims:
    """One model's widths and the constants of its forward pass."""

    architecture: str
    """The config's ``model_type`` (e.g. ``mistral``, ``gemma3``)."""
    d_model: int
    """Residual stream width."""
    n_layers: int
    """Number of decoder blocks."""
    n_heads: int
    """Query heads per block."""
    n_kv_heads: int
    """Key/value heads per block (fewer under grouped-query attention)."""
    head_dim: int
    """Width of one attention head; ``attn_z`` is ``n_heads * head_dim`` wide."""
    d_mlp: int
    """MLP hidden width (``intermediate_size``): the width of ``mlp_hidden``."""
    vocab_size: int
    """Rows of the token embedding / columns of the logits."""
    context_length: int | None
    """Longest context the model was trained for, if known."""
    embed_scale: float
    """Factor between ``embed`` and ``resid_pre.0`` (1 for most families, sqrt(d) for Gemma)."""
    final_logit_softcap: float | None
    """``c`` of the final ``c·tanh(logits / c)``, or None."""
    sliding_window: int | None = None
    """Window of the local-attention layers, when some layers attend locally."""
    global_every: int = 1
    """Every ``global_every``-th layer attends globally; the others use ``sliding_window``."""



def _embed_scale(arch: Architecture, d_model: int) -> float:
    if arch.embed_scale == "sqrt_d":
        return math.sqrt(d_model)
    if arch.embed_scale == "sqrt_d_bf16":
        return float(mx.array(math.sqrt(d_model), mx.bfloat16).astype(mx.float32).item())
    return 1.0


def _text_args(arch: Architecture, args: Any) -> Any:
    """The text model's ModelArgs (a multimodal wrapper keeps them as a dict)."""
    if arch.text_config_key is None:
        return args
    from mlx_lm.utils import _get_classes

    text = dict(getattr(args, arch.text_config_key))
    _, args_cls = _get_classes(text)
    return args_cls.from_dict(text)


def _dims(model_type: str, args: Any, config: dict | None = None) -> ModelDims:
    arch = architecture_for(model_type)
    text = _text_args(arch, args)
    get = lambda *names, default=None: next(  # noqa: E731
        (getattr(text, n) for n in names if getattr(text, n, None) is not None), default
    )
    d_model = int(get("hidden_size"))
    n_heads = int(get("num_attention_heads"))
    raw = (config or {}).get(arch.text_config_key, config) if arch.text_config_key else config
    context = get("max_position_embeddings") or (raw or {}).get("max_position_embeddings") or arch.default_context
    softcap = get(arch.final_softcap_key) if arch.final_softcap_key else None
    pattern = get("sliding_window_pattern", default=1)
    return ModelDims(
        architecture=model_type,
        d_model=d_model,
        n_layers=int(get("num_hidden_layers")),
        n_heads=n_heads,
        n_kv_heads=int(get("num_key_value_heads", default=n_heads)),
        head_dim=int(get("head_dim", default=d_model // n_heads)),
        d_mlp=int(get("intermediate_size")),
        vocab_size=int(get("vocab_size", default=getattr(args, "vocab_size", 0))),
        context_length=int(context) if context else None,
        embed_scale=_embed_scale(arch, d_model),
        final_logit_softcap=float(softcap) if softcap else None,
        sliding_window=int(get("sliding_window")) if pattern > 1 and get("sliding_window") else None,
        global_every=int(pattern),
    )


def dims_of(model: nn.Module) -> ModelDims:
    """Widths of a loaded (or freshly built) mlx-lm model, from its ``args``."""
    return _dims(model_type_of(model), model.args)


def dims_from_config(config: dict) -> ModelDims:
    """Widths from a ``config.json`` dict, before any weight is read."""
    from mlx_lm.utils import _get_classes

    from .config_check import config_problems

    model_type = str(config.get("model_type"))
    architecture_for(model_type)  # refuses an unsupported family by name
    problems = config_problems(config)
    if problems:
        raise HookPointError("; ".join(problems))
    try:
        _, args_cls = _get_classes(dict(config))
        args = args_cls.from_dict(dict(config))
    except (ValueError, TypeError, KeyError) as exc:
        raise HookPointError(f"config for {model_type!r} is incomplete ({type(exc).__name__}: {exc})") from exc
    return _dims(model_type, args, config)


def describe(dims: ModelDims) -> list[str]:
    """Human-readable lines: the family entry and the widths of every point kind (``models info``)."""
    arch = architecture_for(dims.architecture)
    attn = arch.attn_out_attr if arch.attn_out_attr == arch.attn_attr else f"{arch.attn_out_attr} (after {arch.attn_attr})"
    mlp = arch.mlp_out_attr if arch.mlp_out_attr == arch.mlp_attr else f"{arch.mlp_out_attr} (after {arch.mlp_attr})"
    local = (f", layers attend locally ({dims.sliding_window} tokens) except every {dims.global_every}-th"
             if dims.sliding_window else "")
    return [
        f"architecture: {dims.architecture} (family {arch.name}, llama.cpp {arch.gguf_name or '-'}), "
        f"decoder at {'.'.join(arch.decoder_path)}",
        f"widths: D={dims.d_model}, {dims.n_layers} layers, {dims.n_heads} heads × {dims.head_dim} "
        f"({dims.n_kv_heads} KV heads), d_mlp={dims.d_mlp}, vocab {dims.vocab_size}",
        f"context: {dims.context_length or 'unknown'} tokens{local}",
        f"embed → resid_pre.0: × {dims.embed_scale:g}; final logits: "
        + (f"{dims.final_logit_softcap:g}·tanh(x/{dims.final_logit_softcap:g})" if dims.final_logit_softcap else "as is"),
        f"points per block: resid_pre/resid_post/attn_out/mlp_out [D={dims.d_model}], "
        f"attn_z [H·Dh={dims.n_heads * dims.head_dim}], mlp_hidden [d_mlp={dims.d_mlp}]"
        + (" (dense layers only)" if arch.mlp_attr == "block_sparse_moe" or dims.architecture.endswith("_moe") else ""),
        f"attn_out read at {attn}, mlp_out at {mlp}",
    ]
