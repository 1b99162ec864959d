"""Whether a model fits a machine, and how fast it could decode, from its config alone.

The model is built from the config with mlx-lm's own classes but never evaluated: MLX
arrays are lazy, so a 70B model's parameters have shapes and dtypes (hence exact
counts and bytes, after ``nn.quantize`` at the requested bits) without a byte of
weights being allocated. Those figures go through the app's own estimate
(:func:`~mlx_hooks.memory.estimate_memory`: KV cache, activation cache at each
captured point's width) and its budget rule (:data:`~mlx_hooks.memory.RAM_SHARE` of
the machine's memory), plus an SAE's weights.

Decode time is a bandwidth bound: at batch 1 every weight is read once per token (the
embedding table only for a tied unembedding; one row otherwise), with the whole KV
cache at the given context and a meter's SAE encoder. Bytes ÷ the chip's memory
bandwidth is the least time a token can take; real decoding reaches a fraction of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .architectures import ModelDims, dims_from_config
from .config_presets import CHIP_BANDWIDTH_GBS
from .memory import GIB, RAM_SHARE, MemoryEstimate, ModelShape, estimate_memory

DEFAULT_CHIP = "m2-max"
DEFAULT_MACHINE_GIB = 96.0
SAE_DTYPE_BYTES = 4
"""SAEs are kept in float32 (``SAEConfig.dtype``'s default)."""


@dataclass(frozen=True)
class PaperModel:
    """A model's size as mlx-lm would build it, without its weights."""

    name: str
    dims: ModelDims
    n_params: int
    """Parameters (quantized weights counted as the values they encode)."""
    weights_bytes: int
    """Bytes of all parameters at the chosen precision (packed weights, scales and biases)."""
    read_bytes_per_token: int
    """Weight bytes one decode step reads (the embedding table only when it is also the unembedding)."""
    bits: int | None
    """Quantization bits, or None for float weights."""
    dtype: str
    """Float dtype of the activations and of the non-quantized parameters."""

    def shape(self) -> ModelShape:
        d = self.dims
        return ModelShape(self.n_params, self.weights_bytes, d.n_layers, d.d_model, d.n_kv_heads, d.head_dim,
                          quantized=self.bits is not None, stored_dtype=self.dtype, sliding_window=d.sliding_window,
                          global_every=d.global_every, d_mlp=d.d_mlp, attn_z_width=d.n_heads * d.head_dim)


def paper_model(name: str, config: dict, bits: int | None = 4, group_size: int = 64,
                dtype: str = "bfloat16") -> PaperModel:
    """Build ``config``'s model lazily and measure it (see the module docstring)."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten
    from mlx_lm.utils import _get_classes

    dims = dims_from_config(config)  # refuses unsupported families and bad values by key
    model_cls, args_cls = _get_classes(dict(config))
    model = model_cls(args_cls.from_dict(dict(config)))
    model.set_dtype(getattr(mx, dtype))
    n_params = sum(v.size for _, v in tree_flatten(model.parameters()))
    if bits is not None:
        # mlx-lm's rule: every layer with a quantized form whose input width the group divides.
        nn.quantize(model, group_size=group_size, bits=bits,
                    class_predicate=lambda _, m: hasattr(m, "to_quantized") and m.weight.shape[-1] % group_size == 0)
    params = tree_flatten(model.parameters())
    weights = sum(v.nbytes for _, v in params)
    embed = sum(v.nbytes for k, v in params if ".embed_tokens." in f".{k}")
    tied = not any(k.startswith("lm_head.") or ".lm_head." in k for k, _ in params)
    read = weights if tied else weights - embed
    return PaperModel(name, dims, n_params, weights, read, bits, dtype)


@dataclass(frozen=True)
class ScaleEstimate:
    """One configuration on one machine: memory by part, the verdict, a decode-time bound."""

    model: PaperModel
    memory: MemoryEstimate
    capture: tuple[str, ...]
    """The captured points (their widths set the activation cache)."""
    sae_width: int
    sae_point: str
    sae_bytes: int
    budget_bytes: int
    budget_source: str
    chip: str
    bandwidth_gbs: float

    @property
    def total_bytes(self) -> int:
        return self.memory.total_bytes + self.sae_bytes

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.budget_bytes

    @property
    def read_bytes_per_token(self) -> int:
        """Weights + the whole KV cache at the context + the SAE but ``W_dec`` (a meter only encodes)."""
        encoder = self.sae_bytes - self.sae_width * self.model.shape().point_width(self.sae_point) * SAE_DTYPE_BYTES
        return self.model.read_bytes_per_token + self.memory.kv_cache_bytes + (encoder if self.sae_width else 0)

    @property
    def seconds_per_token(self) -> float:
        return self.read_bytes_per_token / (self.bandwidth_gbs * 1e9)


def sae_bytes(d_in: int, d_sae: int) -> int:
    """``W_enc`` and ``W_dec`` (``d_in × d_sae`` each), ``b_enc``, ``threshold`` and ``b_dec``, in float32."""
    return (2 * d_in * d_sae + 2 * d_sae + d_in) * SAE_DTYPE_BYTES


def estimate_scale(model: PaperModel, context_tokens: int = 8192, capture_points: int = 0,
                   capture_kind: str = "resid_post", sae_width: int = 0, sae_kind: str = "resid_post",
                   machine_gib: float = DEFAULT_MACHINE_GIB, budget_gib: float | None = None,
                   chip: str = DEFAULT_CHIP, bandwidth_gbs: float | None = None) -> ScaleEstimate:
    """``capture_points`` points of ``capture_kind`` (layers in turn), an SAE of ``sae_width``
    latents at a ``sae_kind`` point, on a Mac with ``machine_gib`` of memory (budget: the app's
    share of it, unless ``budget_gib``) and ``chip``'s bandwidth (unless ``bandwidth_gbs``)."""
    if chip not in CHIP_BANDWIDTH_GBS and bandwidth_gbs is None:
        raise ValueError(f"unknown chip {chip!r} (known: {', '.join(CHIP_BANDWIDTH_GBS)}); or give the bandwidth")
    n_layers = model.dims.n_layers
    capture = tuple(f"{capture_kind}.{i % n_layers}" for i in range(capture_points))
    shape = model.shape()
    memory = estimate_memory(shape, "stored", context_tokens, capture)
    sae_point = f"{sae_kind}.{n_layers // 2}"
    sae = sae_bytes(shape.point_width(sae_point), sae_width) if sae_width else 0
    if budget_gib is not None:
        budget, source = int(budget_gib * GIB), f"given: {budget_gib:g} GiB"
    else:
        budget = int(machine_gib * GIB * RAM_SHARE)
        source = f"{RAM_SHARE:.0%} of a {machine_gib:g} GiB Mac's memory"
    bandwidth = bandwidth_gbs if bandwidth_gbs is not None else CHIP_BANDWIDTH_GBS[chip]
    return ScaleEstimate(model, memory, capture, sae_width, sae_point, sae, budget, source,
                         chip if bandwidth_gbs is None else "given", bandwidth)


def format_scale(est: ScaleEstimate, published_params: float | None = None) -> str:
    """The table ``symbiont models estimate`` prints for a preset or a config.json."""
    m, d, mem = est.model, est.model.dims, est.memory
    precision = f"{m.bits}-bit weights (group 64), {m.dtype} activations" if m.bits else f"{m.dtype} weights"
    published = f" (published {published_params / 1e9:.3g} B)" if published_params else ""
    width_of = m.shape().point_width
    kinds = sorted({p.split(".")[0] for p in est.capture})
    widths = ", ".join(f"{k} {width_of(k)} wide" for k in kinds)
    rows = [
        ("weights", mem.weights_bytes, precision),
        ("KV cache", mem.kv_cache_bytes,
         f"{mem.context_tokens} tokens × {d.n_layers} layers × 2 × {d.n_kv_heads} KV heads × {d.head_dim}"),
        ("activation cache", mem.activation_cache_bytes,
         f"{len(est.capture)} points ({widths}) × {mem.context_tokens} tokens" if est.capture else "no points"),
        ("SAE", est.sae_bytes,
         f"{est.sae_width} latents at {est.sae_point} ({width_of(est.sae_point)} wide), float32"
         if est.sae_width else "none"),
        ("total", est.total_bytes, ""),
        ("budget", est.budget_bytes, est.budget_source),
    ]
    lines = [f"{m.name} ({d.architecture}): {m.n_params / 1e9:.2f} B parameters{published}; D={d.d_model}, "
             f"d_mlp={d.d_mlp}, {d.n_layers} layers, {d.n_heads}/{d.n_kv_heads} heads × {d.head_dim}, "
             f"vocab {d.vocab_size}"]
    lines += [f"  {name:<17} {value / GIB:9.2f} GiB   {note}".rstrip() for name, value, note in rows]
    verdict = "fits" if est.fits else f"does NOT fit (over by {(est.total_bytes - est.budget_bytes) / GIB:.2f} GiB)"
    lines.append(f"  verdict           {verdict}")
    chip = f"{est.chip}, " if est.chip != "given" else ""
    lines.append(
        f"  decode            ≥ {est.seconds_per_token * 1e3:.1f} ms/token (≤ {1 / est.seconds_per_token:.1f} tok/s): "
        f"{est.read_bytes_per_token / 1e9:.1f} GB read per token at full context ÷ {chip}{est.bandwidth_gbs:g} GB/s "
        "(a bandwidth bound; real decoding reaches a fraction of it)")
    return "\n".join(lines)
