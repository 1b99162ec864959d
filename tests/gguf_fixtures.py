"""Write tiny mlx-lm models as GGUF files the way llama.cpp's convert_hf_to_gguf.py does.

The forward direction of what ``mlx_hooks.gguf_arch`` undoes, written independently
from llama.cpp's converter: tensor names, the Q/K row permutation (llama/mistral
only), Gemma's norm weights stored as ``w + 1``, Phi-3's fused tensors as they are,
and each family's metadata keys. Also returns the reference weights a correct
conversion must give back (the stored tensors, dequantized with gguf's own code,
with the transforms undone).
"""

from __future__ import annotations

from pathlib import Path

import gguf
import mlx.core as mx
import numpy as np
from gguf import GGMLQuantizationType as Q
from mlx.utils import tree_flatten

GGUF_ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "phi3": "phi3",
             "gemma2": "gemma2", "gemma3_text": "gemma3", "gemma3": "gemma3"}
_NAMES = {
    "embed_tokens": "token_embd", "lm_head": "output", "q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v",
    "o_proj": "attn_output", "qkv_proj": "attn_qkv", "gate_proj": "ffn_gate", "up_proj": "ffn_up",
    "gate_up_proj": "ffn_up", "down_proj": "ffn_down", "input_layernorm": "attn_norm", "q_norm": "attn_q_norm",
    "k_norm": "attn_k_norm", "pre_feedforward_layernorm": "ffn_norm", "post_feedforward_layernorm": "post_ffw_norm",
}


def byte_chars() -> list[str]:
    """GPT-2's byte -> printable character table, indexed by byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


BYTE_VOCAB = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *byte_chars()]  # 259 = tiny_models.VOCAB


def gguf_name(hf_name: str, gemma: bool) -> str:
    """llama.cpp's name for a Hugging Face / mlx-lm parameter path."""
    parts = hf_name.removeprefix("language_model.").split(".")
    if parts[0] == "lm_head":
        return "output.weight"
    if parts[1] != "layers":  # model.embed_tokens.weight / model.norm.weight
        return f"{'output_norm' if parts[1] == 'norm' else _NAMES[parts[1]]}.{parts[-1]}"
    module = parts[-2]
    if module == "post_attention_layernorm":  # Gemma's post-attention norm; elsewhere the pre-MLP one
        role = "post_attention_norm" if gemma else "ffn_norm"
    else:
        role = _NAMES[module]
    return f"blk.{parts[2]}.{role}.{parts[-1]}"


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute (half-split -> interleaved rotary rows)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def inverse_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_model_gguf(path: Path, model, model_type: str, qtype: Q = Q.F32, *, meta=None, drop=(), extra=None,
                     raw=None):
    """Write ``model`` as a GGUF file; returns the reference ``[(mlx name, array)]``.

    ``qtype`` is the type of every 2-D tensor (vectors stay F32, as in llama.cpp);
    ``meta(writer)`` adds or overrides metadata; ``drop`` leaves tensors out;
    ``extra`` is a ``{gguf name: float32 array}`` of tensors to add (rope factors);
    ``raw`` is a ``{gguf name: (uint8 blocks, type)}`` stored instead of the model's
    tensor (as llama.cpp lays it out: Q/K rows already permuted).
    """
    args = model.language_model.args if "language_model" in model else model.args
    arch = GGUF_ARCH[model_type]
    gemma = arch.startswith("gemma")
    hidden, heads = args.hidden_size, args.num_attention_heads
    kv_heads = getattr(args, "num_key_value_heads", None) or heads
    head_dim = getattr(args, "head_dim", None) or hidden // heads
    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(getattr(args, "max_position_embeddings", None) or 256)
    w.add_embedding_length(hidden)
    w.add_block_count(args.num_hidden_layers)
    w.add_feed_forward_length(args.intermediate_size)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(args.rms_norm_eps)
    w.add_rope_freq_base(args.rope_theta)
    if arch in ("qwen3", "gemma2", "gemma3"):
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    if arch in ("llama", "phi3"):
        w.add_rope_dimension_count(int(getattr(args, "partial_rotary_factor", 1.0) * hidden) // heads)
    if arch == "gemma2":
        w.add_attn_logit_softcapping(args.attn_logit_softcapping)
        w.add_final_logit_softcapping(args.final_logit_softcapping)
        w.add_sliding_window(4096)
    if arch == "gemma3":
        w.add_sliding_window(args.sliding_window)
        if args.sliding_window_pattern != 6:  # llama.cpp assumes 6; newer files carry one flag per layer
            w.add_sliding_window_pattern([(i + 1) % args.sliding_window_pattern != 0
                                          for i in range(args.num_hidden_layers)])
    if arch == "phi3":
        w.add_sliding_window(0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(BYTE_VOCAB)
    w.add_token_merges([])
    w.add_token_types([3 if t.startswith("<|") else 1 for t in BYTE_VOCAB])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    if meta is not None:
        meta(w)

    reference = []
    for name, value in tree_flatten(model.parameters()):
        gname = gguf_name(name, gemma)
        if gname in drop:
            continue
        a = np.array(value, dtype=np.float32)
        role = gname.split(".")[-2]
        permute = arch == "llama" and role in ("attn_q", "attn_k")
        n = heads if role == "attn_q" else kv_heads
        if permute:
            a = llama_cpp_permute(a, n)
        if gemma and role.endswith("norm"):
            a = a + 1
        t = qtype if a.ndim == 2 else Q.F32
        stored = gguf.quants.quantize(a, t) if gname not in (raw or {}) else raw[gname][0]
        t = raw[gname][1] if gname in (raw or {}) else t
        w.add_tensor(gname, stored, raw_dtype=None if t in (Q.F32, Q.F16) else t)
        back = gguf.quants.dequantize(stored, t)
        if permute:
            back = inverse_permute(back, n)
        if gemma and role.endswith("norm"):
            back = back - 1
        reference.append((name, mx.array(back)))
    for gname, a in (extra or {}).items():
        w.add_tensor(gname, np.asarray(a, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return reference
