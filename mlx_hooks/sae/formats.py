"""Read SAEs in the community's formats, write them in SAELens' native one, check they fit.

Formats (``load_sae`` tells them apart by their files):

- **SAELens** folder: ``cfg.json`` + ``sae_weights.safetensors`` (``W_enc [d_in, d_sae]``,
  ``W_dec [d_sae, d_in]``, ``b_enc [d_sae]``, ``b_dec [d_in]``, JumpReLU ``threshold [d_sae]``).
  Both config styles: the flat pre-6.0 one (``activation_fn_str`` + ``activation_fn_kwargs.k``,
  ``hook_name`` or the older ``hook_point``) and 6.x (``architecture`` standard / topk /
  jumprelu / batchtopk, ``k``, a ``metadata`` dict with ``model_name`` / ``hook_name``).
  Field names and defaults follow ``sae_lens/loading/pretrained_sae_loaders.py``
  (``handle_pre_6_0_config``, ``read_sae_components_from_disk``) and
  ``sae_lens/saes/{sae,topk_sae,jumprelu_sae}.py`` (SAELens 6.18, and 5.9 for the flat style).
- **Gemma Scope** ``params.npz`` (or the same arrays as ``.safetensors``): ``W_enc``, ``W_dec``,
  ``b_enc``, ``b_dec``, ``threshold``; JumpReLU without subtracting ``b_dec`` from the input
  (SAELens' ``gemma_2_sae_huggingface_loader``: ``apply_b_dec_to_input: False``). No config:
  widths come from the arrays, the hook point from the path (``layer_12``, ``-res``/``-mlp``/
  ``-att``) or the caller (:mod:`.gemma_scope`).
- **Llama Scope** (OpenMOSS lm-saes) folder: ``hyperparams.json`` + ``checkpoints/final.safetensors``,
  or ``config.json`` + ``sae_weights.safetensors`` (R1 Distill); dataset-norm scales, decoder
  norms and thresholds folded into a plain SAE (:mod:`.llama_scope`).
- **EleutherAI sparsify** folder: ``cfg.json`` + ``sae.safetensors`` (``encoder.weight
  [num_latents, d_in]``, ``encoder.bias``, ``W_dec [num_latents, d_in]``, ``b_dec``);
  ``encode = topk(relu(encoder(x − b_dec)))`` (``sparsify/sparse_coder.py``, ``fused_encoder.py``).
  The hook point is the folder's name (see :mod:`.hook_names`).

Saving (:mod:`.saving`, re-exported here) writes SAELens' native folder; fit checks are
in :mod:`.fit`, file reading in :mod:`.files`.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import mlx.core as mx

from ..errors import SAELoadError
from .features import attach_feature_info
from .files import read_json, read_safetensors
from .fit import FingerprintWarning, check_fits
from .gemma_scope import read_gemma_scope
from .hook_names import point_from_hook_name
from .llama_scope import HYPERPARAMS, LM_SAES_CONFIG, is_llama_scope_folder, read_llama_scope
from .model import SAE, SAEConfig
from .saving import CFG_FILE, SAELENS_WEIGHTS, save_sae, weights_digest

__all__ = ["FingerprintWarning", "check_fits", "detect_format", "load_sae", "save_sae", "weights_digest"]

SPARSIFY_WEIGHTS = "sae.safetensors"
GEMMA_SCOPE_FILES = ("params.npz", "params.safetensors")
_DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}


# -- format detection ---------------------------------------------------------------------------
def detect_format(path: str | os.PathLike) -> tuple[str, Path]:
    """``(format, location)``: ``saelens`` / ``sparsify`` / ``llama_scope`` (a folder) or ``gemma_scope`` (a file)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise SAELoadError(f"{path}: no such file or folder")
    if path.is_file():
        if path.name in (CFG_FILE, HYPERPARAMS, LM_SAES_CONFIG):
            return detect_format(path.parent)
        if path.name == "final.safetensors" and path.parent.name == "checkpoints" and is_llama_scope_folder(path.parent.parent):
            return "llama_scope", path.parent.parent
        if path.suffix == ".safetensors" and is_llama_scope_folder(path.parent):
            return "llama_scope", path.parent
        if path.suffix == ".npz":
            return "gemma_scope", path
        if path.suffix == ".safetensors":
            if (path.parent / CFG_FILE).is_file() and path.name in (SAELENS_WEIGHTS, SPARSIFY_WEIGHTS):
                return detect_format(path.parent)
            return "gemma_scope", path
        raise SAELoadError(f"{path}: not an SAE file (expected a folder, cfg.json, .safetensors or .npz)")
    has_cfg = (path / CFG_FILE).is_file()
    if has_cfg and (path / SAELENS_WEIGHTS).is_file():
        return "saelens", path
    if has_cfg and (path / SPARSIFY_WEIGHTS).is_file():
        return "sparsify", path
    if not has_cfg and is_llama_scope_folder(path):
        return "llama_scope", path
    for name in GEMMA_SCOPE_FILES:
        if (path / name).is_file():
            return "gemma_scope", path / name
    if has_cfg:
        raise SAELoadError(f"{path}: has cfg.json but no weights ({SAELENS_WEIGHTS} or {SPARSIFY_WEIGHTS})")
    children = sorted(p.name for p in path.iterdir() if p.is_dir() and (p / CFG_FILE).is_file())
    if children:
        raise SAELoadError(f"{path}: holds several SAEs; choose one of: {', '.join(children)}")
    raise SAELoadError(
        f"{path}: not an SAE folder (expected {CFG_FILE} + {SAELENS_WEIGHTS} (SAELens), "
        f"{CFG_FILE} + {SPARSIFY_WEIGHTS} (sparsify), {HYPERPARAMS} + checkpoints/final.safetensors "
        "(Llama Scope) or params.npz (Gemma Scope))"
    )


