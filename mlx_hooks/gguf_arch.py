"""Which GGUF architectures we convert, and how each maps onto an mlx-lm model class.

llama.cpp's ``convert_hf_to_gguf.py`` renames every tensor and changes a few on the
way in; a :class:`Family` records what must be undone to get back the Hugging Face
layout that ``mlx_lm/models/<model_type>.py`` loads: the tensor names, llama's Q/K
row permutation, Gemma's ``w + 1`` norm weights. :func:`hf_config` reads the header
into that family's ``config.json`` and refuses, naming the file, anything the
mlx-lm class would compute differently (rope scaling it lacks, partial rotary,
mixture-of-experts, missing or extra tensors), before any tensor is touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import GGUFError

_MISSING: Any = object()


@dataclass(frozen=True)
class Metadata:
    """A GGUF header's key/value pairs, read with errors that name the file."""

    path: Path
    """The GGUF file (for error messages)."""
    reader: Any = field(repr=False)
    """The open ``gguf.GGUFReader``."""
    arch: str = ""
    """``general.architecture``: the prefix of the model's own keys."""

    def get(self, key: str, default: Any = _MISSING) -> Any:
        f = self.reader.fields.get(key)
        if f is None:
            if default is _MISSING:
                raise GGUFError(f"{self.path}: metadata key {key!r} is missing")
            return default
        try:
            return f.contents()
        except Exception as e:  # bad UTF-8, truncated array, ...
            raise GGUFError(f"{self.path}: metadata key {key!r} is unreadable ({e})") from e

    def number(self, key: str, default: Any = _MISSING, kind: type = int) -> Any:
        """``{arch}.{key}`` as a single number (per-layer arrays are refused)."""
        value = self.get(f"{self.arch}.{key}", default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            what = "per-layer values" if isinstance(value, list) else f"a {type(value).__name__}"
            raise GGUFError(f"{self.path}: {self.arch}.{key} holds {what}; a single number is supported")
        return kind(value)

    def positive(self, key: str, default: Any = _MISSING, kind: type = int) -> Any:
        """:meth:`number`, refused unless finite and above 0 (a head count of 0 divided by zero later)."""
        value = self.number(key, default, kind)
        if not (math.isfinite(value) and value > 0):
            raise GGUFError(f"{self.path}: {self.arch}.{key} is {value}; it must be a number above 0")
        return value

    def refuse(self, reason: str) -> GGUFError:
        return GGUFError(f"{self.path}: {reason}")


_LINEARS = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_LLAMA_LAYER = {**_LINEARS, "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
_QK_NORMS = {"attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"}
# Gemma 2/3 sandwich each sub-layer between two norms; llama.cpp's ffn_norm is the pre-MLP one.
_GEMMA_LAYER = {
    **_LINEARS, "attn_norm": "input_layernorm", "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm", "post_ffw_norm": "post_feedforward_layernorm",
}
# Phi-3 keeps Q/K/V and gate/up fused in Hugging Face and in mlx-lm alike (ffn_up holds gate then up).
_PHI3_LAYER = {
    "attn_qkv": "self_attn.qkv_proj", "attn_output": "self_attn.o_proj", "ffn_up": "mlp.gate_up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}
_TOP_LEVEL = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


@dataclass(frozen=True)
class Family:
    """How one GGUF ``general.architecture`` maps onto an mlx-lm model class."""

    gguf_arch: str
    """``general.architecture`` value."""
    model_type: str
    """``config.json`` ``model_type`` of the converted folder (picks the mlx-lm class)."""
    hf_class: str
    """``architectures[0]`` of the converted ``config.json``."""
    layer_names: dict[str, str]
    """GGUF block tensor -> parameter path inside ``model.layers.N`` (all required)."""
    bias_groups: tuple[frozenset[str], ...] = ()
    """Sets of block tensors that may carry a ``.bias``: all of a set or none."""
    required_biases: frozenset[str] = frozenset()
    """Block tensors whose ``.bias`` the mlx-lm class always has (Qwen2's q/k/v)."""
    permute_qk: bool = False
    """llama.cpp permutes Q/K rows for its interleaved rotary (llama/mistral only; the
    NEOX-rope families - Qwen, Gemma, Phi-3 - are stored as in Hugging Face)."""
    norm_offset: float = 0.0
    """Added to every norm weight by llama.cpp (Gemma's RMSNorm scales by ``1 + w``)."""
    may_untie: bool = True
    """Whether the mlx-lm class can hold a separate ``lm_head`` (Gemma 2's cannot)."""
    extra: Callable[[Metadata, dict, dict], None] | None = None
    """Adds the family's own config keys (softcaps, windows, rope) or refuses."""

    def mlx_name(self, gguf_name: str) -> str | None:
        """The mlx-lm parameter path for a GGUF tensor name (None when not a parameter)."""
        base, _, suffix = gguf_name.rpartition(".")
        if base in _TOP_LEVEL and suffix == "weight":
            return f"{_TOP_LEVEL[base]}.weight"
        parts = base.split(".")
        if len(parts) != 3 or parts[0] != "blk" or not parts[1].isdigit() or parts[2] not in self.layer_names:
            return None
        allowed = {"weight"} | ({"bias"} if any(parts[2] in g for g in self.bias_groups) else set())
        return f"model.layers.{parts[1]}.{self.layer_names[parts[2]]}.{suffix}" if suffix in allowed else None


def _gemma_attention_scalar(meta: Metadata, config: dict, n_layers_27b: int) -> int:
    # The scalar is not in GGUF files; llama.cpp picks hidden/heads for the 27B models
    # (identified by their depth) and head_dim for the others, as Google's configs do.
    # An int, as transformers' Gemma configs insist.
    if config["num_hidden_layers"] == n_layers_27b:
        return config["hidden_size"] // config["num_attention_heads"]
    return config["head_dim"]


def _qwen2(meta: Metadata, tensors: dict, config: dict) -> None:
    if config["head_dim"] * config["num_attention_heads"] != config["hidden_size"]:
        raise meta.refuse("qwen2 with head_dim * heads != hidden size is not supported by mlx-lm's qwen2")


def _gemma2(meta: Metadata, tensors: dict, config: dict) -> None:
    config["query_pre_attn_scalar"] = _gemma_attention_scalar(meta, config, 46)
    # llama.cpp's defaults when the keys are absent, as in Google's config.
    for key, default in (("attn_logit_softcapping", 50.0), ("final_logit_softcapping", 30.0)):
        if (cap := meta.number(key, default, float)) <= 0:  # mlx-lm's gemma2 always caps
            raise meta.refuse(f"gemma2 without {key} is not supported")
        config[key] = cap
    # mlx-lm's gemma2 attends globally on every layer (as it does for Hugging Face
    # checkpoints); recorded for the hooks' memory estimate and the reader.
    config["sliding_window"] = meta.number("attention.sliding_window", 4096)
    config["hidden_activation"] = "gelu_pytorch_tanh"


def _sliding_pattern(meta: Metadata, n_layers: int) -> int:
    value = meta.get(f"{meta.arch}.attention.sliding_window_pattern", 6)  # llama.cpp's fixed value for gemma3
    if isinstance(value, list):  # one flag per layer: true = local (sliding) attention
        for period in range(1, n_layers + 1):
            if [bool(v) for v in value] == [(i + 1) % period != 0 for i in range(len(value))]:
                return period
        raise meta.refuse("the sliding-window layer pattern is not 'every N-th layer global'")
    return int(value)


def _gemma3(meta: Metadata, tensors: dict, config: dict) -> None:
    config["query_pre_attn_scalar"] = _gemma_attention_scalar(meta, config, 62)
    if meta.number("final_logit_softcapping", 0.0, float):
        raise meta.refuse("gemma3 with a final logit soft cap is not supported (mlx-lm's gemma3_text has none)")
    config["sliding_window"] = meta.number("attention.sliding_window")
    config["sliding_window_pattern"] = _sliding_pattern(meta, config["num_hidden_layers"])
    # Local layers rotate with base 10000 and no scaling (fixed in llama.cpp and in Google's config).
    config["rope_local_base_freq"] = meta.number("rope.freq_base_swa", 10000.0, float)
    config["hidden_activation"] = "gelu_pytorch_tanh"


def _phi3(meta: Metadata, tensors: dict, config: dict) -> None:
    if config["head_dim"] * config["num_attention_heads"] != config["hidden_size"]:
        raise meta.refuse("phi3 with head_dim * heads != hidden size is not supported by mlx-lm's phi3")
    window = meta.number("attention.sliding_window", 0)
    if window:  # recorded as in Hugging Face's config; mlx-lm's phi3 attends globally
        config["sliding_window"] = window
    long, short = tensors.get("rope_factors_long.weight"), tensors.get("rope_factors_short.weight")
    if (long is None) != (short is None):
        raise meta.refuse("phi3 has only one of rope_factors_long / rope_factors_short")
    if long is None:
        return
    if config.get("rope_scaling"):
        raise meta.refuse("phi3 has both rope scaling metadata and LongRoPE factors")
    original = meta.number("rope.scaling.original_context_length")
    context = config["max_position_embeddings"]
    # mlx-lm's SuScaledRoPE derives the attention factor itself; accept only the usual one.
    expected = math.sqrt(1 + math.log(context / original) / math.log(original)) if context > original else 1.0
    if abs(meta.number("rope.scaling.attn_factor", expected, float) - expected) > 1e-4:
        raise meta.refuse("phi3 LongRoPE attention factor differs from the standard one mlx-lm computes")
    factors = {k: _float_vector(meta, t) for k, t in (("long_factor", long), ("short_factor", short))}
    rope_dim = int(config["head_dim"] * config.get("partial_rotary_factor", 1.0))
    if any(len(v) != rope_dim // 2 for v in factors.values()):
        raise meta.refuse(f"phi3 LongRoPE factors do not have {rope_dim // 2} entries")
    config["rope_scaling"] = {"type": "longrope", "rope_type": "longrope", **factors}
    config["original_max_position_embeddings"] = original


def _float_vector(meta: Metadata, tensor) -> list[float]:
    if tensor.tensor_type.name != "F32" or len(tensor.shape) != 1:
        raise meta.refuse(f"{tensor.name} is not a float32 vector")
    return [float(x) for x in np.asarray(tensor.data, dtype=np.float32)]


def _llama3_scaling(meta: Metadata, tensor, config: dict) -> dict:
    """Recover Llama 3.1-style rope scaling from the per-frequency factors llama.cpp stores.

    The file keeps only the factors (``rope_freqs``), not the parameters behind them;
    we accept the file when the published parameters (low 1, high 4, original 8192,
    factor = the largest entry) reproduce every factor, and refuse it otherwise.
    """
    stored = np.asarray(_float_vector(meta, tensor), dtype=np.float64)
    dims = config["head_dim"]
    if len(stored) != dims // 2:
        raise meta.refuse(f"rope_freqs has {len(stored)} entries, expected {dims // 2}")
    factor, low, high, original = float(stored.max()), 1.0, 4.0, 8192
    wavelen = 2 * math.pi * config["rope_theta"] ** (np.arange(0, dims, 2) / dims)
    smooth = (original / wavelen - low) / (high - low)
    expected = np.where(wavelen < original / high, 1.0,
                        np.where(wavelen > original / low, factor, 1 / ((1 - smooth) / factor + smooth)))
    if not np.allclose(stored, expected, rtol=1e-4, atol=1e-6):
        raise meta.refuse("rope_freqs does not match Llama 3 rope scaling (low 1, high 4, original 8192)")
    return {"rope_type": "llama3", "factor": factor, "low_freq_factor": low, "high_freq_factor": high,
            "original_max_position_embeddings": original}


FAMILIES = {
    f.gguf_arch: f for f in (
        Family("llama", "llama", "LlamaForCausalLM", _LLAMA_LAYER, permute_qk=True,
               bias_groups=(frozenset({"attn_q", "attn_k", "attn_v", "attn_output"}),
                            frozenset({"ffn_gate", "ffn_up", "ffn_down"}))),
        Family("qwen2", "qwen2", "Qwen2ForCausalLM", _LLAMA_LAYER,
               bias_groups=(frozenset({"attn_q", "attn_k", "attn_v"}),),
               required_biases=frozenset({"attn_q", "attn_k", "attn_v"}), extra=_qwen2),
        Family("qwen3", "qwen3", "Qwen3ForCausalLM", {**_LLAMA_LAYER, **_QK_NORMS}),
        Family("gemma2", "gemma2", "Gemma2ForCausalLM", _GEMMA_LAYER, norm_offset=1.0, may_untie=False,
               extra=_gemma2),
        Family("gemma3", "gemma3_text", "Gemma3ForCausalLM", {**_GEMMA_LAYER, **_QK_NORMS}, norm_offset=1.0,
               extra=_gemma3),
        Family("phi3", "phi3", "Phi3ForCausalLM", _PHI3_LAYER, extra=_phi3),
    )
}
SUPPORTED_ARCHITECTURES = tuple(FAMILIES)
# Tensors that become config entries rather than parameters.
_CONFIG_TENSORS = {"llama": {"rope_freqs.weight"}, "phi3": {"rope_factors_long.weight", "rope_factors_short.weight"}}
# Rope scaling types the mlx-lm class of each family implements from a config entry.
_LINEAR_ROPE = {"llama", "qwen2", "qwen3", "gemma3", "phi3"}


def family_for(meta: Metadata) -> Family:
    if meta.arch not in FAMILIES:
        supported = ", ".join(SUPPORTED_ARCHITECTURES)
        raise meta.refuse(f"architecture {meta.arch!r} is not supported (supported: {supported})")
    return FAMILIES[meta.arch]


def check_tensor_names(meta: Metadata, family: Family, tensors: dict, n_layers: int) -> None:
    """Every tensor is a parameter we place (or a config entry), and every parameter is there."""
    for name in tensors:
        if family.mlx_name(name) is None and name not in _CONFIG_TENSORS.get(family.gguf_arch, ()):
            hint = " (llama 3.1-style rope scaling is only read for llama)" if name.startswith("rope_") else ""
            raise meta.refuse(f"tensor {name!r}{hint} is not supported for {family.gguf_arch}")
        if name.startswith("blk.") and int(name.split(".")[1]) >= n_layers:
            raise meta.refuse(f"tensor {name!r} lies beyond block_count={n_layers}")
    needed = ["token_embd.weight", "output_norm.weight"]
    needed += [f"blk.{i}.{g}.weight" for i in range(n_layers) for g in family.layer_names]
    needed += [f"blk.{i}.{g}.bias" for i in range(n_layers) for g in sorted(family.required_biases)]
    for group in family.bias_groups:  # a bias on one of a group means a bias on all of it
        if any(f"blk.{i}.{g}.bias" in tensors for i in range(n_layers) for g in group):
            needed += [f"blk.{i}.{g}.bias" for i in range(n_layers) for g in sorted(group)]
    if missing := [n for n in needed if n not in tensors]:
        raise meta.refuse(f"tensor {missing[0]!r} is missing ({len(missing)} missing in all)")
    if "output.weight" in tensors and not family.may_untie:
        raise meta.refuse(f"{family.gguf_arch} with a separate output.weight is not supported (mlx-lm ties it)")


def hf_config(meta: Metadata, tensors: dict) -> tuple[Family, dict]:
    """The Hugging Face ``config.json`` for this file's model, or a :class:`GGUFError`."""
    family = family_for(meta)
    if meta.number("expert_count", 0):
        raise meta.refuse(f"mixture-of-experts models ({meta.arch}.expert_count) are not supported")
    n_layers, hidden = meta.positive("block_count"), meta.positive("embedding_length")
    check_tensor_names(meta, family, tensors, n_layers)
    embed = tensors["token_embd.weight"]
    if int(embed.shape[0]) != hidden:  # GGUF lists dims innermost first; checked before anything derives from it
        raise meta.refuse(f"token_embd.weight is {int(embed.shape[0])} wide, but {meta.arch}.embedding_length says "
                          f"{hidden}")
    heads = meta.positive("attention.head_count")
    kv_heads = meta.positive("attention.head_count_kv", heads)
    if heads % kv_heads:
        raise meta.refuse(f"{meta.arch}.attention.head_count {heads} is not a multiple of head_count_kv {kv_heads}")
    if meta.get(f"{meta.arch}.attention.key_length", None) is None and hidden % heads:
        raise meta.refuse(f"{meta.arch}.embedding_length {hidden} does not divide into {heads} heads "
                          "(and attention.key_length is not given)")
    head_dim = meta.positive("attention.key_length", hidden // heads)
    if meta.number("attention.value_length", head_dim) != head_dim:
        raise meta.refuse("different key and value head widths are not supported")
    q_rows = int(tensors["blk.0.attn_q.weight"].shape[1]) if "blk.0.attn_q.weight" in tensors else heads * head_dim
    if q_rows != heads * head_dim:
        raise meta.refuse(f"blk.0.attn_q.weight has {q_rows} rows, but {heads} heads of {head_dim} make "
                          f"{heads * head_dim} ({meta.arch}.attention.head_count or key_length is wrong)")
    config: dict[str, Any] = {
        "architectures": [family.hf_class],
        "model_type": family.model_type,
        "hidden_size": hidden,
        "num_hidden_layers": n_layers,
        "intermediate_size": meta.positive("feed_forward_length"),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "vocab_size": int(embed.shape[1]),
        "max_position_embeddings": meta.positive("context_length", 2048),
        "rms_norm_eps": meta.positive("attention.layer_norm_rms_epsilon", 1e-5, float),
        "rope_theta": meta.positive("rope.freq_base", 10000.0, float),
        "tie_word_embeddings": "output.weight" not in tensors,
    }
    rope_dim = meta.number("rope.dimension_count", head_dim)
    if rope_dim != head_dim:
        if family.gguf_arch != "phi3" or not 0 < rope_dim < head_dim:
            raise meta.refuse(f"partial rotary embeddings ({rope_dim} of {head_dim} dims) are not supported "
                              f"for {family.gguf_arch}")
        config["partial_rotary_factor"] = rope_dim / head_dim
        if int(head_dim * config["partial_rotary_factor"]) != rope_dim:  # how mlx-lm's phi3 recovers it
            raise meta.refuse(f"partial rotary embeddings of {rope_dim} of {head_dim} dims cannot be expressed")
    if family.permute_qk:
        # Q/K rows are un-permuted on conversion, so this is a Hugging-Face-layout llama.
        config["rope_traditional"] = False
        config["attention_bias"] = "blk.0.attn_q.bias" in tensors
        config["mlp_bias"] = "blk.0.ffn_up.bias" in tensors
    kind = meta.get(f"{meta.arch}.rope.scaling.type", "none")
    if "rope_freqs.weight" in tensors:
        if kind != "none":
            raise meta.refuse(f"rope_freqs together with rope scaling {kind!r} is not supported")
        config["rope_scaling"] = _llama3_scaling(meta, tensors["rope_freqs.weight"], config)
    elif kind == "linear" and family.gguf_arch in _LINEAR_ROPE:
        factor = meta.number("rope.scaling.factor", kind=float)
        if factor != 1.0:
            config["rope_scaling"] = {"type": "linear", "rope_type": "linear", "factor": factor}
    elif kind != "none":
        raise meta.refuse(f"rope scaling {kind!r} is not supported for {family.gguf_arch}")
    if family.extra is not None:
        family.extra(meta, tensors, config)
    return family, config
