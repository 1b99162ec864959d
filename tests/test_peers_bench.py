"""The pure helpers of benchmarks/peers.py: the Hugging Face folder the peers load, the
shared data and the ratios line. (The benchmark itself is run by hand: it times things.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import peers_data  # noqa: E402
from tiny_models import CONFIGS, make_model  # noqa: E402


def test_hf_folder_round_trips_the_weights_and_loads_in_mlx_lm(tmp_path):
    from mlx_lm.utils import load_model

    model = make_model("llama", seed=3)
    weights = peers_data.model_weights(model)
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "tokenizer_config.json").write_text("{}")
    config = {**CONFIGS["llama"], "quantization": {"bits": 4, "group_size": 32}, "rope_traditional": False}
    folder = peers_data.write_hf_folder(weights, config, tmp_path / "tok", tmp_path / "hf")

    back = peers_data.read_hf_weights(folder)
    assert set(back) == set(weights)
    for name, value in weights.items():
        assert back[name].dtype == np.float32
        np.testing.assert_array_equal(back[name], value)
    written = json.loads((folder / "config.json").read_text())
    assert "quantization" not in written and "rope_traditional" not in written
    assert written["architectures"] == ["LlamaForCausalLM"] and written["torch_dtype"] == "float32"
    assert (folder / "tokenizer_config.json").is_file()
    # mlx-lm reads the folder back to the same function: identical logits on the same ids
    reloaded, _ = load_model(folder)
    ids = mx.array([[1, 5, 9, 200, 7]])
    np.testing.assert_array_equal(np.array(reloaded(ids)), np.array(model(ids)))


def test_hf_folder_refuses_quantized_models_and_nonfinite_weights(tmp_path):
    model = make_model("llama")
    weights = peers_data.model_weights(model)
    name = next(iter(weights))
    weights[name] = weights[name].copy()
    weights[name][0, 0] = np.nan
    with pytest.raises(ValueError, match=name):
        peers_data.write_hf_folder(weights, dict(CONFIGS["llama"]), None, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
    with pytest.raises(ValueError, match="llama"):
        peers_data.hf_config({**CONFIGS["qwen3"]})
    import mlx.nn as nn

    nn.quantize(model, group_size=32, bits=4)
    with pytest.raises(ValueError, match="still quantized"):
        peers_data.model_weights(model)


def test_ratios_line_and_summary():
    assert peers_data.ratios_line(1.234, 0.5, None, float("nan")) == "ratios: sae=1.23 lora=0.50 generate=n/a forward=n/a"
    assert peers_data.summary([3.0, 1.0, 2.0]) == (3.0, 2.0)
    with pytest.raises(ValueError):
        peers_data.summary([])


def test_lora_dataset_is_chat_records(tmp_path):
    folder = peers_data.write_lora_dataset(tmp_path / "d", n_train=5)
    lines = (folder / "train.jsonl").read_text().splitlines()
    assert len(lines) == 5
    roles = [m["role"] for m in json.loads(lines[0])["messages"]]
    assert roles == ["user", "assistant"]
    assert (folder / "valid.jsonl").is_file()



def test_without_a_peer_interpreter_it_says_why(monkeypatch, tmp_path):
    import peers

    monkeypatch.delenv("SYMBIONT_PEERS_PYTHON", raising=False)
    monkeypatch.setattr(peers.importlib.util, "find_spec", lambda name: None)  # as if this interpreter had no torch
    assert peers.find_peers_python(None) == (None, "none given and this interpreter has no torch")
    # an interpreter without the peer libraries is refused, naming it and the failed import
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'nnsight'\" >&2\nexit 1\n")
    fake.chmod(0o755)
    python, why = peers.find_peers_python(str(fake))
    assert python is None and str(fake) in why and "No module named 'nnsight'" in why
    python, why = peers.find_peers_python(str(tmp_path / "missing"))
    assert python is None and "missing" in why
    assert "--peers-python" in peers.HOW_TO_GET_PEERS
