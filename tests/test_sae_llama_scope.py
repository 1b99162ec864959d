"""Llama Scope (OpenMOSS lm-saes) SAEs in their published layouts, against lm-saes' own forward.

- ``Llama3_1-8B-Base-L{i}{R,A,M}-8x/hyperparams.json`` + ``checkpoints/final.safetensors``
  (bfloat16 ``encoder.weight [d_sae, d_model]``, ``encoder.bias``, ``decoder.weight
  [d_model, d_sae]``, ``decoder.bias``); hyperparams keys as published.
- ``Llama-Scope-R1-Distill/<run>/L{i}R/config.json`` + ``sae_weights.safetensors`` with a
  learnt ``log_jumprelu_threshold`` (the key SAELens' loader reads) and the dataset norms
  as lm-saes' ``full_state_dict`` saves them (``dataset_average_activation_norm.<hook>``).

The references transcribe lm-saes step by step (its 2024 ``from_config`` rescaling for the
first release, its training-time forward for learnt thresholds), independently of the
folding in :mod:`mlx_hooks.sae.llama_scope`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from sae_attach import assert_attaches
from safetensors.numpy import save_file
from tiny_models import make_model

from mlx_hooks.errors import SAELoadError
from mlx_hooks.sae.formats import detect_format, load_sae

D, D_SAE = 64, 512  # the tiny llama's d_model, and 8x
SITE = {"R": "hook_resid_post", "A": "hook_attn_out", "M": "hook_mlp_out"}
POINT = {"R": "resid_post", "A": "attn_out", "M": "mlp_out"}


def hyperparams(layer: int, site: str, theta: float, norm_in: float, norm_out: float, **changes) -> dict:
    """hyperparams.json with the published keys (Llama3_1-8B-Base-L24R-32x's, at tiny widths)."""
    hook = f"blocks.{layer}.{SITE.get(site, 'hook_resid_post')}"
    return {
        "device": "cuda:0", "seed": 42, "dtype": "torch.bfloat16", "hook_point_in": hook, "hook_point_out": hook,
        "use_decoder_bias": True, "apply_decoder_bias_to_pre_encoder": False, "expansion_factor": 8, "d_model": D,
        "d_sae": D_SAE, "bias_init_method": "all_zero", "act_fn": "jumprelu", "jump_relu_threshold": theta,
        "norm_activation": "dataset-wise", "dataset_average_activation_norm": {"in": norm_in, "out": norm_out},
        "decoder_exactly_fixed_norm": False, "sparsity_include_decoder_norm": True, "use_glu_encoder": False,
        "init_decoder_norm": 0.5, "init_encoder_norm": None, "init_encoder_with_decoder_transpose": True, "lp": 1,
        "l1_coefficient": 8e-05, "l1_coefficient_warmup_steps": 78125, "top_k": 50, "k_warmup_steps": 78125,
        "use_batch_norm_mse": True, "use_ghost_grads": False, "tp_size": 1, "ddp_size": 1, **changes,
    }


def random_weights(seed: int, unit_decoder: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = {"encoder.weight": rng.standard_normal((D_SAE, D)) / np.sqrt(D), "encoder.bias": rng.standard_normal(D_SAE) * 0.1,
         "decoder.weight": rng.standard_normal((D, D_SAE)) * rng.uniform(0.2, 0.8, D_SAE) / np.sqrt(D),
         "decoder.bias": rng.standard_normal(D) * 0.1}
    if unit_decoder:
        w["decoder.weight"] /= np.linalg.norm(w["decoder.weight"], axis=0)
    return {k: v.astype(np.float32) for k, v in w.items()}


def write_release(root: Path, layer: int, site: str, hp: dict, w: dict, dtype=mx.bfloat16) -> tuple[Path, dict]:
    """Write the first release's layout (bfloat16); returns the folder and the weights as stored."""
    folder = root / f"Llama3_1-8B-Base-LX{site}-8x" / f"Llama3_1-8B-Base-L{layer}{site}-8x"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "hyperparams.json").write_text(json.dumps(hp, indent=4))
    bf16 = {k: mx.array(v).astype(dtype) for k, v in w.items()}
    mx.save_safetensors(str(folder / "checkpoints" / "final.safetensors"), bf16)
    return folder, {k: np.array(v.astype(mx.float32)) for k, v in bf16.items()}


def lm_saes_2024(x: np.ndarray, w: dict, hp: dict) -> tuple[np.ndarray, np.ndarray]:
    """lm-saes (Oct 2024) SparseAutoEncoder.from_config, then encode / decode, step by step."""
    s_in = math.sqrt(hp["d_model"]) / hp["dataset_average_activation_norm"]["in"]
    s_out = math.sqrt(hp["d_model"]) / hp["dataset_average_activation_norm"]["out"]
    W_E, b_E, W_D, b_D = w["encoder.weight"], w["encoder.bias"], w["decoder.weight"], w["decoder.bias"]
    # standardize_parameters_of_dataset_activation_scaling
    b_E, b_D, W_D = b_E / s_in, b_D / s_out, W_D * s_in / s_out
    # transform_to_unit_decoder_norm
    if hp["sparsity_include_decoder_norm"]:
        n = np.linalg.norm(W_D, axis=0)
        W_D, W_E, b_E = W_D / n, W_E * n[:, None], b_E * n
    # encode (norm_activation is now "inference": factor 1)
    u = x - b_D if hp["apply_decoder_bias_to_pre_encoder"] else x
    hidden_pre = u @ W_E.T + b_E
    f = np.where(hidden_pre > hp["jump_relu_threshold"], hidden_pre, 0)
    return f, f @ W_D.T + b_D


def assert_same_latents(ours: np.ndarray, ref: np.ndarray, score: np.ndarray, theta) -> None:
    """Equal latents, except that a score within round-off of its threshold may fall either way."""
    near = np.abs(score - theta) <= 1e-4 * np.abs(score).max()
    assert near.mean() < 0.01
    np.testing.assert_array_equal((ours > 0)[~near], (ref > 0)[~near])
    np.testing.assert_allclose(ours[~near], ref[~near], rtol=1e-4, atol=1e-5)


def theta_for(x, w, hp, quantile=0.9):
    """A threshold that lets some latents through (the first release's were fitted the same way)."""
    pre, _ = lm_saes_2024(x, w, {**hp, "jump_relu_threshold": -np.inf})
    return float(np.quantile(pre, quantile))


@pytest.mark.parametrize("variant", [
    {},  # as published: R/A/M autoencoders, in == out
    {"apply_decoder_bias_to_pre_encoder": True, "dataset_average_activation_norm": {"in": 3.0, "out": 7.5}},
    {"sparsity_include_decoder_norm": False},
])
def test_first_release_matches_lm_saes_forward(tmp_path, variant):
    w = random_weights(0)
    hp = hyperparams(1, "R", 0.0, 6.3125, 6.3125, **variant)
    x = np.random.default_rng(1).standard_normal((12, D)).astype(np.float32) * 6
    folder, stored = write_release(tmp_path, 1, "R", hp, w)
    hp["jump_relu_threshold"] = theta_for(x, stored, hp)
    (folder / "hyperparams.json").write_text(json.dumps(hp))
    assert detect_format(folder) == ("llama_scope", folder)
    assert detect_format(folder / "checkpoints" / "final.safetensors") == ("llama_scope", folder)
    sae = load_sae(folder / "hyperparams.json", dtype="float32")
    assert (sae.cfg.hook_point, sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.architecture) == ("resid_post.1", D, D_SAE, "jumprelu")
    assert sae.cfg.model_name == "meta-llama/Llama-3.1-8B" and sae.cfg.source_format == "llama_scope"
    f, recon = lm_saes_2024(x, stored, hp)
    assert 0 < (f > 0).sum() < f.size
    ours = np.array(sae.encode(mx.array(x)))
    pre, _ = lm_saes_2024(x, stored, {**hp, "jump_relu_threshold": -np.inf})
    assert_same_latents(ours, f, pre, hp["jump_relu_threshold"])
    np.testing.assert_allclose(np.array(sae.decode(mx.array(f))), recon, rtol=1e-4, atol=1e-4)
    # stored as published (bfloat16) unless asked otherwise
    assert load_sae(folder).W_enc.dtype == mx.bfloat16


def test_first_release_agrees_with_saelens_where_saelens_applies(tmp_path):
    """SAELens folds s into the weights and scales θ by it, ignoring decoder norms: the same
    reconstruction for unit-norm decoders and equal norms, latents s times larger. (float32
    here: bfloat16 rounding alone moves a unit column's norm by up to ~0.4%, which lm-saes
    divides out and SAELens does not.)"""
    w = random_weights(3, unit_decoder=True)
    x = np.random.default_rng(4).standard_normal((12, D)).astype(np.float32) * 6
    hp = hyperparams(2, "M", 0.0, 5.0, 5.0)
    folder, stored = write_release(tmp_path, 2, "M", hp, w, dtype=mx.float32)
    hp["jump_relu_threshold"] = theta_for(x, stored, hp)
    (folder / "hyperparams.json").write_text(json.dumps(hp))
    sae = load_sae(folder, dtype="float32")
    assert sae.cfg.hook_point == "mlp_out.2"
    s = math.sqrt(D) / 5.0
    pre = (x * s) @ stored["encoder.weight"].T + stored["encoder.bias"]  # SAELens: W_enc·s folded, apply_b_dec False
    f_saelens = np.where(pre > hp["jump_relu_threshold"] * s, np.maximum(pre, 0), 0)
    recon_saelens = (f_saelens @ stored["decoder.weight"].T + stored["decoder.bias"]) / s
    ours = np.array(sae.encode(mx.array(x)))
    assert_same_latents(ours * s, f_saelens, pre, hp["jump_relu_threshold"] * s)
    np.testing.assert_allclose(np.array(sae.decode(mx.array(f_saelens / s))), recon_saelens, rtol=1e-4, atol=1e-4)


def write_r1_distill(root: Path, layer: int, w: dict, log_theta: np.ndarray, norm: float, **changes) -> Path:
    folder = root / "Llama-Scope-R1-Distill" / "800M-Slimpajama-0-OpenR1-Math-220k" / f"L{layer}R"
    folder.mkdir(parents=True)
    hook = f"blocks.{layer}.hook_resid_post"
    config = {"sae_type": "sae", "d_model": D, "expansion_factor": 8, "use_decoder_bias": True, "act_fn": "jumprelu",
              "jump_relu_threshold": 0.0, "apply_decoder_bias_to_pre_encoder": False, "norm_activation": "dataset-wise",
              "sparsity_include_decoder_norm": True, "force_unit_decoder_norm": False, "top_k": 50,
              "use_triton_kernel": False, "sparsity_threshold_for_triton_spmm_kernel": 0.99,
              "jumprelu_threshold_window": 2.0, "hook_point_in": hook, "hook_point_out": hook, "use_glu_encoder": False,
              "device": "cuda", "seed": 42, "dtype": "torch.float32", **changes}
    (folder / "config.json").write_text(json.dumps(config, indent=4))
    tensors = {**w, "log_jumprelu_threshold": log_theta.astype(np.float32),
               f"dataset_average_activation_norm.{hook}": np.array(norm, dtype=np.float32)}
    save_file(tensors, str(folder / "sae_weights.safetensors"))
    return folder


def test_r1_distill_learnt_thresholds_in_training_units(tmp_path):
    w = random_weights(5)
    x = np.random.default_rng(6).standard_normal((12, D)).astype(np.float32) * 4
    s = math.sqrt(D) / 2.5
    # lm-saes (2025) forward in training units: normalise, encode with the decoder-norm-scaled
    # sparsity score against exp(log θ), decode, undo the normalisation.
    hidden = (x * s) @ w["encoder.weight"].T + w["encoder.bias"]
    norms = np.linalg.norm(w["decoder.weight"], axis=0)
    log_theta = np.log(np.quantile(hidden * norms, 0.85, axis=0).clip(1e-3))  # [d_sae], per latent
    f = hidden * (hidden * norms > np.exp(log_theta))
    recon = (f @ w["decoder.weight"].T + w["decoder.bias"]) / s
    folder = write_r1_distill(tmp_path, 3, w, log_theta, 2.5)
    assert detect_format(folder) == ("llama_scope", folder)
    sae = load_sae(folder)
    assert (sae.cfg.hook_point, sae.cfg.d_sae, sae.cfg.architecture) == ("resid_post.3", D_SAE, "jumprelu")
    assert sae.cfg.model_name == "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"
    ours = np.array(sae.encode(mx.array(x)))
    assert 0 < (f > 0).sum() < f.size
    assert_same_latents(ours, f * norms, hidden * norms, np.exp(log_theta))  # latents carry the decoder norm
    np.testing.assert_allclose(np.array(sae.decode(mx.array(f * norms))), recon, rtol=1e-4, atol=1e-4)


def test_refusals_name_the_file_and_the_problem(tmp_path):
    w = random_weights(7)
    tc = hyperparams(4, "TC", 0.1, 64.0, 3.39, hook_point_in="blocks.4.ln2.hook_normalized",
                     hook_point_out="blocks.4.hook_mlp_out")
    folder, _ = write_release(tmp_path, 4, "TC", tc, w)
    with pytest.raises(SAELoadError, match=r"L4TC-8x/hyperparams\.json: a transcoder .* not supported"):
        load_sae(folder)
    with pytest.raises(SAELoadError, match="transcoder"):  # also when the caller names a point
        load_sae(folder, hook_point="mlp_out.4")
    no_norm = hyperparams(5, "R", 0.1, 1.0, 1.0)
    del no_norm["dataset_average_activation_norm"]
    folder, _ = write_release(tmp_path, 5, "R", no_norm, w)
    with pytest.raises(SAELoadError, match=r"L5R-8x/hyperparams\.json: norm_activation is dataset-wise but no positive "
                                           r"dataset_average_activation_norm"):
        load_sae(folder)
    folder, _ = write_release(tmp_path, 6, "A", hyperparams(6, "A", 0.1, 1.0, 1.0, hook_point_in="blocks.7.hook_attn_out",
                                                            hook_point_out="blocks.7.hook_attn_out"), w)
    with pytest.raises(SAELoadError, match=r"hook_point_in is 'blocks\.7\.hook_attn_out' but the folder"):
        load_sae(folder)
    folder, _ = write_release(tmp_path, 8, "R", hyperparams(8, "R", 0.1, 1.0, 1.0, norm_activation="token-wise"), w)
    with pytest.raises(SAELoadError, match=r"norm_activation 'token-wise' is not supported"):
        load_sae(folder)


@pytest.fixture(scope="module")
def llama():
    return make_model("llama", seed=4)


@pytest.mark.parametrize("site", ["R", "A", "M"])
def test_on_a_llama(tmp_path, llama, site):
    w = random_weights(9)
    hp = hyperparams(1, site, 0.0, 4.0, 4.0)
    folder, stored = write_release(tmp_path, 1, site, hp, w)
    sae = load_sae(folder, llama, dtype="float32")
    assert sae.cfg.hook_point == f"{POINT[site]}.1"
    latents = assert_attaches(llama, sae)
    assert (latents > 0).any()


def test_on_a_llama_wrong_width_is_refused(tmp_path, llama):
    w = {k: v[:, :32] if k == "encoder.weight" else v[:32] if k == "decoder.bias" else v[:32] if k == "decoder.weight"
         else v for k, v in random_weights(10).items()}
    folder, _ = write_release(tmp_path, 2, "R", hyperparams(2, "R", 0.1, 4.0, 4.0, d_model=32), w)
    with pytest.raises(SAELoadError, match=r"L2R-8x/hyperparams\.json: the SAE reads 32-wide activations at resid_post\.2, "
                                           r"but this model's width there is 64 \(d_model"):
        load_sae(folder, llama)
