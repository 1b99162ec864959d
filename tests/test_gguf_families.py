"""GGUF files of every supported family convert back to the mlx-lm model they came from.

Each tiny random model (tests/tiny_models.py) is written as llama.cpp would write it
(tests/gguf_fixtures.py), converted, loaded with ``mlx_lm.load`` and run: in float32
the logits must equal the original's; in Q8_0 they must equal those of the same
model with gguf's own dequantized weights.
"""

from __future__ import annotations

import dataclasses
import json

import mlx.core as mx
import mlx_lm
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf_fixtures import write_model_gguf
from mlx.utils import tree_map
from mlx_lm.utils import dequantize_model
from tiny_models import CONFIGS, HEAD_DIM, VOCAB, make_model, model_classes

from mlx_hooks import gguf_arch
from mlx_hooks.errors import GGUFError
from mlx_hooks.gguf_convert import convert_gguf, inspect_gguf

FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2", "gemma3_text", "gemma3"]
CONVERTED_TYPE = {"mistral": "llama", "gemma3": "gemma3_text"}
IDS = [5, 17, 200, 3, 99, 99, 42, 7, 250, 1, 64, 128, 30, 31, 2, 77, 150, 9, 12, 240]  # 20 > the sliding window (8)


pytestmark = pytest.mark.usefixtures("private_cache")  # conftest: a cache folder of this module's own


def logits(model, ids=IDS) -> np.ndarray:
    return np.array(model(mx.array(ids)[None])[0].astype(mx.float32))


def load_float32(folder):
    """The converted model dequantized exactly: scales and biases widened to float32 first
    (``mx.dequantize`` returns their dtype, float16, which would round every weight)."""
    model, tok = mlx_lm.load(str(folder))
    model.update(tree_map(lambda a: a.astype(mx.float32) if mx.issubdtype(a.dtype, mx.floating) else a,
                          model.parameters()))
    dequantize_model(model)
    return model, tok


def reference_model(model_type: str, weights):
    model_cls, args_cls = model_classes(model_type)
    ref = model_cls(args_cls.from_dict(dict(CONFIGS[model_type])))
    ref.load_weights(weights)
    return ref


