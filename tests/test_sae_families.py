"""Published SAE families on the models they were made for: Gemma Scope and sparsify here,
Llama Scope in test_sae_llama_scope.py.

Each test writes the files in the family's published layout (folder names, file names,
array names and dtypes, config keys) and checks that the SAE resolves to the right
point and width, that encode/decode match a numpy transcription of the family's own
forward, that a wrong width is refused naming the file, the point and both widths, and
that the SAE attaches at its point on a tiny model of the family (gemma2; llama for sparsify).
"""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from safetensors.numpy import save_file
from sae_attach import assert_attaches, capture
from tiny_models import CONFIGS, make_model

from mlx_hooks.errors import SAELoadError
from mlx_hooks.sae.formats import detect_format, load_sae

HEAD_DIM = 24  # the tiny gemma2 below: 4 heads × 24 = 96 wide attn_z against d_model 64, d_mlp 128


@pytest.fixture(scope="module")
def gemma2():
    """Tiny Gemma 2 whose attn_z (n_heads × head_dim) is wider than its residual, as in Gemma 2 2B."""
    saved = CONFIGS["gemma2"]
    CONFIGS["gemma2"] = {**saved, "head_dim": HEAD_DIM, "query_pre_attn_scalar": HEAD_DIM}
    try:
        return make_model("gemma2", seed=3)
    finally:
        CONFIGS["gemma2"] = saved


@pytest.fixture(scope="module")
def llama():
    return make_model("llama", seed=4)


# -- Gemma Scope -------------------------------------------------------------------------------------
def jumprelu_reference(x, w):
    """Gemma Scope's forward: f = relu(pre)·[pre > θ], pre = x·W_enc + b_enc; x̂ = f·W_dec + b_dec."""
    pre = x @ w["W_enc"] + w["b_enc"]
    f = np.maximum(pre, 0) * (pre > w["threshold"])
    return f, f @ w["W_dec"] + w["b_dec"]


def write_params(path: Path, d_in: int, d_sae: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    w = {"W_enc": rng.standard_normal((d_in, d_sae)) / np.sqrt(d_in), "W_dec": rng.standard_normal((d_sae, d_in)) * 0.05,
         "b_enc": rng.standard_normal(d_sae) * 0.1, "b_dec": rng.standard_normal(d_in) * 0.1,
         "threshold": np.abs(rng.standard_normal(d_sae)) * 0.5}
    w = {k: v.astype(np.float32) for k, v in w.items()}  # as published: float32 arrays, no config
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **w)
    return w


SNAPSHOT = "snapshots/0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize("where, point", [
    (f"models--google--gemma-scope-2b-pt-res/{SNAPSHOT}/layer_1", "resid_post.1"),
    (f"models--google--gemma-scope-2b-pt-mlp/{SNAPSHOT}/layer_1", "mlp_out.1"),
    (f"models--google--gemma-scope-2b-pt-att/{SNAPSHOT}/layer_1", "attn_z.1"),
    ("gemma-scope-9b-it-res/layer_2", "resid_post.2"),
    ("gemma-scope-2b-pt-res-canonical/layer_0", "resid_post.0"),
    ("gemma-scope-27b-pt-att/layer_2", "attn_z.2"),
    ("my-saes/att/layer_2", "attn_z.2"),
])
def test_gemma_scope_site_and_width_from_the_published_path(tmp_path, where, point):
    d_in = 96 if point.startswith("attn_z") else 64
    path = tmp_path / where / "width_16k" / "average_l0_71" / "params.npz"
    w = write_params(path, d_in, 16384)
    assert detect_format(path.parent) == ("gemma_scope", path)
    sae = load_sae(path.parent)
    assert (sae.cfg.hook_point, sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.architecture) == (point, d_in, 16384, "jumprelu")
    assert not sae.cfg.apply_b_dec_to_input
    if "gemma-scope-9b-it" in where:
        assert sae.cfg.model_name == "gemma-2-9b-it"
    x = np.random.default_rng(1).standard_normal((6, d_in)).astype(np.float32) * 3
    f, recon = jumprelu_reference(x, w)
    assert 0 < (f > 0).sum() < f.size
    np.testing.assert_allclose(np.array(sae.encode(mx.array(x))), f, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.array(sae.decode(sae.encode(mx.array(x)))), recon, rtol=1e-4, atol=1e-5)


def test_gemma_scope_caller_override_embedding_and_width_folder(tmp_path):
    path = tmp_path / "gemma-scope-2b-pt-res" / "layer_1" / "width_16k" / "average_l0_71" / "params.npz"
    write_params(path, 96, 16384)
    assert load_sae(path, hook_point="attn_z.1").cfg.hook_point == "attn_z.1"
    # the embedding SAE reads the unscaled embedding, which is Symbiont's `embed`: weights as published
    emb = tmp_path / "gemma-scope-2b-pt-res" / "embedding" / "width_4k" / "average_l0_6" / "params.npz"
    w = write_params(emb, 64, 4096)
    sae = load_sae(emb)
    assert sae.cfg.hook_point == "embed"
    np.testing.assert_array_equal(np.array(sae.W_enc), w["W_enc"])
    np.testing.assert_array_equal(np.array(sae.W_dec), w["W_dec"])
    bad = tmp_path / "gemma-scope-2b-pt-mlp" / "layer_1" / "width_65k" / "average_l0_20" / "params.npz"
    write_params(bad, 64, 16384)
    with pytest.raises(SAELoadError, match=r"width_65k/average_l0_20/params\.npz: the folder width_65k means 65536 "
                                           r"latents, but W_enc has 16384"):
        load_sae(bad)
    nowhere = tmp_path / "downloads" / "params.npz"
    write_params(nowhere, 64, 4096)
    with pytest.raises(SAELoadError, match=r"downloads/params\.npz: cannot tell the hook point"):
        load_sae(nowhere)


