"""The memory and decode-time estimate of real configurations (70B class on a 96 GB Mac), built
lazily from published config.json values, against figures computed by hand here."""

from __future__ import annotations

import json

import pytest

from mlx_hooks.config_presets import CHIP_BANDWIDTH_GBS, PRESETS, PUBLISHED_PARAMS, config_from_spec, preset_config
from mlx_hooks.errors import ModelLoadError
from mlx_hooks.memory import GIB, ModelShape, estimate_memory
from mlx_hooks.scale_estimate import estimate_scale, format_scale, paper_model, sae_bytes
from symbiont_app.cli import main

# The published config.json values the presets must carry (written out here, not read from the presets).
PUBLISHED = {
    "llama-3.1-70b": dict(model_type="llama", hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                          num_attention_heads=64, num_key_value_heads=8, head_dim=128, vocab_size=128256,
                          max_position_embeddings=131072, tie_word_embeddings=False, rope_theta=500000.0),
    "qwen2.5-72b": dict(model_type="qwen2", hidden_size=8192, intermediate_size=29568, num_hidden_layers=80,
                        num_attention_heads=64, num_key_value_heads=8, vocab_size=152064,
                        max_position_embeddings=32768, tie_word_embeddings=False, rope_theta=1000000.0),
    "gemma-2-27b": dict(model_type="gemma2", hidden_size=4608, intermediate_size=36864, num_hidden_layers=46,
                        num_attention_heads=32, num_key_value_heads=16, head_dim=128, vocab_size=256000,
                        max_position_embeddings=8192, tie_word_embeddings=True, query_pre_attn_scalar=144,
                        sliding_window=4096, final_logit_softcapping=30.0, attn_logit_softcapping=50.0),
}
BIG = tuple(PUBLISHED)


