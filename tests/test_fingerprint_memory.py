"""Model fingerprints, memory estimates and the memory budget."""

from __future__ import annotations

import re

import mlx.core as mx
import numpy as np
import pytest
from conftest import make_tiny_llama

from mlx_hooks import MemoryBudgetError, ModelFingerprint, fingerprint_model
from mlx_hooks import memory
from mlx_hooks.memory import MemoryEstimate, ModelShape, check_budget, default_budget_bytes, estimate_memory

GIB = 2**30


# -- fingerprints -------------------------------------------------------------------------------


def test_fingerprint_describes_the_model(tiny_model):
    fp = fingerprint_model(tiny_model)
    assert (fp.architecture, fp.d_model, fp.n_layers, fp.n_heads, fp.n_kv_heads, fp.d_mlp, fp.vocab_size) == (
        "llama", 64, 3, 4, 2, 128, 259)
    assert re.fullmatch(r"[0-9a-f]{64}", fp.weights_hash)
    assert fp.short == f"llama-3L-64d-{fp.weights_hash[:12]}"


def test_fingerprint_is_stable(tiny_model):
    first = fingerprint_model(tiny_model)
    assert fingerprint_model(tiny_model) == first
    assert fingerprint_model(make_tiny_llama(seed=0)) == first  # same weights, new objects


@pytest.mark.parametrize("name,index", [
    ("input_layernorm", 3),  # a small tensor: every element is hashed
    ("embed_tokens", 0),  # a large (sampled) tensor: its first element is always sampled
])
def test_fingerprint_changes_with_one_weight_element(tiny_model, name, index):
    before = fingerprint_model(tiny_model)
    if name == "embed_tokens":
        module = tiny_model.model.embed_tokens
    else:
        module = tiny_model.model.layers[1].input_layernorm
    w = np.array(module.weight)
    w.reshape(-1)[index] += 0.25
    module.weight = mx.array(w)
    after = fingerprint_model(tiny_model)
    assert after.weights_hash != before.weights_hash
    assert after.same_architecture(before)
    assert after.differences(before) == [f"weights_hash: {after.weights_hash} != {before.weights_hash}"]


def test_fingerprint_depends_on_dtype():
    f32 = fingerprint_model(make_tiny_llama())
    bf16 = fingerprint_model(make_tiny_llama(dtype=mx.bfloat16))
    assert f32.weights_hash != bf16.weights_hash
    assert f32.same_architecture(bf16)
    assert fingerprint_model(make_tiny_llama(dtype=mx.bfloat16)) == bf16


def test_same_architecture_and_differences():
    a, b = fingerprint_model(make_tiny_llama(seed=0)), fingerprint_model(make_tiny_llama(seed=1))
    assert a.weights_hash != b.weights_hash
    assert a.same_architecture(b) and b.same_architecture(a)
    narrow = fingerprint_model(make_tiny_llama(hidden=32))
    assert not a.same_architecture(narrow)
    diffs = a.differences(narrow)
    assert "d_model: 64 != 32" in diffs
    assert "d_mlp: 128 != 64" in diffs
    assert any(d.startswith("weights_hash: ") for d in diffs)
    assert not any(d.startswith(("n_layers", "vocab_size", "architecture")) for d in diffs)
    deeper = fingerprint_model(make_tiny_llama(layers=2))
    assert not a.same_architecture(deeper)
    assert "n_layers: 3 != 2" in a.differences(deeper)
    assert a.differences(a) == []


def test_fingerprint_dict_round_trip(tiny_model):
    fp = fingerprint_model(tiny_model)
    data = fp.to_dict()
    assert set(data) == {"architecture", "d_model", "n_layers", "n_heads", "n_kv_heads", "d_mlp", "vocab_size",
                         "weights_hash"}
    assert ModelFingerprint.from_dict(data) == fp
    assert ModelFingerprint.from_dict({**data, "extra": 1}) == fp  # unknown keys are ignored
    import json
    assert ModelFingerprint.from_dict(json.loads(json.dumps(data))) == fp
    partial = {k: v for k, v in data.items() if k not in ("d_model", "weights_hash")}
    with pytest.raises(ValueError, match=r"\['d_model', 'weights_hash'\]"):
        ModelFingerprint.from_dict(partial)


# -- memory estimates ---------------------------------------------------------------------------

SHAPE = ModelShape(n_params=1_000_000, stored_bytes=600_000, n_layers=4, d_model=256, n_kv_heads=2, head_dim=32,
                   quantized=True, stored_dtype="bfloat16")