# -- configs of each format ---------------------------------------------------------------------
def _require(cfg: dict, names: list[str], where: Path) -> None:
    missing = [n for n in names if cfg.get(n) is None]
    if missing:
        raise SAELoadError(f"{where}: missing required field(s) {', '.join(missing)}")


def _dtype_name(value: Any) -> str:
    name = str(value or "float32").removeprefix("torch.")
    return name if name in _DTYPES else "float32"


def _hook_point(name: str | None, override: str | None, where: Path, what: str) -> str:
    if override:
        return override
    if not name:
        raise SAELoadError(f"{where}: missing required field(s) {what} (or pass the hook point)")
    try:
        return point_from_hook_name(str(name))
    except ValueError as exc:
        raise SAELoadError(f"{where}: {exc}") from exc


def _saelens_config(cfg: dict, folder: Path, hook_point: str | None) -> tuple[SAEConfig, dict]:
    """SAEConfig and load-time transforms (``fold``) from a SAELens cfg.json."""
    where = folder / CFG_FILE
    block = cfg.get("symbiont")
    if isinstance(block, dict) and isinstance(block.get("config"), dict):
        _require(block["config"], ["d_in", "d_sae"], where)
        try:
            ours = SAEConfig.from_dict({**block["config"], "source_format": "symbiont"})
        except (TypeError, ValueError) as exc:
            raise SAELoadError(f"{where}: symbiont block: {exc}") from exc
        if hook_point:
            ours.hook_point = hook_point
        return ours, {}
    _require(cfg, ["d_in", "d_sae"], where)
    metadata = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    hook_name = cfg.get("hook_name") or cfg.get("hook_point") or metadata.get("hook_name")
    point = _hook_point(hook_name, hook_point, where, "hook_name")
    if cfg.get("hook_head_index", metadata.get("hook_head_index")) is not None:
        raise SAELoadError(f"{where}: per-head SAEs (hook_head_index) are not supported")
    architecture = str(cfg.get("architecture") or "standard")  # pre-6.0 default, as handle_pre_6_0_config
    activation = str(cfg.get("activation_fn_str") or cfg.get("activation_fn") or "relu")
    kwargs = cfg.get("activation_fn_kwargs") or {}
    k = cfg.get("k") or kwargs.get("k")
    if architecture == "standard" and activation == "topk":  # pre-6.0 TopK: standard + topk activation
        architecture = "topk"
    if architecture == "standard" and activation != "relu":
        raise SAELoadError(f"{where}: unknown activation function {activation!r} (supported: relu, topk)")
    if architecture not in ("standard", "topk", "jumprelu", "batchtopk"):
        raise SAELoadError(
            f"{where}: unknown SAE architecture {architecture!r} (supported: standard, topk, jumprelu, batchtopk)"
        )
    if architecture == "topk" and not k:
        raise SAELoadError(f"{where}: missing required field(s) k (a topk SAE needs k)")
    normalize = cfg.get("normalize_activations")
    fold: dict = {}
    if normalize in (None, False, "none"):
        normalisation, scale = "none", 1.0
    elif normalize in (True, "expected_average_only_in"):
        scale = _norm_scaling_factor(cfg, folder)
        normalisation = "none" if scale is None else "constant_scale"
        if scale is None:
            # SAELens' load_from_disk does the same: the factor lives outside the folder.
            warnings.warn(
                f"{where}: normalize_activations is expected_average_only_in but no scaling factor was found "
                "(norm_scaling_factor in cfg.json or activation_scaler.json); using the weights unscaled",
                stacklevel=3,
            )
            scale = 1.0
    elif normalize in ("constant_norm_rescale", "layer_norm"):
        normalisation, scale = normalize, 1.0
    else:
        raise SAELoadError(f"{where}: unknown normalize_activations {normalize!r}")
    if architecture == "topk" and cfg.get("rescale_acts_by_decoder_norm"):
        fold["decoder_norm"] = True
    if cfg.get("finetuning_scaling_factor"):
        fold["finetuning_scaling_factor"] = True
    known = {"d_in", "d_sae", "architecture", "k", "activation_fn_str", "activation_fn", "activation_fn_kwargs",
             "hook_name", "hook_point", "apply_b_dec_to_input", "normalize_activations", "model_name", "dtype",
             "metadata", "device"}
    extra = {key: value for key, value in cfg.items() if key not in known}
    ours = SAEConfig(
        d_in=cfg["d_in"], d_sae=cfg["d_sae"], architecture=architecture,  # SAEConfig checks the types
        k=k if k and architecture in ("topk", "batchtopk") else None, hook_point=point,
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)), normalisation=normalisation,
        input_scale=float(scale), sae_id=str(metadata.get("neuronpedia_id") or cfg.get("neuronpedia_id") or folder.name),
        model_name=cfg.get("model_name") or metadata.get("model_name"), dtype=_dtype_name(cfg.get("dtype")),
        source_format="saelens", extra=extra,
    )
    return ours, fold


