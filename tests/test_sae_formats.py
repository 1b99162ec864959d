"""SAE file formats (mlx_hooks.sae.formats): SAELens, Gemma Scope, sparsify; saving; fit checks; bad input.

Every file here is written by the test with the field and tensor names each format
uses (safetensors written with the safetensors library itself), and every loaded SAE's
encode is compared with a numpy implementation of that format's documented forward.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from conftest import make_tiny_llama
from safetensors.numpy import save_file

from mlx_hooks.errors import SAELoadError
from mlx_hooks.fingerprint import fingerprint_model
from mlx_hooks.sae.formats import FingerprintWarning, detect_format, load_sae, save_sae
from mlx_hooks.sae.hook_names import hook_name_for_point, point_from_hook_name
from mlx_hooks.sae.model import SAE, SAEConfig

D_IN, D_SAE = 16, 24


def weights(rng, d_in=D_IN, d_sae=D_SAE, threshold=False):
    w = {
        "W_enc": rng.standard_normal((d_in, d_sae)).astype(np.float32) / np.sqrt(d_in),
        "W_dec": rng.standard_normal((d_sae, d_in)).astype(np.float32) / np.sqrt(d_in),
        "b_enc": rng.standard_normal(d_sae).astype(np.float32) * 0.1,
        "b_dec": rng.standard_normal(d_in).astype(np.float32) * 0.1,
    }
    if threshold:  # some negative: JumpReLU must still drop negative values
        w["threshold"] = rng.standard_normal(d_sae) * 0.2
    return {k: v.astype(np.float32) for k, v in w.items()}  # as stored: F32


def write_saelens(folder: Path, cfg: dict, w: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file(w, str(folder / "sae_weights.safetensors"))
    return folder


def inputs(rng, n=32, d=D_IN):
    return rng.standard_normal((n, d)).astype(np.float32) * 2.0


# -- numpy references of each format's documented forward -------------------------------------------
def ref_topk(pre, k):  # torch.topk then relu, scattered back (SAELens TopK, sparsify fused_encoder)
    out = np.zeros_like(pre)
    idx = np.argsort(-pre, axis=-1)[:, :k]
    np.put_along_axis(out, idx, np.maximum(np.take_along_axis(pre, idx, axis=-1), 0), axis=-1)
    return out


def ref_saelens_encode(x, w, arch, k=None, apply_b_dec=True, norm="none", rescale_by_dec_norm=False):
    if norm == "layer_norm":  # SAELens: (x - mu) / (x.std(unbiased) + 1e-5)
        mu = x.mean(-1, keepdims=True)
        x = (x - mu) / (x.std(-1, ddof=1, keepdims=True) + 1e-5)
    elif norm == "constant_norm_rescale":
        x = x * np.sqrt(x.shape[-1]) / np.linalg.norm(x, axis=-1, keepdims=True)
    sae_in = x - w["b_dec"] * apply_b_dec
    pre = sae_in @ w["W_enc"] + w["b_enc"]
    if arch == "standard":
        return np.maximum(pre, 0)
    if arch == "jumprelu":
        return np.maximum(pre, 0) * (pre > w["threshold"])
    if rescale_by_dec_norm:
        pre = pre * np.linalg.norm(w["W_dec"], axis=-1)
    return ref_topk(pre, k)


def ref_saelens_decode(f, w, x=None, norm="none"):
    out = f @ w["W_dec"] + w["b_dec"]
    if norm == "layer_norm":
        return out * x.std(-1, ddof=1, keepdims=True) + x.mean(-1, keepdims=True)
    if norm == "constant_norm_rescale":
        return out / (np.sqrt(x.shape[-1]) / np.linalg.norm(x, axis=-1, keepdims=True))
    return out


def encode(sae, x):
    return np.array(sae.encode(mx.array(x)))


# -- hook names ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, point", [
    ("blocks.3.hook_resid_post", "resid_post.3"), ("blocks.0.hook_resid_pre", "resid_pre.0"),
    ("blocks.12.hook_attn_out", "attn_out.12"), ("blocks.2.hook_mlp_out", "mlp_out.2"), ("hook_embed", "embed"),
    ("layers.5", "resid_post.5"), ("model.layers.5", "resid_post.5"), ("layers.5.mlp", "mlp_out.5"),
    ("gpt_neox.layers.1.attention", "attn_out.1"), ("embed_tokens", "embed"), ("resid_post.-1", "resid_post.-1"),
    ("blocks.3.attn.hook_z", "attn_z.3"), ("blocks.4.mlp.hook_post", "mlp_hidden.4"), ("attn_z.2", "attn_z.2"),
    ("mlp_hidden.-1", "mlp_hidden.-1"), ("model.layers.6.post_feedforward_layernorm", "mlp_out.6"),
    ("layers.6.post_attention_layernorm", "attn_out.6"),
])
def test_hook_names_map_to_symbiont_points(name, point):
    assert point_from_hook_name(name) == point


@pytest.mark.parametrize("name", ["blocks.3.hook_resid_mid", "blocks.3.attn.hook_q", "blocks.1.ln2.hook_normalized",
                                  "blocks.2.mlp.hook_pre", "layers.2.mlp.down_proj", "layers.2.input_layernorm"])
def test_hook_names_without_a_point_are_refused_by_name(name):
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        point_from_hook_name(name)


def test_hook_name_round_trip():
    for point in ["embed", "resid_pre.0", "resid_post.7", "attn_out.2", "mlp_out.11", "attn_z.5", "mlp_hidden.9"]:
        assert point_from_hook_name(hook_name_for_point(point)) == point
    assert hook_name_for_point("attn_z.5") == "blocks.5.attn.hook_z"
    assert hook_name_for_point("mlp_hidden.9") == "blocks.9.mlp.hook_post"


def test_sparsify_activation_function_output_is_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"act\(gate\)·up"):
        point_from_hook_name("layers.3.mlp.act_fn")


# -- SAELens ------------------------------------------------------------------------------------------
def test_saelens_v6_topk_with_metadata(tmp_path):
    rng = np.random.default_rng(0)
    w = weights(rng)
    cfg = {"architecture": "topk", "d_in": D_IN, "d_sae": D_SAE, "k": 5, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none",
           "metadata": {"model_name": "gpt2", "hook_name": "blocks.1.hook_resid_post", "sae_lens_version": "6.5.0"}}
    sae = load_sae(write_saelens(tmp_path / "sae", cfg, w))
    assert (sae.cfg.architecture, sae.cfg.k, sae.cfg.hook_point, sae.cfg.model_name) == ("topk", 5, "resid_post.1", "gpt2")
    assert sae.cfg.source_format == "saelens"
    x = inputs(rng)
    expected = ref_saelens_encode(x, w, "topk", k=5)
    np.testing.assert_allclose(encode(sae, x), expected, rtol=1e-5, atol=1e-5)
    assert ((encode(sae, x) > 0).sum(-1) <= 5).all()
    np.testing.assert_allclose(np.array(sae.decode(mx.array(expected))), ref_saelens_decode(expected, w), rtol=1e-5, atol=1e-5)


def test_saelens_flat_pre6_standard_relu_with_hook_point(tmp_path):
    rng = np.random.default_rng(1)
    w = weights(rng)
    cfg = {"architecture": "standard", "d_in": D_IN, "d_sae": D_SAE, "activation_fn_str": "relu",
           "hook_point": "blocks.0.hook_mlp_out", "hook_point_layer": 0, "apply_b_dec_to_input": False,
           "finetuning_scaling_factor": False, "model_name": "gelu-1l", "dtype": "torch.float32",
           "normalize_activations": False, "context_size": 128}
    sae = load_sae(write_saelens(tmp_path / "sae", cfg, w))
    assert (sae.cfg.architecture, sae.cfg.hook_point, sae.cfg.apply_b_dec_to_input) == ("standard", "mlp_out.0", False)
    x = inputs(rng)
    np.testing.assert_allclose(encode(sae, x), ref_saelens_encode(x, w, "standard", apply_b_dec=False), rtol=1e-5, atol=1e-5)


def test_saelens_flat_topk_via_activation_kwargs(tmp_path):
    rng = np.random.default_rng(2)
    w = weights(rng)
    cfg = {"architecture": "standard", "d_in": D_IN, "d_sae": D_SAE, "activation_fn_str": "topk",
           "activation_fn_kwargs": {"k": 3}, "hook_name": "blocks.2.hook_resid_pre", "model_name": "m"}
    sae = load_sae(write_saelens(tmp_path / "sae", cfg, w))
    assert (sae.cfg.architecture, sae.cfg.k, sae.cfg.hook_point) == ("topk", 3, "resid_pre.2")
    x = inputs(rng)
    np.testing.assert_allclose(encode(sae, x), ref_saelens_encode(x, w, "topk", k=3), rtol=1e-5, atol=1e-5)


def test_saelens_jumprelu_threshold(tmp_path):
    rng = np.random.default_rng(3)
    w = weights(rng, threshold=True)
    cfg = {"architecture": "jumprelu", "d_in": D_IN, "d_sae": D_SAE, "hook_name": "blocks.0.hook_resid_post"}
    sae = load_sae(write_saelens(tmp_path / "sae", cfg, w))
    x = inputs(rng)
    got = encode(sae, x)
    np.testing.assert_allclose(got, ref_saelens_encode(x, w, "jumprelu"), rtol=1e-5, atol=1e-5)
    assert (got >= 0).all()  # negative thresholds let no negative value through
    np.testing.assert_array_equal(np.array(sae.threshold), w["threshold"])


@pytest.mark.parametrize("norm", ["layer_norm", "constant_norm_rescale"])
def test_saelens_per_token_normalisations(tmp_path, norm):
    rng = np.random.default_rng(4)
    w = weights(rng)
    cfg = {"architecture": "standard", "d_in": D_IN, "d_sae": D_SAE, "hook_name": "blocks.0.hook_resid_post",
           "normalize_activations": norm}
    sae = load_sae(write_saelens(tmp_path / "sae", cfg, w))
    assert sae.cfg.normalisation == norm
    x = inputs(rng) + 3.0
    f = ref_saelens_encode(x, w, "standard", norm=norm)
    np.testing.assert_allclose(encode(sae, x), f, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.array(sae.decode(mx.array(f), like=mx.array(x))), ref_saelens_decode(f, w, x, norm),
                               rtol=1e-4, atol=1e-4)


def test_saelens_expected_average_scaling_factor(tmp_path):
    rng = np.random.default_rng(5)
    w = weights(rng)
    cfg = {"architecture": "standard", "d_in": D_IN, "d_sae": D_SAE, "hook_name": "blocks.0.hook_resid_post",
           "normalize_activations": "expected_average_only_in"}
    folder = write_saelens(tmp_path / "sae", cfg, w)
    (folder / "activation_scaler.json").write_text(json.dumps({"scaling_factor": 0.3}))
    sae = load_sae(folder)
    assert (sae.cfg.normalisation, sae.cfg.input_scale) == ("constant_scale", 0.3)
    x = inputs(rng)
    f = ref_saelens_encode(x * 0.3, w, "standard")
    np.testing.assert_allclose(encode(sae, x), f, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.array(sae.decode(mx.array(f))), ref_saelens_decode(f, w) / 0.3, rtol=1e-5, atol=1e-5)
    # No factor anywhere: loaded unscaled, as SAELens' load_from_disk does, with a warning naming the file.
    (folder / "activation_scaler.json").unlink()
    with pytest.warns(UserWarning, match=r"cfg\.json: normalize_activations is expected_average_only_in"):
        plain = load_sae(folder)
    assert plain.cfg.normalisation == "none"


def test_saelens_topk_rescaled_by_decoder_norm_and_finetuning_scale(tmp_path):
    rng = np.random.default_rng(6)
    w = weights(rng)
    w["W_dec"] *= rng.uniform(0.5, 2.0, (D_SAE, 1)).astype(np.float32)
    cfg = {"architecture": "topk", "d_in": D_IN, "d_sae": D_SAE, "k": 4, "rescale_acts_by_decoder_norm": True,
           "hook_name": "blocks.0.hook_resid_post"}
    sae = load_sae(write_saelens(tmp_path / "a", cfg, w))
    x = inputs(rng)
    f = ref_saelens_encode(x, w, "topk", k=4, rescale_by_dec_norm=True)
    np.testing.assert_allclose(encode(sae, x), f, rtol=1e-4, atol=1e-5)
    # SAELens decode: (f / ‖W_dec‖) @ W_dec + b_dec
    expected = (f / np.linalg.norm(w["W_dec"], axis=-1)) @ w["W_dec"] + w["b_dec"]
    np.testing.assert_allclose(np.array(sae.decode(mx.array(f))), expected, rtol=1e-4, atol=1e-4)

    scale = rng.uniform(0.5, 2.0, D_SAE).astype(np.float32)
    flat = {"architecture": "standard", "d_in": D_IN, "d_sae": D_SAE, "activation_fn_str": "relu",
            "hook_name": "blocks.0.hook_resid_post", "finetuning_scaling_factor": True}
    sae = load_sae(write_saelens(tmp_path / "b", flat, {**w, "scaling_factor": scale}))
    f = ref_saelens_encode(x, w, "standard")
    np.testing.assert_allclose(np.array(sae.decode(mx.array(f))), (f * scale) @ w["W_dec"] + w["b_dec"], rtol=1e-4, atol=1e-4)


def test_saelens_bfloat16_weights_stay_bfloat16(tmp_path):
    rng = np.random.default_rng(10)
    w = weights(rng)
    folder = tmp_path / "sae"
    folder.mkdir()
    (folder / "cfg.json").write_text(json.dumps({"architecture": "standard", "d_in": D_IN, "d_sae": D_SAE,
                                                 "dtype": "bfloat16", "hook_name": "blocks.0.hook_resid_post"}))
    mx.save_safetensors(str(folder / "sae_weights.safetensors"), {k: mx.array(v).astype(mx.bfloat16) for k, v in w.items()})
    sae = load_sae(folder)
    assert sae.W_enc.dtype == mx.bfloat16 and sae.cfg.dtype == "bfloat16"
    assert load_sae(folder, dtype="float32").W_enc.dtype == mx.float32
    x = inputs(rng)
    rounded = {k: np.array(mx.array(v).astype(mx.bfloat16).astype(mx.float32)) for k, v in w.items()}
    np.testing.assert_allclose(encode(load_sae(folder, dtype="float32"), x), ref_saelens_encode(x, rounded, "standard"),
                               rtol=1e-4, atol=1e-4)


# -- Gemma Scope ----------------------------------------------------------------------------------------
def test_gemma_scope_params_npz_and_safetensors(tmp_path):
    rng = np.random.default_rng(7)
    w = weights(rng, threshold=True)
    # (published layout with real widths, and the -mlp/-att sites: tests/test_sae_families.py)
    folder = tmp_path / "gemma-scope-2b-pt-res" / "layer_1" / "average_l0_5"
    folder.mkdir(parents=True)
    np.savez(folder / "params.npz", **w)
    x = inputs(rng)
    # Gemma Scope's reference forward: relu(pre) * (pre > threshold), pre = x @ W_enc + b_enc (no b_dec subtraction).
    pre = x @ w["W_enc"] + w["b_enc"]
    expected = np.maximum(pre, 0) * (pre > w["threshold"])
    for path in (folder, folder / "params.npz"):
        sae = load_sae(path)
        assert sae.cfg.architecture == "jumprelu" and not sae.cfg.apply_b_dec_to_input
        assert (sae.cfg.hook_point, sae.cfg.model_name, sae.cfg.source_format) == ("resid_post.1", "gemma-2-2b", "gemma_scope")
        np.testing.assert_allclose(encode(sae, x), expected, rtol=1e-5, atol=1e-5)
    other = tmp_path / "my_jumprelu.safetensors"
    save_file(w, str(other))
    with pytest.raises(SAELoadError, match="cannot tell the hook point"):
        load_sae(other)
    sae = load_sae(other, hook_point="mlp_out.0")
    assert sae.cfg.hook_point == "mlp_out.0"
    np.testing.assert_allclose(encode(sae, x), expected, rtol=1e-5, atol=1e-5)


def test_npz_with_objects_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "params.npz"
    np.savez(path, W_enc=np.array([{"a": 1}], dtype=object))
    with pytest.raises(SAELoadError, match=r"params\.npz: not a readable \.npz file"):
        load_sae(path, hook_point="resid_post.0")


# -- sparsify --------------------------------------------------------------------------------------------
def write_sparsify(folder: Path, cfg: dict, w: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file(w, str(folder / "sae.safetensors"))
    return folder


@pytest.mark.parametrize("name, point, size", [("layers.1", "resid_post.1", {"num_latents": D_SAE}),
                                               ("layers.2.mlp", "mlp_out.2", {"num_latents": 0, "expansion_factor": 2})])
def test_sparsify_folder(tmp_path, name, point, size):
    rng = np.random.default_rng(8)
    d_sae = size["num_latents"] or D_IN * size["expansion_factor"]
    w = {"encoder.weight": rng.standard_normal((d_sae, D_IN)).astype(np.float32) / 4,
         "encoder.bias": rng.standard_normal(d_sae).astype(np.float32) * 0.1,
         "W_dec": rng.standard_normal((d_sae, D_IN)).astype(np.float32) / 4,
         "b_dec": rng.standard_normal(D_IN).astype(np.float32) * 0.1}
    cfg = {"activation": "topk", "expansion_factor": 32, "normalize_decoder": True, "k": 6, "multi_topk": False,
           "skip_connection": False, "transcode": False, "d_in": D_IN, **size}
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "EleutherAI/pythia-70m", "batch_size": 8}))
    sae = load_sae(write_sparsify(run / name, cfg, w))
    assert (sae.cfg.d_sae, sae.cfg.k, sae.cfg.hook_point, sae.cfg.model_name) == (d_sae, 6, point, "EleutherAI/pythia-70m")
    x = inputs(rng)
    # sparsify: top_acts, top_indices = topk(relu((x - b_dec) @ encoder.weight.T + encoder.bias), k)
    pre = np.maximum((x - w["b_dec"]) @ w["encoder.weight"].T + w["encoder.bias"], 0)
    expected = ref_topk(pre, 6)
    np.testing.assert_allclose(encode(sae, x), expected, rtol=1e-5, atol=1e-5)
    # decode: Σ top_acts · W_dec[top_indices] + b_dec
    np.testing.assert_allclose(np.array(sae.decode(mx.array(expected))), expected @ w["W_dec"] + w["b_dec"], rtol=1e-5, atol=1e-5)


def test_sparsify_refuses_groupmax_and_transcoders(tmp_path):
    w = {"encoder.weight": np.zeros((D_SAE, D_IN), np.float32), "encoder.bias": np.zeros(D_SAE, np.float32),
         "W_dec": np.zeros((D_SAE, D_IN), np.float32), "b_dec": np.zeros(D_IN, np.float32)}
    base = {"k": 4, "num_latents": D_SAE, "d_in": D_IN}
    folder = write_sparsify(tmp_path / "a" / "layers.0", {**base, "activation": "groupmax"}, w)
    with pytest.raises(SAELoadError, match=r"layers\.0/cfg\.json: unknown activation function 'groupmax'"):
        load_sae(folder)
    folder = write_sparsify(tmp_path / "b" / "layers.0", {**base, "transcode": True}, w)
    with pytest.raises(SAELoadError, match="transcoder"):
        load_sae(folder)


# -- saving ------------------------------------------------------------------------------------------------
def random_sae(cfg: SAEConfig, seed=0) -> SAE:
    mx.random.seed(seed)
    sae = SAE(cfg)
    sae.W_dec = mx.random.normal((cfg.d_sae, cfg.d_in)) / 4
    sae.b_enc = mx.random.normal((cfg.d_sae,)) * 0.1
    sae.b_dec = mx.random.normal((cfg.d_in,)) * 0.1
    if cfg.architecture in ("jumprelu", "batchtopk"):
        sae.threshold = mx.abs(mx.random.normal((cfg.d_sae,))) * 0.1
    mx.eval(sae.parameters())
    return sae


def test_save_load_round_trip_is_exact_and_readable_as_plain_saelens(tmp_path):
    model = make_tiny_llama()
    fp = fingerprint_model(model)
    cfg = SAEConfig(d_in=64, d_sae=96, architecture="topk", k=8, hook_point="resid_post.1", sae_id="tiny/resid_post.1",
                    model_name="tiny-llama", model_fingerprint=fp.to_dict(), extra={"context_size": 64})
    sae = random_sae(cfg)
    folder = save_sae(sae, tmp_path / "sae")
    assert sorted(p.name for p in folder.iterdir()) == ["cfg.json", "sae_weights.safetensors"]  # no temp files left
    loaded = load_sae(folder, model, fingerprint=fp)
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        np.testing.assert_array_equal(np.array(getattr(loaded, name)), np.array(getattr(sae, name)))
    assert loaded.cfg.to_dict() == {**cfg.to_dict(), "source_format": "symbiont"}
    # The flat fields SAELens reads (5.x: activation_fn_str + kwargs; 6.x: architecture, k, metadata).
    written = json.loads((folder / "cfg.json").read_text())
    assert {k: written[k] for k in ("architecture", "d_in", "d_sae", "k", "activation_fn_str", "activation_fn_kwargs",
                                    "hook_name", "hook_layer", "apply_b_dec_to_input", "normalize_activations", "dtype",
                                    "model_name", "context_size")} == {
        "architecture": "topk", "d_in": 64, "d_sae": 96, "k": 8, "activation_fn_str": "topk",
        "activation_fn_kwargs": {"k": 8}, "hook_name": "blocks.1.hook_resid_post", "hook_layer": 1,
        "apply_b_dec_to_input": True, "normalize_activations": "none", "dtype": "float32", "model_name": "tiny-llama",
        "context_size": 64}
    assert written["metadata"] == {"model_name": "tiny-llama", "hook_name": "blocks.1.hook_resid_post"}
    assert written["symbiont"]["config"]["model_fingerprint"] == fp.to_dict()
    # Without our block (what SAELens sees), the flat fields alone give the same SAE.
    del written["symbiont"]
    (folder / "cfg.json").write_text(json.dumps(written))
    plain = load_sae(folder)
    assert (plain.cfg.architecture, plain.cfg.k, plain.cfg.hook_point) == ("topk", 8, "resid_post.1")
    x = mx.random.normal((10, 64))
    np.testing.assert_array_equal(np.array(plain.encode(x)), np.array(sae.encode(x)))


def test_save_folds_a_constant_input_scale_and_batchtopk_saves_as_jumprelu(tmp_path):
    cfg = SAEConfig(d_in=16, d_sae=32, architecture="batchtopk", k=4, hook_point="resid_post.0",
                    normalisation="constant_scale", input_scale=0.37)
    sae = random_sae(cfg, seed=3)
    folder = save_sae(sae, tmp_path / "sae")
    written = json.loads((folder / "cfg.json").read_text())
    assert (written["architecture"], written["normalize_activations"]) == ("jumprelu", "none")
    loaded = load_sae(folder)
    assert (loaded.cfg.architecture, loaded.cfg.normalisation) == ("batchtopk", "none")
    assert loaded.cfg.extra["folded_input_scale"] == pytest.approx(0.37)
    x = mx.random.normal((20, 16)) * 3
    np.testing.assert_allclose(np.array(loaded.encode(x)), np.array(sae.encode(x)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.array(loaded(x).reconstruction), np.array(sae(x).reconstruction), rtol=1e-5, atol=1e-5)
    # Saving what was loaded writes the same bytes again (the folded form is a fixed point).
    save_sae(loaded, tmp_path / "again")
    assert (tmp_path / "again" / "sae_weights.safetensors").read_bytes() == (folder / "sae_weights.safetensors").read_bytes()


def test_save_into_an_existing_folder_keeps_other_files(tmp_path):
    sae = random_sae(SAEConfig(d_in=16, d_sae=32, k=4))
    folder = save_sae(sae, tmp_path / "sae")
    (folder / "labels.json").write_text('{"labels": {"1": "mine"}}')
    sae.b_dec = sae.b_dec + 1
    save_sae(sae, folder)
    assert (folder / "labels.json").exists()
    np.testing.assert_array_equal(np.array(load_sae(folder).b_dec), np.array(sae.b_dec))
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


# -- fit to a model ---------------------------------------------------------------------------------------
def saved_for(tmp_path, model, point="resid_post.1", d_in=64):
    cfg = SAEConfig(d_in=d_in, d_sae=32, k=4, hook_point=point, model_fingerprint=fingerprint_model(model).to_dict())
    return save_sae(random_sae(cfg), tmp_path / f"sae-{point}-{d_in}")


def test_hook_point_must_exist_on_the_model(tmp_path):
    model = make_tiny_llama()
    folder = saved_for(tmp_path, model, point="resid_post.7")
    with pytest.raises(SAELoadError, match=r"sae-resid_post\.7-64/cfg\.json: .*layer 7 is out of range; this model has 3 layers"):
        load_sae(folder, model)
    sae = load_sae(saved_for(tmp_path, model, point="resid_post.-1"), model)
    assert sae.cfg.hook_point == "resid_post.2"  # normalised against the model


def test_width_must_match_the_model(tmp_path):
    model = make_tiny_llama()
    folder = saved_for(tmp_path, model, d_in=32)
    with pytest.raises(SAELoadError, match=r"cfg\.json: the SAE reads 32-wide activations at resid_post\.1, but this model's width there is 64"):
        load_sae(folder, model)


def test_fingerprint_same_architecture_warns_other_architecture_errors(tmp_path):
    model = make_tiny_llama(seed=0)
    folder = saved_for(tmp_path, model)
    load_sae(folder, model, fingerprint=fingerprint_model(model))  # same model: silent
    finetune = make_tiny_llama(seed=1)
    with pytest.warns(FingerprintWarning, match=r"trained on llama-3L-64d-\w+; the loaded model llama-3L-64d-\w+ has the same architecture"):
        load_sae(folder, finetune, fingerprint=fingerprint_model(finetune))
    deeper = make_tiny_llama(layers=4)
    with pytest.raises(SAELoadError, match=r"cfg\.json: trained on a different model: expected llama-3L-64d-\w+, found llama-4L-64d-\w+ \(n_layers: 3 != 4\)"):
        load_sae(folder, deeper, fingerprint=fingerprint_model(deeper))


def test_loaded_model_brings_its_fingerprint(tmp_path, tiny_folder):
    from mlx_hooks.loader import load_model

    loaded = load_model(str(tiny_folder), memory_budget_bytes=None)
    folder = saved_for(tmp_path, make_tiny_llama(seed=5))  # different weights, same architecture
    with pytest.warns(FingerprintWarning, match=loaded.fingerprint.short):
        load_sae(folder, loaded)


# -- bad input ----------------------------------------------------------------------------------------------
def good_saelens(tmp_path) -> Path:
    cfg = {"architecture": "standard", "d_in": D_IN, "d_sae": D_SAE, "hook_name": "blocks.0.hook_resid_post"}
    return write_saelens(tmp_path / "sae", cfg, weights(np.random.default_rng(9)))


def test_truncated_safetensors_names_the_file(tmp_path):
    folder = good_saelens(tmp_path)
    path = folder / "sae_weights.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(SAELoadError, match=r"sae_weights\.safetensors: corrupt or truncated safetensors file"):
        load_sae(folder)


def test_wrong_widths_name_file_expected_and_found(tmp_path):
    folder = good_saelens(tmp_path)
    cfg = json.loads((folder / "cfg.json").read_text())
    (folder / "cfg.json").write_text(json.dumps({**cfg, "d_sae": D_SAE + 1}))
    with pytest.raises(SAELoadError, match=rf"sae_weights\.safetensors: W_enc has shape \[{D_IN}, {D_SAE}\], expected \[{D_IN}, {D_SAE + 1}\]"):
        load_sae(folder)


@pytest.mark.parametrize("change, message", [
    ({"architecture": "gated"}, r"cfg\.json: unknown SAE architecture 'gated'"),
    ({"activation_fn_str": "tanh-relu"}, r"cfg\.json: unknown activation function 'tanh-relu'"),
    ({"normalize_activations": "whiten"}, r"cfg\.json: unknown normalize_activations 'whiten'"),
    ({"d_in": None, "d_sae": None}, r"cfg\.json: missing required field\(s\) d_in, d_sae"),
    ({"hook_name": None}, r"cfg\.json: missing required field\(s\) hook_name"),
    ({"architecture": "topk"}, r"cfg\.json: missing required field\(s\) k"),
    ({"hook_name": "blocks.0.hook_resid_mid"}, r"cfg\.json: hook 'blocks\.0\.hook_resid_mid' has no Symbiont hook point"),
])
def test_bad_cfg_fields_name_the_file_and_the_problem(tmp_path, change, message):
    folder = good_saelens(tmp_path)
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg.update(change)
    (folder / "cfg.json").write_text(json.dumps({k: v for k, v in cfg.items() if v is not None}))
    with pytest.raises(SAELoadError, match=message):
        load_sae(folder)


def test_missing_tensors_bad_json_and_unknown_folders(tmp_path):
    folder = good_saelens(tmp_path)
    w = weights(np.random.default_rng(0))
    del w["b_enc"]
    save_file(w, str(folder / "sae_weights.safetensors"))
    with pytest.raises(SAELoadError, match=r"sae_weights\.safetensors: missing tensor\(s\) b_enc for a standard SAE"):
        load_sae(folder)
    (folder / "cfg.json").write_text("{not json")
    with pytest.raises(SAELoadError, match=r"cfg\.json: not valid JSON"):
        load_sae(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SAELoadError, match="empty: not an SAE folder"):
        load_sae(empty)
    with pytest.raises(SAELoadError, match="nowhere: no such file or folder"):
        load_sae(tmp_path / "nowhere")
    assert detect_format(folder / "cfg.json") == ("saelens", folder)


def test_nothing_is_attached_or_changed_when_loading_fails(tmp_path):
    model = make_tiny_llama()
    folder = saved_for(tmp_path, model, d_in=32)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(SAELoadError):
            load_sae(folder, model)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