def test_estimate_memory_at_a_float_dtype():
    est = estimate_memory(SHAPE, "float32", context_tokens=1000, capture_points=3)
    assert est.weights_bytes == 1_000_000 * 4
    assert est.kv_cache_bytes == 2 * 4 * 2 * 32 * 1000 * 4
    assert est.activation_cache_bytes == 3 * 1000 * 256 * 4
    assert est.total_bytes == est.weights_bytes + est.kv_cache_bytes + est.activation_cache_bytes
    assert (est.context_tokens, est.runtime_dtype) == (1000, "float32")
    half = estimate_memory(SHAPE, "float16", context_tokens=1000, capture_points=3)
    assert half.total_bytes * 2 == est.total_bytes
    assert estimate_memory(SHAPE, "bfloat16", 1000, 3) == MemoryEstimate(*(x // 2 for x in (
        est.weights_bytes, est.kv_cache_bytes, est.activation_cache_bytes)), 1000, "bfloat16")


def test_estimate_memory_keeping_stored_weights():
    est = estimate_memory(SHAPE, "stored", context_tokens=10)
    assert est.weights_bytes == 600_000
    assert est.kv_cache_bytes == 2 * 4 * 2 * 32 * 10 * 2  # activations at the stored float dtype (bf16)
    assert est.activation_cache_bytes == 0
    f32_stored = estimate_memory(ModelShape(10, 40, 1, 8, 1, 8, False, "float32"), "stored", context_tokens=2,
                                 capture_points=1)
    assert (f32_stored.weights_bytes, f32_stored.kv_cache_bytes, f32_stored.activation_cache_bytes) == (40, 128, 64)


def test_estimate_default_context_and_describe():
    est = estimate_memory(SHAPE, "float16")
    assert est.context_tokens == 4096 and est.activation_cache_bytes == 0
    text = estimate_memory(ModelShape(GIB, GIB, 1, 1, 1, 1, False), "float16", context_tokens=1).describe()
    assert text.startswith("weights 2.00 GiB (float16) + KV cache 0.00 GiB (1 tokens)")
    assert text.endswith("= 2.00 GiB")


def test_check_budget():
    est = MemoryEstimate(weights_bytes=3 * GIB, kv_cache_bytes=GIB // 2, activation_cache_bytes=GIB // 4,
                         context_tokens=2048, runtime_dtype="bfloat16")
    check_budget(est, None, "model")  # no budget
    check_budget(est, est.total_bytes, "model")  # exactly fits
    with pytest.raises(MemoryBudgetError) as info:
        check_budget(est, 2 * GIB, "loading tiny-llama")
    message = str(info.value)
    assert message.startswith("loading tiny-llama: needs about 3.75 GiB")
    assert "budget of 2.00 GiB" in message
    assert "weights 3.00 GiB (bfloat16) + KV cache 0.50 GiB (2048 tokens) + activation cache 0.25 GiB" in message
    assert "SYMBIONT_MEMORY_BUDGET_GB" in message


def test_default_budget_reads_the_environment(monkeypatch, tmp_path):
    # alone on the machine (no other Symbiont process's claims), no Metal limit (tests/test_memory_budget.py has those)
    monkeypatch.setenv("SYMBIONT_MEMORY_CLAIMS_DIR", str(tmp_path / "claims"))
    monkeypatch.setattr(memory, "metal_working_set_bytes", lambda: None)
    monkeypatch.setenv("SYMBIONT_MEMORY_BUDGET_GB", "1.5")
    assert default_budget_bytes() == int(1.5 * GIB)
    monkeypatch.setenv("SYMBIONT_MEMORY_BUDGET_GB", "24")
    assert default_budget_bytes() == 24 * GIB
    monkeypatch.delenv("SYMBIONT_MEMORY_BUDGET_GB")
    monkeypatch.setattr(memory, "physical_memory_bytes", lambda: 64 * GIB)
    assert default_budget_bytes() == 48 * GIB
    monkeypatch.setenv("SYMBIONT_MEMORY_BUDGET_GB", "")  # empty: the default
    assert default_budget_bytes() == 48 * GIB


def test_physical_memory_is_positive():
    assert memory.physical_memory_bytes() > 0


@pytest.mark.parametrize("field,value", [("architecture", "mistral"), ("d_model", 65), ("n_layers", 4), ("n_heads", 8),
                                         ("n_kv_heads", 4), ("d_mlp", 256), ("vocab_size", 32000)])
def test_any_shape_field_breaks_same_architecture(tiny_model, field, value):
    import dataclasses

    fp = fingerprint_model(tiny_model)
    other = dataclasses.replace(fp, **{field: value})
    assert not fp.same_architecture(other)
    assert fp.differences(other) == [f"{field}: {getattr(fp, field)} != {value}"]
    assert fp.same_architecture(dataclasses.replace(fp, weights_hash="0" * 64))


def test_estimate_refuses_unknown_dtype():
    from mlx_hooks.memory import ModelShape, estimate_memory

    shape = ModelShape(n_params=10, stored_bytes=20, n_layers=1, d_model=4, n_kv_heads=1, head_dim=4, quantized=False)
    with pytest.raises(ValueError, match="runtime dtype 'int8'"):
        estimate_memory(shape, "int8")