def hand_count(c: dict) -> tuple[int, int]:
    """(matrix parameters — the quantizable ones —, vector parameters: norms and biases)."""
    d, layers, vocab, heads, kv = (c[k] for k in ("hidden_size", "num_hidden_layers", "vocab_size",
                                                   "num_attention_heads", "num_key_value_heads"))
    hd, f = c.get("head_dim", d // heads), c["intermediate_size"]
    attn = d * heads * hd + 2 * d * kv * hd + heads * hd * d  # q, k, v, o
    mlp = 3 * d * f  # gate, up, down
    embed = vocab * d * (1 if c.get("tie_word_embeddings") else 2)
    norms_per_layer = 4 if c["model_type"] == "gemma2" else 2  # Gemma 2 also norms both sub-layer outputs
    biases = heads * hd + 2 * kv * hd if c["model_type"] == "qwen2" else 0  # Qwen2: q, k, v biases
    return layers * (attn + mlp) + embed, layers * (norms_per_layer * d + biases) + d


@pytest.mark.parametrize("name", BIG)
def test_presets_carry_the_published_config_values(name):
    config = preset_config(name)
    for key, value in PUBLISHED[name].items():
        assert config[key] == value, key


@pytest.mark.parametrize("name", BIG)
def test_parameter_count_matches_the_hand_count_and_the_model_card(name):
    model = paper_model(name, preset_config(name), bits=None)
    matrices, vectors = hand_count(PUBLISHED[name])
    assert model.n_params == matrices + vectors
    assert abs(model.n_params - PUBLISHED_PARAMS[name]) / PUBLISHED_PARAMS[name] < 0.01
    assert model.weights_bytes == 2 * model.n_params  # bfloat16


@pytest.mark.parametrize("name", BIG)
def test_four_bit_weights_are_packed_values_plus_a_scale_and_bias_per_64(name):
    model = paper_model(name, preset_config(name), bits=4)
    matrices, vectors = hand_count(PUBLISHED[name])
    assert model.n_params == matrices + vectors  # counted as the values they encode
    # 4 bits per value, plus a bf16 scale and a bf16 bias per group of 64: 0.5625 bytes per value
    assert model.weights_bytes == matrices * 9 // 16 + 2 * vectors
    d, vocab = PUBLISHED[name]["hidden_size"], PUBLISHED[name]["vocab_size"]
    untied_embedding = 0 if PUBLISHED[name]["tie_word_embeddings"] else vocab * d * 9 // 16
    assert model.read_bytes_per_token == model.weights_bytes - untied_embedding


def test_seventy_b_on_a_96_gb_mac_by_hand():
    model = paper_model("llama-3.1-70b", preset_config("llama-3.1-70b"), bits=4)
    est = estimate_scale(model, context_tokens=8192, capture_points=80, sae_width=131072)
    assert est.memory.kv_cache_bytes == 80 * 2 * 8 * 128 * 8192 * 2  # 2.5 GiB in bf16
    assert est.memory.activation_cache_bytes == 80 * 8192 * 8192 * 2  # 10 GiB
    assert est.sae_bytes == (2 * 8192 * 131072 + 2 * 131072 + 8192) * 4  # ~8 GiB float32
    assert est.budget_bytes == 72 * GIB  # the app's 75% of 96 GiB
    assert est.total_bytes == est.memory.weights_bytes + est.memory.kv_cache_bytes + est.memory.activation_cache_bytes \
        + est.sae_bytes
    assert 57 * GIB < est.total_bytes < 58 * GIB and est.fits
    read = model.read_bytes_per_token + est.memory.kv_cache_bytes + (8192 * 131072 + 2 * 131072 + 8192) * 4  # W_enc, b_enc, threshold, b_dec
    assert est.read_bytes_per_token == read
    assert est.seconds_per_token == pytest.approx(read / 400e9)
    ultra = estimate_scale(model, 8192, 80, sae_width=131072, chip="m2-ultra")
    assert ultra.seconds_per_token == pytest.approx(est.seconds_per_token / 2)
    assert estimate_scale(model, 8192, bandwidth_gbs=100).seconds_per_token == pytest.approx(
        (model.read_bytes_per_token + est.memory.kv_cache_bytes) / 100e9)


def test_verdict_flips_when_the_budget_is_lowered():
    model = paper_model("qwen2.5-72b", preset_config("qwen2.5-72b"), bits=4)
    roomy = estimate_scale(model, 8192, 80, sae_width=131072)
    assert roomy.fits
    needed = roomy.total_bytes / GIB
    assert not estimate_scale(model, 8192, 80, sae_width=131072, budget_gib=needed - 0.5).fits
    assert estimate_scale(model, 8192, 80, sae_width=131072, budget_gib=needed + 0.5).fits
    assert not estimate_scale(model, 8192, 80, sae_width=131072, machine_gib=64).fits  # 48 GiB budget
    assert "does NOT fit (over by" in format_scale(estimate_scale(model, 8192, 80, budget_gib=10))


def test_activation_cache_counts_each_point_at_its_own_width():
    model = paper_model("gemma-2-27b", preset_config("gemma-2-27b"), bits=4)
    per_point = {kind: estimate_scale(model, 1000, 1, kind).memory.activation_cache_bytes
                 for kind in ("resid_post", "resid_pre", "attn_out", "mlp_out", "attn_z", "mlp_hidden")}
    assert per_point["mlp_hidden"] == 36864 * 1000 * 2  # d_mlp, not d_model
    assert per_point["attn_z"] == 32 * 128 * 1000 * 2  # heads × head_dim (4096 here, not D=4608)
    assert {per_point[k] for k in ("resid_post", "resid_pre", "attn_out", "mlp_out")} == {4608 * 1000 * 2}
    sae_at_mlp = estimate_scale(model, 1000, sae_width=1024, sae_kind="mlp_hidden")
    assert sae_at_mlp.sae_bytes == sae_bytes(36864, 1024)


def test_estimate_memory_takes_point_names_at_their_widths():
    shape = ModelShape(10, 20, n_layers=2, d_model=8, n_kv_heads=1, head_dim=4, quantized=False,
                       d_mlp=32, attn_z_width=12)
    est = estimate_memory(shape, "float32", context_tokens=10, capture_points=["mlp_hidden.0", "attn_z.1", "resid_post.1"])
    assert est.activation_cache_bytes == (32 + 12 + 8) * 10 * 4
    assert estimate_memory(shape, "float32", 10, 3).activation_cache_bytes == 3 * 8 * 10 * 4  # a count: residual width
    unknown = ModelShape(10, 20, 2, 8, 1, 4, False)  # widths not given: the residual width, as before
    assert estimate_memory(unknown, "float32", 10, ["mlp_hidden.0"]).activation_cache_bytes == 8 * 10 * 4


def test_cli_prints_the_table_for_a_preset_and_a_config_file(tmp_path, capsys):
    argv = ["models", "estimate", "llama-3.1-70b", "--bits", "4", "--context", "8192", "--capture-points", "80",
            "--sae-width", "131072"]
    assert main(argv) == 0
    preset_out = capsys.readouterr().out
    assert "70.55 B parameters (published 70.6 B)" in preset_out
    assert "KV cache               2.50 GiB" in preset_out and "activation cache      10.00 GiB" in preset_out
    assert "verdict           fits" in preset_out and "m2-max, 400 GB/s" in preset_out
    path = tmp_path / "llama-3.1-70b" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(PRESETS["llama-3.1-70b"]))
    assert main(["models", "estimate", str(path), *argv[3:], "--memory-budget", "40"]) == 0
    file_out = capsys.readouterr().out
    assert "does NOT fit" in file_out and "given: 40 GiB" in file_out
    assert file_out.splitlines()[0] == preset_out.splitlines()[0]  # folder name = the preset's: same card figure


def test_bad_config_files_are_named(tmp_path, capsys):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ModelLoadError, match="config.json: not valid JSON"):
        config_from_spec(str(bad))
    assert main(["models", "estimate", str(tmp_path / "missing.json")]) == 1
    assert "missing.json: cannot read the config" in capsys.readouterr().err
    with pytest.raises(ModelLoadError, match="no preset 'llama-9'"):
        preset_config("llama-9")
    with pytest.raises(ValueError, match="unknown chip"):
        estimate_scale(paper_model("llama-3.2-1b", preset_config("llama-3.2-1b")), chip="m9")
    assert CHIP_BANDWIDTH_GBS["m2-ultra"] == 2 * CHIP_BANDWIDTH_GBS["m2-max"]
