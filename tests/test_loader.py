"""The loader on folders, a fake Hugging Face cache, and bad input (tiny models, no downloads)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlx.core as mx
import pytest

from conftest import save_tiny_folder
from mlx_hooks.errors import MemoryBudgetError, ModelLoadError
from mlx_hooks.fingerprint import fingerprint_model
from mlx_hooks.loader import load_model, model_shape, read_config, resolve_source


def test_resolve_source_kinds(tmp_path, tiny_folder):
    assert resolve_source("default").kind == "default"
    assert resolve_source(str(tiny_folder)).kind == "folder"
    assert resolve_source("HuggingFaceTB/SmolLM2-135M-Instruct").kind == "hub"
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_source(str(gguf)).kind == "gguf"
    with pytest.raises(ModelLoadError, match="missing.gguf: GGUF file not found"):
        resolve_source(str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelLoadError, match="not a Hugging Face repo id"):
        resolve_source(str(tmp_path / "no" / "such" / "dir"))


def test_folder_loads_with_fingerprint_and_cpu_precision(tiny_folder):
    loaded = load_model(str(tiny_folder))
    assert loaded.source.kind == "folder"
    assert loaded.fingerprint.n_layers == 3 and loaded.fingerprint.d_model == 64
    # On the CPU backend, auto picks float32 (measured fastest there)
    expected = "stored" if mx.default_device().type == mx.gpu else "float32"
    assert loaded.runtime_dtype == expected
    # The fingerprint is of the stored weights: loading twice gives the same one
    assert load_model(str(tiny_folder)).fingerprint == loaded.fingerprint
    assert fingerprint_model(loaded.model).weights_hash == loaded.fingerprint.weights_hash


def test_model_shape_counts_parameters(tiny_folder):
    shape = model_shape(tiny_folder, read_config(tiny_folder))
    loaded = load_model(str(tiny_folder))
    from mlx.utils import tree_flatten

    n = sum(v.size for _, v in tree_flatten(loaded.model.parameters()))
    assert shape.n_params == n
    assert shape.n_layers == 3 and shape.n_kv_heads == 2 and shape.head_dim == 16


def test_quantized_folder_counts_encoded_parameters(tmp_path):
    from mlx.utils import tree_flatten
    from mlx_lm.utils import quantize_model, save_config, save_model

    from conftest import make_tiny_llama

    model = make_tiny_llama()
    n = sum(v.size for _, v in tree_flatten(model.parameters()))
    config = {k: v for k, v in vars(model.args).items() if v is not None}
    model, config = quantize_model(model, config, group_size=32, bits=4)
    save_model(tmp_path, model)
    save_config(config, tmp_path / "config.json")
    shape = model_shape(tmp_path, read_config(tmp_path))
    assert shape.quantized
    assert shape.n_params == n
    assert shape.stored_bytes < n * 2  # packed 4-bit plus scales/biases, under fp16 size


def test_budget_refuses_with_numbers(tiny_folder):
    with pytest.raises(MemoryBudgetError, match=r"needs about .* GiB .* over the memory budget of 0\.00 GiB"):
        load_model(str(tiny_folder), memory_budget_bytes=1000)


def test_truncated_weights_named(tmp_path, tiny_folder):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_folder, broken)
    weights = broken / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=r"model\.safetensors: corrupt or truncated"):
        load_model(str(broken))


def test_corrupt_config_named(tmp_path, tiny_folder):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_folder, broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"config\.json: not valid JSON"):
        load_model(str(broken))
    (broken / "config.json").unlink()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(broken))


def test_missing_weights_named(tmp_path, tiny_folder):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_folder, broken)
    for f in broken.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(ModelLoadError, match=r"no \*\.safetensors"):
        load_model(str(broken))


def _fake_hub_cache(cache: Path, repo_id: str, source: Path) -> None:
    """Lay out a folder the way huggingface-hub's cache stores a snapshot."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(source, repo / "snapshots" / commit)


def test_hub_repo_loads_from_cache_offline(tmp_path, tiny_folder, monkeypatch):
    import huggingface_hub.constants as hub_constants

    _fake_hub_cache(tmp_path, "symbiont-tests/tiny-llama", tiny_folder)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    loaded = load_model("symbiont-tests/tiny-llama")
    assert loaded.source.kind == "hub"
    assert loaded.fingerprint == load_model(str(tiny_folder)).fingerprint
    with pytest.raises(ModelLoadError, match="symbiont-tests/absent: not in the local Hugging Face cache"):
        load_model("symbiont-tests/absent")


def test_never_runs_code_from_a_model_folder(tmp_path, tiny_folder):
    evil = tmp_path / "evil"
    shutil.copytree(tiny_folder, evil)
    marker = tmp_path / "code-ran"
    (evil / "tokenization_evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import PreTrainedTokenizerFast\n"
        "class EvilTokenizer(PreTrainedTokenizerFast):\n    pass\n"
    )
    config = json.loads((evil / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": [None, "tokenization_evil.EvilTokenizer"]}
    (evil / "tokenizer_config.json").write_text(json.dumps(config))
    try:
        load_model(str(evil))
    except ModelLoadError:
        pass  # refusing is fine too; running the code is not
    assert not marker.exists()


def test_float32_run_time_weights_are_dequantized_exactly_from_float16_scales():
    """GGUF's scales are float16; dequantizing in their dtype would round every weight through float16."""
    import mlx.core as mx
    import mlx.nn as nn
    import numpy as np
    from conftest import make_tiny_llama

    from mlx_hooks.loader import apply_runtime_dtype

    model = make_tiny_llama()
    nn.quantize(model, group_size=32, bits=4)
    model.set_dtype(mx.float16)  # scales and biases as a GGUF file stores them
    proj = model.model.layers[0].mlp.down_proj
    w, s, b = proj.weight, proj.scales.astype(mx.float32), proj.biases.astype(mx.float32)
    exact = np.array(mx.dequantize(w, s, b, group_size=32, bits=4))
    apply_runtime_dtype(model, "float32")
    got = model.model.layers[0].mlp.down_proj.weight
    assert got.dtype == mx.float32
    assert np.array_equal(np.array(got), exact)
    rounded = np.array(mx.dequantize(w, s.astype(mx.float16), b.astype(mx.float16), group_size=32, bits=4))
    assert not np.array_equal(rounded.astype(np.float32), exact)  # the float16 path really differs
