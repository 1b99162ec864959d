"""Llama Scope SAEs (OpenMOSS ``lm-saes``), folded into the plain SAE of :mod:`.model`.

Two published layouts:

- **Llama Scope** (``fnlp/Llama3_1-8B-Base-LX{R,A,M,TC}-{8,32}x``): a folder
  ``Llama3_1-8B-Base-L{i}{R,A,M,TC}-{8,32}x/`` with ``hyperparams.json`` and
  ``checkpoints/final.safetensors`` (``encoder.weight [d_sae, d_model]``, ``encoder.bias``,
  ``decoder.weight [d_model, d_sae]``, ``decoder.bias``; bfloat16). ``R`` reads
  ``hook_resid_post``, ``A`` ``hook_attn_out``, ``M`` ``hook_mlp_out``; ``TC`` are
  transcoders (``ln2.hook_normalized`` -> ``hook_mlp_out``), refused.
- **Llama Scope R1 Distill** (``fnlp/Llama-Scope-R1-Distill``, ``…/L{i}R/``) and other
  later lm-saes checkpoints: ``config.json`` + ``sae_weights.safetensors``, the same
  tensors plus a learnt per-latent ``log_jumprelu_threshold`` and, when saved, the
  dataset norms as ``dataset_average_activation_norm.<hook point>`` scalars.

Both were trained on inputs rescaled to norm √d_model on average (``norm_activation:
dataset-wise``: ``s = √d_model / dataset_average_activation_norm``, one factor for the
input, one for the output), with sparsity measured on ``hidden · ‖decoder column‖``
(``sparsity_include_decoder_norm``). The semantics follow lm-saes' own loaders (read, not
copied):

- the scalar ``jump_relu_threshold`` of the first release was fitted *after* lm-saes'
  ``from_config`` rescaled the weights for raw inputs (``standardize_parameters_of_dataset_
  activation_scaling``: ``b_E /= s_in``, ``b_D /= s_out``, ``W_D *= s_in / s_out``; then
  ``transform_to_unit_decoder_norm``) — ``post_process_topk_to_jumprelu_for_inference``
  takes it from that SAE's pre-activations — so it is compared with those;
- a learnt ``log_jumprelu_threshold`` (2025 lm-saes) is compared in training units:
  ``f = h · [h · ‖W_D‖ > exp(log θ)]``, ``h = W_E (s_in·x) + b_E``, ``x̂ = (W_D f + b_D) / s_out``.

Either way the result is the plain JumpReLU (or TopK / ReLU) SAE ``f = act(x·W_enc + b_enc)``,
``x̂ = f·W_dec + b_dec`` on the raw activations, with the decoder norm and the scales folded
into the weights (the pre-encoder decoder bias, if any, into ``b_enc``). SAELens
(``llama_scope_sae_huggingface_loader``, 6.x) gives the same reconstruction when the
decoder columns have unit norm and the two norms are equal (the R/A/M releases); its
latents are then ``s_in`` times these, and it ignores ``sparsity_include_decoder_norm``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import mlx.core as mx

from ..errors import SAELoadError
from .files import read_json, read_safetensors
from .hook_names import point_from_hook_name
from .model import SAEConfig

HYPERPARAMS = "hyperparams.json"
FINAL_WEIGHTS = Path("checkpoints") / "final.safetensors"
LM_SAES_CONFIG = "config.json"
LM_SAES_WEIGHTS = "sae_weights.safetensors"
_FOLDER = re.compile(r"L(\d+)(R|A|M|TC)(?:-\d+x)?$")
_SITE_HOOK = {"R": "hook_resid_post", "A": "hook_attn_out", "M": "hook_mlp_out"}
_ARCHITECTURE = {"jumprelu": "jumprelu", "topk": "topk", "relu": "standard"}


def is_llama_scope_folder(folder: Path) -> bool:
    if (folder / HYPERPARAMS).is_file() and (folder / FINAL_WEIGHTS).is_file():
        return True
    if (folder / LM_SAES_CONFIG).is_file() and (folder / LM_SAES_WEIGHTS).is_file():
        try:
            return "hook_point_in" in read_json(folder / LM_SAES_CONFIG)
        except SAELoadError:
            return False
    return False


def _files(folder: Path) -> tuple[Path, Path]:
    if (folder / HYPERPARAMS).is_file():
        return folder / HYPERPARAMS, folder / FINAL_WEIGHTS
    return folder / LM_SAES_CONFIG, folder / LM_SAES_WEIGHTS


def _refuse_transcoders(cfg: dict, folder: Path, where: Path) -> None:
    named = _FOLDER.search(folder.name)
    hook_in, hook_out = cfg.get("hook_point_in"), cfg.get("hook_point_out")
    if (named and named.group(2) == "TC") or hook_out not in (None, hook_in):
        raise SAELoadError(
            f"{where}: a transcoder (reads {hook_in}, writes {hook_out}), not an autoencoder: "
            "Llama Scope's TC transcoders are not supported"
        )


def _hook_point(cfg: dict, folder: Path, where: Path) -> str:
    hook_in = cfg.get("hook_point_in")
    named = _FOLDER.search(folder.name)
    if not hook_in:
        if named is None:
            raise SAELoadError(f"{where}: missing required field(s) hook_point_in (or pass the hook point)")
        hook_in = f"blocks.{named.group(1)}.{_SITE_HOOK[named.group(2)]}"
    elif named and hook_in != f"blocks.{named.group(1)}.{_SITE_HOOK[named.group(2)]}":
        raise SAELoadError(f"{where}: hook_point_in is {hook_in!r} but the folder {folder.name!r} names another point")
    try:
        return point_from_hook_name(str(hook_in))
    except ValueError as exc:
        raise SAELoadError(f"{where}: {exc}") from exc


def _norm_factors(cfg: dict, raw: dict[str, mx.array], where: Path, weights_path: Path) -> tuple[float, float]:
    """``(s_in, s_out)``: √d_model / the dataset's average activation norm at input and output."""
    mode = cfg.get("norm_activation", "dataset-wise")
    if mode in ("inference", "none"):
        return 1.0, 1.0
    if mode != "dataset-wise":
        raise SAELoadError(
            f"{where}: norm_activation {mode!r} is not supported (supported: dataset-wise, inference, none): "
            "lm-saes does not undo a per-token or per-batch rescaling when it decodes"
        )
    norms = cfg.get("dataset_average_activation_norm")
    if not isinstance(norms, dict):  # later lm-saes keep them beside the weights, keyed by hook point
        norms = {key.split(".", 1)[1]: float(value.item()) for key, value in raw.items()
                 if key.startswith("dataset_average_activation_norm.")}
        hook_in, hook_out = cfg.get("hook_point_in"), cfg.get("hook_point_out") or cfg.get("hook_point_in")
        norms = {"in": norms.get(hook_in), "out": norms.get(hook_out)}
    norm_in, norm_out = norms.get("in"), norms.get("out", norms.get("in"))  # an autoencoder's out is its in
    if not all(isinstance(n, (int, float)) and not isinstance(n, bool) and n > 0 for n in (norm_in, norm_out)):
        raise SAELoadError(
            f"{where}: norm_activation is dataset-wise but no positive dataset_average_activation_norm "
            f"(in/out) was found in it or in {weights_path.name}; the SAE cannot be applied to raw activations"
        )
    root_d = math.sqrt(int(cfg["d_model"]))
    return root_d / float(norm_in), root_d / float(norm_out)