def _norm_scaling_factor(cfg: dict, folder: Path) -> float | None:
    for key in ("norm_scaling_factor", "activation_norm_scaling_factor", "scaling_factor"):
        if isinstance(cfg.get(key), (int, float)) and not isinstance(cfg.get(key), bool):
            return float(cfg[key])
    scaler = folder / "activation_scaler.json"  # SAELens 6 training checkpoints
    if scaler.is_file():
        value = read_json(scaler).get("scaling_factor")
        return float(value) if value is not None else None
    return None


def _sparsify_config(cfg: dict, folder: Path, hook_point: str | None) -> SAEConfig:
    where = folder / CFG_FILE
    _require(cfg, ["d_in", "k"], where)
    activation = cfg.get("activation", "topk")
    if activation != "topk":
        raise SAELoadError(f"{where}: unknown activation function {activation!r} (supported: topk)")
    if cfg.get("transcode"):
        raise SAELoadError(f"{where}: a transcoder (transcode: true) is not an autoencoder; not supported")
    if cfg.get("skip_connection"):
        raise SAELoadError(f"{where}: skip connections (W_skip) are not supported")
    d_in = int(cfg["d_in"])
    d_sae = int(cfg.get("num_latents") or 0) or d_in * int(cfg.get("expansion_factor") or 0)
    if not d_sae:
        raise SAELoadError(f"{where}: missing required field(s) num_latents or expansion_factor")
    run_cfg = folder.parent / "config.json"  # sparsify's run config, one level up, names the model
    model_name = None
    if run_cfg.is_file():
        try:
            model_name = json.loads(run_cfg.read_text()).get("model")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            model_name = None
    return SAEConfig(
        d_in=d_in, d_sae=d_sae, architecture="topk", k=int(cfg["k"]),
        hook_point=_hook_point(folder.name, hook_point, where, "a hook point folder name"),
        # sparsify's SparseCoder.encode always subtracts b_dec (transcoders aside); SAELens'
        # converter derives it from normalize_decoder instead, which that code does not do.
        apply_b_dec_to_input=True, sae_id=folder.name, model_name=model_name if isinstance(model_name, str) else None,
        source_format="sparsify",
        # the module it read, checked against the loaded model's point unless the caller names the point
        extra={**{k: v for k, v in cfg.items() if k not in ("d_in", "k")},
               **({} if hook_point else {"sparsify_hookpoint": folder.name})},
    )