@pytest.mark.parametrize("model_type", FAMILIES)
def test_float32_family_round_trips(model_type, tmp_path):
    model = make_model(model_type)
    write_model_gguf(tmp_path / "m.gguf", model, model_type)
    info = inspect_gguf(tmp_path / "m.gguf")
    assert info.model_type == CONVERTED_TYPE.get(model_type, model_type)
    out = convert_gguf(tmp_path / "m.gguf", tmp_path / "out")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == info.model_type and "quantization" not in config
    converted, _ = mlx_lm.load(str(out))
    # Same logits as the model written (measured max |diff|: 0 for every family).
    np.testing.assert_allclose(logits(converted), logits(model), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("model_type", FAMILIES)
def test_q8_0_family_matches_dequantized_reference(model_type, tmp_path):
    model = make_model(model_type)
    reference = reference_model(model_type, write_model_gguf(tmp_path / "m.gguf", model, model_type, Q.Q8_0))
    converted, _ = load_float32(convert_gguf(tmp_path / "m.gguf", tmp_path / "out"))
    # Q8_0 codes and scales are carried over exactly: the same weights, the same logits
    # (measured max |diff|: 0 for every family, while quantization itself moves them by 0.05-0.3).
    np.testing.assert_allclose(logits(converted), logits(reference), rtol=1e-4, atol=1e-4)


def test_gemma3_sliding_window_and_rope_bases(tmp_path, variant):
    model = make_model("gemma3_text")
    write_model_gguf(tmp_path / "g.gguf", model, "gemma3_text")
    config = inspect_gguf(tmp_path / "g.gguf").config
    assert (config["sliding_window"], config["sliding_window_pattern"]) == (8, 2)
    assert (config["rope_theta"], config["rope_local_base_freq"]) == (1e6, 10000.0)
    assert config["query_pre_attn_scalar"] == HEAD_DIM
    # Without the per-layer flags (older files), llama.cpp's fixed pattern of 6 applies.
    write_model_gguf(tmp_path / "six.gguf", variant("gemma3_text", sliding_window_pattern=6), "gemma3_text")
    assert inspect_gguf(tmp_path / "six.gguf").config["sliding_window_pattern"] == 6


def test_checks_catch_wrong_gemma_norms(tmp_path, monkeypatch):
    """The float32 comparison above fails if the w + 1 norm offset is not undone."""
    model = make_model("gemma3_text")
    write_model_gguf(tmp_path / "g.gguf", model, "gemma3_text")
    broken = dataclasses.replace(gguf_arch.FAMILIES["gemma3"], norm_offset=0.0)
    monkeypatch.setitem(gguf_arch.FAMILIES, "gemma3", broken)
    converted, _ = mlx_lm.load(str(convert_gguf(tmp_path / "g.gguf", tmp_path / "out")))
    assert np.abs(logits(converted) - logits(model)).max() > 0.1


def test_checks_catch_swapped_post_norms(tmp_path, monkeypatch):
    model = make_model("gemma2")
    write_model_gguf(tmp_path / "g.gguf", model, "gemma2")
    names = dict(gguf_arch.FAMILIES["gemma2"].layer_names)
    names["post_attention_norm"], names["post_ffw_norm"] = names["post_ffw_norm"], names["post_attention_norm"]
    broken = dataclasses.replace(gguf_arch.FAMILIES["gemma2"], layer_names=names)
    monkeypatch.setitem(gguf_arch.FAMILIES, "gemma2", broken)
    converted, _ = mlx_lm.load(str(convert_gguf(tmp_path / "g.gguf", tmp_path / "out")))
    assert np.abs(logits(converted) - logits(model)).max() > 0.1


@pytest.fixture
def variant(monkeypatch):
    """A tiny model with config changes: ``variant("qwen2", rope_scaling=...)``, same weights as make_model."""
    def make(model_type, **changes):
        monkeypatch.setitem(CONFIGS, model_type, {**CONFIGS[model_type], **changes})
        return make_model(model_type, seed=3)
    return make


def test_llama3_rope_scaling_from_rope_freqs(tmp_path, variant):
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
    model = variant("llama", rope_scaling=scaling, rope_theta=500000.0)
    dims, base = HEAD_DIM, 500000.0
    wavelen = 2 * np.pi * base ** (np.arange(0, dims, 2) / dims)
    smooth = (8192 / wavelen - 1) / 3
    factors = np.where(wavelen < 2048, 1.0, np.where(wavelen > 8192, 8.0, 1 / ((1 - smooth) / 8 + smooth)))
    assert 1.0 < factors[4] < 8.0 and factors[-1] == 8.0  # the tiny head has all three regimes
    write_model_gguf(tmp_path / "l.gguf", model, "llama", extra={"rope_freqs.weight": factors})
    out = convert_gguf(tmp_path / "l.gguf", tmp_path / "out")
    assert json.loads((out / "config.json").read_text())["rope_scaling"] == scaling
    converted, _ = mlx_lm.load(str(out))
    rope = converted.model.layers[0].self_attn.rope
    np.testing.assert_allclose(np.array(rope._freqs), base ** (np.arange(0, dims, 2) / dims) * factors, rtol=1e-5)
    np.testing.assert_allclose(logits(converted), logits(model), rtol=1e-4, atol=1e-4)
    # Factors that no Llama 3 parameters produce are refused.
    write_model_gguf(tmp_path / "odd.gguf", model, "llama", extra={"rope_freqs.weight": factors[::-1]})
    with pytest.raises(GGUFError, match=r"odd\.gguf.*rope_freqs does not match Llama 3"):
        inspect_gguf(tmp_path / "odd.gguf")


def test_linear_rope_scaling(tmp_path, variant):
    model = variant("qwen2", rope_scaling={"type": "linear", "factor": 4.0})
    meta = lambda w: (w.add_rope_scaling_type(gguf_rope("linear")), w.add_rope_scaling_factor(4.0))  # noqa: E731
    write_model_gguf(tmp_path / "q.gguf", model, "qwen2", meta=meta)
    converted, _ = mlx_lm.load(str(convert_gguf(tmp_path / "q.gguf", tmp_path / "out")))
    assert converted.model.layers[0].self_attn.rope.scale == 0.25
    np.testing.assert_allclose(logits(converted), logits(model), rtol=1e-4, atol=1e-4)


def test_phi3_partial_rotary_and_longrope(tmp_path, variant):
    long = [1.0 + i / 4 for i in range(HEAD_DIM // 4)]  # half the head rotates: 8 dims, 4 factors
    short = [1.0] * (HEAD_DIM // 4)
    model = variant("phi3", partial_rotary_factor=0.5, max_position_embeddings=512,
                    original_max_position_embeddings=128,
                    rope_scaling={"type": "longrope", "long_factor": long, "short_factor": short})
    attn = float(np.sqrt(1 + np.log(512 / 128) / np.log(128)))
    meta = lambda w: (w.add_rope_scaling_orig_ctx_len(128), w.add_rope_scaling_attn_factors(attn))  # noqa: E731
    write_model_gguf(tmp_path / "p.gguf", model, "phi3", meta=meta,
                     extra={"rope_factors_long.weight": long, "rope_factors_short.weight": short})
    out = convert_gguf(tmp_path / "p.gguf", tmp_path / "out")
    config = json.loads((out / "config.json").read_text())
    assert config["partial_rotary_factor"] == 0.5 and config["rope_scaling"]["long_factor"] == long
    converted, _ = mlx_lm.load(str(out))
    np.testing.assert_allclose(logits(converted), logits(model), rtol=1e-4, atol=1e-4)


def gguf_rope(kind: str):
    import gguf

    return {"linear": gguf.RopeScalingType.LINEAR, "yarn": gguf.RopeScalingType.YARN}[kind]


REFUSALS = {
    # name: (model_type, write_model_gguf keyword arguments, expected message)
    "arch": ("llama", dict(meta=lambda w: w.add_string("general.architecture", "mamba")), r"architecture 'mamba'"),
    "moe": ("llama", dict(meta=lambda w: w.add_expert_count(8)), r"mixture-of-experts"),
    "partial": ("llama", dict(meta=lambda w: w.add_rope_dimension_count(8)), r"partial rotary"),
    "yarn": ("qwen2", dict(meta=lambda w: w.add_rope_scaling_type(gguf_rope("yarn"))), r"rope scaling 'yarn'"),
    "missing": ("qwen3", dict(drop={"blk.2.attn_k_norm.weight"}), r"'blk\.2\.attn_k_norm\.weight' is missing"),
    "no-bias": ("qwen2", dict(drop={"blk.0.attn_q.bias"}), r"'blk\.0\.attn_q\.bias' is missing"),
    "extra": ("llama", dict(extra={"blk.0.mystery.weight": np.ones(4)}), r"tensor 'blk\.0\.mystery\.weight'"),
    "untied-gemma2": ("gemma2", dict(extra={"output.weight": np.ones((VOCAB, 64))}), r"separate output\.weight"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_unrepresentable_files_refused_before_work(case, tmp_path):
    model_type, kwargs, message = REFUSALS[case]
    path = tmp_path / f"{case}.gguf"
    write_model_gguf(path, make_model(model_type), model_type, **kwargs)
    with pytest.raises(GGUFError, match=rf"{case}\.gguf: .*{message}"):
        inspect_gguf(path)
    with pytest.raises(GGUFError):
        convert_gguf(path, tmp_path / "cache" / "out")
    assert not (tmp_path / "cache").exists() or list((tmp_path / "cache").iterdir()) == []