def read_llama_scope(
    folder: Path, hook_point: str | None, dtype: mx.Dtype | None = None
) -> tuple[SAEConfig, dict[str, mx.array], Path]:
    """Config and folded weights of a Llama Scope / lm-saes SAE folder, and the weights file.

    The folding is done in float32 and the result stored in ``dtype`` (default: as published).
    """
    config_path, weights_path = _files(folder)
    cfg = read_json(config_path)
    missing = [n for n in ("d_model",) if cfg.get(n) is None]
    if missing:
        raise SAELoadError(f"{config_path}: missing required field(s) {', '.join(missing)}")
    if cfg.get("sae_type", "sae") != "sae":
        raise SAELoadError(f"{config_path}: sae_type {cfg['sae_type']!r} is not supported (only 'sae')")
    if cfg.get("use_glu_encoder"):
        raise SAELoadError(f"{config_path}: GLU encoders (use_glu_encoder: true) are not supported")
    act_fn = str(cfg.get("act_fn", "relu")).lower()
    if act_fn not in _ARCHITECTURE:
        raise SAELoadError(f"{config_path}: unknown act_fn {act_fn!r} (supported: jumprelu, topk, relu)")
    _refuse_transcoders(cfg, folder, config_path)
    point = hook_point or _hook_point(cfg, folder, config_path)
    raw = read_safetensors(weights_path)
    need = ["encoder.weight", "encoder.bias", "decoder.weight"]
    need += ["decoder.bias"] if cfg.get("use_decoder_bias", True) else []
    if absent := [n for n in need if n not in raw]:
        raise SAELoadError(f"{weights_path}: missing tensor(s) {', '.join(absent)} (found: {', '.join(sorted(raw))})")
    W_E, W_D = raw["encoder.weight"], raw["decoder.weight"]  # [d_sae, d_model], [d_model, d_sae] (torch Linear)
    d_in, d_sae = int(cfg["d_model"]), int(W_E.shape[0])
    for name, shape in (("encoder.weight", (d_sae, d_in)), ("encoder.bias", (d_sae,)), ("decoder.weight", (d_in, d_sae)),
                        ("decoder.bias", (d_in,))):
        if name in raw and tuple(raw[name].shape) != shape:
            raise SAELoadError(f"{weights_path}: {name} has shape {list(raw[name].shape)}, expected {list(shape)} "
                               f"(d_model={d_in}, d_sae={d_sae})")
    if cfg.get("d_sae") is not None and int(cfg["d_sae"]) != d_sae:
        raise SAELoadError(
            f"{weights_path}: encoder.weight has {d_sae} latents but {config_path.name} says d_sae={cfg['d_sae']}"
        )
    s_in, s_out = _norm_factors(cfg, raw, config_path, weights_path)
    learnt = raw.get("log_jumprelu_threshold", raw.get("activation_function.log_jumprelu_threshold"))
    architecture = _ARCHITECTURE[act_fn]
    k = None
    if act_fn == "topk" and learnt is None and float(cfg.get("jump_relu_threshold") or 0) > 0:
        architecture = "jumprelu"  # as lm-saes' from_config: a fitted threshold replaces TopK at inference
    elif act_fn == "topk":
        k = int(cfg.get("top_k") or 0)
        if k <= 0:
            raise SAELoadError(f"{config_path}: act_fn topk needs a positive top_k")
    stored = dtype or W_E.dtype
    f32 = lambda a: a.astype(mx.float32)  # noqa: E731  (fold in float32, store as published)
    W_E, W_D = f32(W_E), f32(W_D)
    b_E = f32(raw["encoder.bias"])
    b_D = f32(raw["decoder.bias"]) if "decoder.bias" in raw else mx.zeros((d_in,))
    decoder_norm = mx.linalg.norm(W_D, axis=0) if cfg.get("sparsity_include_decoder_norm", True) else mx.ones((d_sae,))
    if learnt is not None:
        # training units: pre = ‖W_D‖·(W_E (s_in x − b_D·[pre-encoder]) + b_E), x̂ = (W_D f/‖W_D‖ + b_D)/s_out
        scale, gain, x_scale = decoder_norm, 1.0 / s_out, s_in
        bias = b_E - (W_E @ b_D if cfg.get("apply_decoder_bias_to_pre_encoder") else 0.0)
        threshold = mx.exp(f32(learnt).reshape(-1))
        if threshold.shape != (d_sae,):
            raise SAELoadError(f"{weights_path}: log_jumprelu_threshold has {threshold.size} entries, expected {d_sae}")
    else:
        # lm-saes' inference rescaling (see the module docstring), then its unit-decoder transform
        scale = decoder_norm * (s_in / s_out) if cfg.get("sparsity_include_decoder_norm", True) else mx.ones((d_sae,))
        gain, x_scale = s_in / s_out, 1.0
        bias = b_E / s_in - (W_E @ (b_D / s_out) if cfg.get("apply_decoder_bias_to_pre_encoder") else 0.0)
        theta = float(cfg.get("jump_relu_threshold") or 0.0)
        if architecture == "jumprelu" and theta < 0:
            raise SAELoadError(f"{config_path}: jump_relu_threshold is negative ({theta})")
        threshold = mx.full((d_sae,), theta)
    weights = {
        "W_enc": (W_E * (x_scale * scale)[:, None]).T.astype(stored),  # [d_model, d_sae]
        "b_enc": (bias * scale).astype(stored),
        "W_dec": (W_D * (gain / scale)[None, :]).T.astype(stored),  # [d_sae, d_model]
        "b_dec": (b_D / s_out).astype(stored),
        "threshold": threshold.astype(stored),
    }
    name = f"{folder.parent.name}/{folder.name}" if _FOLDER.fullmatch(folder.name) else folder.name
    model_name = ("meta-llama/Llama-3.1-8B" if folder.name.startswith("Llama3_1-8B-Base")
                  else "deepseek-ai/DeepSeek-R1-Distill-Llama-8B" if "R1-Distill" in folder.as_posix() else None)
    ours = SAEConfig(
        d_in=d_in, d_sae=d_sae, architecture=architecture, k=k, hook_point=point, apply_b_dec_to_input=False,
        sae_id=name, model_name=model_name, source_format="llama_scope",
        extra={key: cfg[key] for key in ("jump_relu_threshold", "dataset_average_activation_norm", "top_k",
                                         "norm_activation", "sparsity_include_decoder_norm", "hook_point_in",
                                         "hook_point_out") if key in cfg},
    )
    return ours, weights, weights_path