# -- building the SAE -----------------------------------------------------------------------------
def _check_shapes(weights: dict[str, mx.array], cfg: SAEConfig, where: Path) -> None:
    expected = {"W_enc": (cfg.d_in, cfg.d_sae), "W_dec": (cfg.d_sae, cfg.d_in), "b_enc": (cfg.d_sae,),
                "b_dec": (cfg.d_in,)}
    if cfg.architecture in ("jumprelu", "batchtopk"):
        expected["threshold"] = (cfg.d_sae,)
    missing = [name for name in expected if name not in weights]
    if missing:
        raise SAELoadError(
            f"{where}: missing tensor(s) {', '.join(missing)} for a {cfg.architecture} SAE "
            f"(found: {', '.join(sorted(weights)) or 'none'})"
        )
    for name, shape in expected.items():
        found = tuple(weights[name].shape)
        if found != shape:
            raise SAELoadError(
                f"{where}: {name} has shape {list(found)}, expected {list(shape)} "
                f"(d_in={cfg.d_in}, d_sae={cfg.d_sae})"
            )


def build_sae(cfg: SAEConfig, weights: dict[str, mx.array], where: Path, dtype: str | None = None) -> SAE:
    """An :class:`SAE` with these weights, after checking every shape against ``cfg`` and every value
    for NaN/inf (one reduction per tensor: NaN weights otherwise load and read out NaN latents)."""
    _check_shapes(weights, cfg, where)
    flags = {name: mx.all(mx.isfinite(weights[name])) for name in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold")
             if name in weights}
    mx.eval(list(flags.values()))
    bad = [name for name, ok in flags.items() if not ok.item()]
    if bad:
        counts = ", ".join(f"{name} {int(mx.sum(~mx.isfinite(weights[name])).item())} of {weights[name].size}"
                           for name in bad)
        raise SAELoadError(f"{where}: weights hold NaN or infinite values ({counts}); the file is damaged")
    if dtype is not None:
        if dtype not in _DTYPES:
            raise ValueError(f"SAE dtype {dtype!r}: use one of {', '.join(_DTYPES)}")
        cfg.dtype = dtype
    target = _DTYPES.get(cfg.dtype, mx.float32) if dtype else weights["W_enc"].dtype
    sae = SAE(cfg)
    for name in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold"):
        if name in weights and (name != "threshold" or cfg.architecture in ("jumprelu", "batchtopk")):
            setattr(sae, name, weights[name].astype(target))
    cfg.dtype = {mx.float32: "float32", mx.float16: "float16", mx.bfloat16: "bfloat16"}.get(target, "float32")
    mx.eval(sae.parameters())
    return sae


def _fold_saelens(weights: dict[str, mx.array], fold: dict, where: Path) -> None:
    """Fold SAELens' run-time rescalings into the weights (same function, plain layout)."""
    if fold.get("finetuning_scaling_factor"):
        # decode(f) = (f · s) @ W_dec + b_dec  (SAELens 5.x ``apply_finetuning_scaling_factor``)
        scale = weights.pop("finetuning_scaling_factor", weights.pop("scaling_factor", None))
        if scale is None:
            raise SAELoadError(f"{where}: finetuning_scaling_factor is true but the weights have no scaling_factor")
        weights["W_dec"] = weights["W_dec"] * scale.astype(weights["W_dec"].dtype)[:, None]
    if fold.get("decoder_norm"):
        # TopK with rescale_acts_by_decoder_norm: topk(pre·‖d_i‖), decode f/‖d_i‖ — what
        # SAELens' ``_fold_norm_topk`` turns into plain weights when it saves for inference.
        norms = mx.linalg.norm(weights["W_dec"].astype(mx.float32), axis=-1)  # [d_sae]
        weights["W_enc"] = weights["W_enc"] * norms.astype(weights["W_enc"].dtype)
        weights["b_enc"] = weights["b_enc"] * norms.astype(weights["b_enc"].dtype)
        weights["W_dec"] = weights["W_dec"] / norms.astype(weights["W_dec"].dtype)[:, None]