@pytest.mark.parametrize("site, kind, d_in", [("res", "resid_post", 64), ("mlp", "mlp_out", 64), ("att", "attn_z", 96)])
def test_gemma_scope_on_gemma2(tmp_path, gemma2, site, kind, d_in):
    path = tmp_path / f"gemma-scope-2b-pt-{site}" / "layer_1" / "width_16k" / "average_l0_40" / "params.npz"
    write_params(path, d_in, 16384, seed=5)
    sae = load_sae(path, gemma2)
    assert sae.cfg.hook_point == f"{kind}.1"
    latents = assert_attaches(gemma2, sae)
    assert (latents > 0).any()
    if kind == "mlp_out":  # after the post-feedforward norm: exactly what the residual receives
        c = {p: capture(gemma2, p) for p in ("resid_pre.1", "attn_out.1", "mlp_out.1", "resid_post.1")}
        np.testing.assert_allclose(c["resid_pre.1"] + c["attn_out.1"] + c["mlp_out.1"], c["resid_post.1"],
                                   rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("site, sae_width, model_width, meaning", [
    ("att", 64, 96, r"n_heads × head_dim = 4 × 24"),  # a residual-wide SAE at attn_z
    ("mlp", 96, 64, r"d_model, the residual stream's width"),
    ("res", 128, 64, r"d_model"),
])
def test_gemma_scope_wrong_width_is_refused_naming_file_point_and_widths(tmp_path, gemma2, site, sae_width,
                                                                         model_width, meaning):
    path = tmp_path / f"gemma-scope-2b-pt-{site}" / "layer_2" / "width_4k" / "average_l0_9" / "params.npz"
    write_params(path, sae_width, 4096)
    point = {"att": "attn_z.2", "mlp": "mlp_out.2", "res": "resid_post.2"}[site]
    message = (rf"gemma-scope-2b-pt-{site}/layer_2/width_4k/average_l0_9/params\.npz: the SAE reads {sae_width}-wide "
               rf"activations at {point}, but this model's width there is {model_width} \({meaning}")
    with pytest.raises(SAELoadError, match=message):
        load_sae(path, gemma2)
    if sae_width == 128:  # d_mlp wide: it fits the MLP's hidden activation instead
        assert load_sae(path, gemma2, hook_point="mlp_hidden.2").cfg.hook_point == "mlp_hidden.2"
    else:
        with pytest.raises(SAELoadError, match=r"mlp_hidden\.2, but this model's width there is 128 \(d_mlp"):
            load_sae(path, gemma2, hook_point="mlp_hidden.2")


# -- sparsify -----------------------------------------------------------------------------------------
def write_sparsify(run: Path, hookpoint: str, d_in: int = 64, d_sae: int = 128) -> Path:
    rng = np.random.default_rng(2)
    folder = run / hookpoint
    folder.mkdir(parents=True)
    (folder / "cfg.json").write_text(json.dumps({"activation": "topk", "expansion_factor": 2, "normalize_decoder": True,
                                                 "num_latents": d_sae, "k": 8, "multi_topk": False,
                                                 "skip_connection": False, "transcode": False, "d_in": d_in}))
    save_file({"encoder.weight": rng.standard_normal((d_sae, d_in)).astype(np.float32) / 8,
               "encoder.bias": np.zeros(d_sae, np.float32), "W_dec": rng.standard_normal((d_sae, d_in)).astype(np.float32) / 8,
               "b_dec": np.zeros(d_in, np.float32)}, str(folder / "sae.safetensors"))
    return folder


def test_sparsify_modules_must_be_what_the_models_point_reads(tmp_path, gemma2, llama):
    # Gemma 2 normalises the MLP's output before adding it: mlp_out is post_feedforward_layernorm's output
    assert load_sae(write_sparsify(tmp_path / "g", "layers.1.post_feedforward_layernorm"), gemma2).cfg.hook_point == "mlp_out.1"
    assert load_sae(write_sparsify(tmp_path / "g", "layers.1.post_attention_layernorm"), gemma2).cfg.hook_point == "attn_out.1"
    with pytest.raises(SAELoadError, match=r"layers\.1\.mlp/cfg\.json: mlp_out\.1 on this gemma2 model: the SAE read "
                                           r"the output of `mlp`, .*`post_feedforward_layernorm`"):
        load_sae(write_sparsify(tmp_path / "g", "layers.1.mlp"), gemma2)
    # the caller's word stands: naming the point skips the module check
    assert load_sae(tmp_path / "g" / "layers.1.mlp", gemma2, hook_point="mlp_out.1").cfg.hook_point == "mlp_out.1"
    # on a llama the MLP's output is added as is; its post_attention_layernorm is the *pre*-MLP norm
    assert load_sae(write_sparsify(tmp_path / "l", "layers.1.mlp"), llama).cfg.hook_point == "mlp_out.1"
    assert load_sae(write_sparsify(tmp_path / "l", "layers.1.self_attn"), llama).cfg.hook_point == "attn_out.1"
    with pytest.raises(SAELoadError, match=r"attn_out\.1 on this llama model: the SAE read the output of "
                                           r"`post_attention_layernorm`"):
        load_sae(write_sparsify(tmp_path / "l", "layers.1.post_attention_layernorm"), llama)
    with pytest.raises(SAELoadError, match=r"act\(gate\)"):
        load_sae(write_sparsify(tmp_path / "l", "layers.1.mlp.act_fn"))