def _read_format(
    kind: str, location: Path, hook_point: str | None, dtype: str | None = None
) -> tuple[SAEConfig, dict[str, mx.array], Path]:
    if kind == "saelens":
        cfg = read_json(location / CFG_FILE)
        ours, fold = _saelens_config(cfg, location, hook_point)
        weights_path = location / SAELENS_WEIGHTS
        weights = read_safetensors(weights_path)
        if "scaling_factor" in weights and not fold.get("finetuning_scaling_factor"):
            # An all-ones scaling_factor was saved by some SAELens versions: drop it (as SAELens does).
            if not bool(mx.all(weights["scaling_factor"] == 1).item()):
                raise SAELoadError(f"{weights_path}: has a scaling_factor but cfg.json says finetuning_scaling_factor is false")
            weights.pop("scaling_factor")
        _fold_saelens(weights, fold, weights_path)
        if ours.architecture == "batchtopk" and "threshold" not in weights and "topk_threshold" in weights:
            weights["threshold"] = mx.broadcast_to(weights.pop("topk_threshold").reshape(-1)[:1], (ours.d_sae,))
        if ours.architecture not in ("jumprelu", "batchtopk"):
            weights.pop("threshold", None)
        return ours, weights, weights_path
    if kind == "sparsify":
        ours = _sparsify_config(read_json(location / CFG_FILE), location, hook_point)
        weights_path = location / SPARSIFY_WEIGHTS
        raw = read_safetensors(weights_path)
        missing = [n for n in ("encoder.weight", "W_dec", "b_dec") if n not in raw]
        if missing:
            raise SAELoadError(f"{weights_path}: missing tensor(s) {', '.join(missing)} (found: {', '.join(sorted(raw))})")
        encoder = raw["encoder.weight"]  # [num_latents, d_in] (torch Linear layout)
        weights = {"W_enc": encoder.T, "W_dec": raw["W_dec"], "b_dec": raw["b_dec"],
                   "b_enc": raw.get("encoder.bias", mx.zeros((encoder.shape[0],), dtype=encoder.dtype))}
        if tuple(encoder.shape) != (ours.d_sae, ours.d_in):
            raise SAELoadError(
                f"{weights_path}: encoder.weight has shape {list(encoder.shape)}, expected [{ours.d_sae}, {ours.d_in}] "
                f"(num_latents={ours.d_sae}, d_in={ours.d_in})"
            )
        return ours, weights, weights_path
    if kind == "llama_scope":
        return read_llama_scope(location, hook_point, _DTYPES.get(dtype) if dtype else None)
    ours, weights = read_gemma_scope(location, hook_point)
    return ours, weights, location


def _config_file(kind: str, location: Path) -> Path:
    if kind == "llama_scope":
        return location / HYPERPARAMS if (location / HYPERPARAMS).is_file() else location / LM_SAES_CONFIG
    return location / CFG_FILE if location.is_dir() else location


# -- public API -----------------------------------------------------------------------------------
def load_sae(
    path: str | os.PathLike,
    model: Any = None,
    *,
    fingerprint: Any = None,
    hook_point: str | None = None,
    dtype: str | None = None,
    attach_records: bool = True,
) -> SAE:
    """Load an SAE in any supported format (auto-detected) and check that it fits ``model``.

    ``model``: a :class:`~mlx_hooks.loader.LoadedModel`, an mlx-lm model or a
    :class:`~mlx_hooks.points.ModelAdapter`; ``fingerprint``: the model's
    :class:`~mlx_hooks.fingerprint.ModelFingerprint` (taken from a LoadedModel if not
    given). ``hook_point`` overrides the file's. ``dtype`` casts the weights (default: as
    stored). Feature records and labels stored beside the weights are attached
    (``sae.max_activations``, ``sae.labels``) when they match these weights.
    """
    kind, location = detect_format(path)
    try:
        cfg, weights, where = _read_format(kind, location, hook_point, dtype)
    except (TypeError, ValueError) as exc:  # SAEConfig's own checks: name the file they came from
        raise SAELoadError(f"{_config_file(kind, location)}: {exc}") from None
    sae = build_sae(cfg, weights, where, dtype)
    # Fit problems are about what the config says: name the config file where there is one.
    check_fits(sae, model, fingerprint=fingerprint, where=_config_file(kind, location))
    if attach_records and location.is_dir():
        attach_feature_info(sae, location)
    return sae
