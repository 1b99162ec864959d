"""Readers of untrusted files: bounded before allocating (GGUF headers, preset zips), control
vectors imported as presets, and command-line values refused before a model loads."""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from conftest import make_tiny_llama

from mlx_hooks import hooked
from mlx_hooks.control_vector import ControlVectorItem, read_control_vector, write_control_vector
from mlx_hooks.errors import GGUFError
from mlx_hooks.fingerprint import fingerprint_model
from mlx_hooks.gguf_header import check_gguf_header
from mlx_hooks.preset_apply import apply_preset
from mlx_hooks.presets import ARCHIVE_JSON, ARCHIVE_VECTORS, PresetError, read_preset, write_preset
from mlx_hooks.steering import SteeringVector
from symbiont_app.cli import main

D = 64


@pytest.fixture(scope="module")
def model():
    return make_tiny_llama(layers=4)


def _control_vector(path: Path, n_layers=4, hint="llama") -> dict[int, np.ndarray]:
    rng = np.random.default_rng(0)
    a = SteeringVector("a", "resid_post.1", rng.standard_normal(D).astype(np.float32))
    last = min(3, n_layers - 1)
    b = SteeringVector("b", f"resid_post.{last}", rng.standard_normal(D).astype(np.float32))
    write_control_vector(path, [ControlVectorItem(a, 2.5, relative=False), ControlVectorItem(b, -0.75, relative=False)],
                         model_hint=hint, n_layers=n_layers)
    return {1: 2.5 * a.unit(), last: -0.75 * b.unit()}


# -- control vectors --------------------------------------------------------------------------------
def test_a_control_vector_imports_as_the_preset_llama_cpp_would_apply(model, tmp_path):
    expected = _control_vector(tmp_path / "cv.gguf")
    preset = read_control_vector(tmp_path / "cv.gguf", fingerprint=fingerprint_model(model), model_name="tiny")
    # direction.2 is all zeros (nothing steered there): left out
    assert [(e.hook_point, e.relative, e.positions) for e in preset.steering] == [
        ("resid_post.1", False, "all"), ("resid_post.3", False, "all")]
    applied = apply_preset(preset, model, fingerprint_model(model))
    tokens = mx.array([[5, 9, 77, 120]])
    with hooked(model, capture=["resid_post.1", "resid_post.3"]) as plain:
        model(tokens)
    with hooked(model, capture=["resid_post.1", "resid_post.3"], interventions=applied.interventions) as steered:
        model(tokens)
    # what the steering adds at each point is exactly direction.N (resid_post.3 also carries layer 1's change,
    # so compare resid_post.1 exactly and check resid_post.3's steered value against a one-point run)
    added = np.array(steered.recorder.stack("resid_post.1")[0]) - np.array(plain.recorder.stack("resid_post.1")[0])
    np.testing.assert_allclose(added, np.broadcast_to(expected[1], added.shape), rtol=1e-5, atol=1e-5)
    # a saved preset round-trips
    write_preset(tmp_path / "cv.symbiont-preset", preset)
    again = read_preset(tmp_path / "cv.symbiont-preset")
    assert [(e.hook_point, e.coefficient) for e in again.steering] == [(e.hook_point, e.coefficient) for e in preset.steering]


def test_control_vector_refusals_name_the_file(model, tmp_path):
    fp = fingerprint_model(model)
    _control_vector(tmp_path / "gemma.gguf", hint="gemma2")
    with pytest.raises(PresetError, match=r"gemma\.gguf: controlvector\.model_hint is 'gemma2', but tiny is a 'llama'"):
        read_control_vector(tmp_path / "gemma.gguf", fingerprint=fp, model_name="tiny")
    _control_vector(tmp_path / "deep.gguf", n_layers=9)
    with pytest.raises(PresetError, match=r"deep\.gguf: direction\.4 is outside tiny's blocks 1\.\.3"):
        read_control_vector(tmp_path / "deep.gguf", fingerprint=fp, model_name="tiny")
    (tmp_path / "junk.gguf").write_bytes(b"GGUF" + b"\x03\0\0\0" + b"\xff" * 40)
    with pytest.raises(GGUFError, match=r"junk\.gguf: not a valid GGUF file"):
        read_control_vector(tmp_path / "junk.gguf", fingerprint=fp, model_name="tiny")


def test_cli_preset_import_reads_a_control_vector(tiny_folder, tmp_path, capsys):
    _control_vector(tmp_path / "cv.gguf", n_layers=3)
    out = tmp_path / "cv.symbiont-preset"
    assert main(["preset", "import", str(tmp_path / "cv.gguf"), "--model", str(tiny_folder), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "llama.cpp control vector, 2 direction(s) at resid_post.1, resid_post.2" in text, text
    assert "ok: 2 intervention(s)" in text
    assert read_preset(out).steering[0].hook_point == "resid_post.1"
    (tmp_path / "notes.gguf").write_bytes(b"not a gguf at all, but long enough to have a header")
    assert main(["preset", "import", str(tmp_path / "notes.gguf"), "--model", str(tiny_folder)]) == 1
    err = capsys.readouterr().err
    assert "notes.gguf: not a valid GGUF file: magic" in err and "loading" not in err  # before the model loads


# -- GGUF headers -----------------------------------------------------------------------------------
def _gguf(kvs: bytes, n_kv: int, tensors: bytes = b"", n_tensors: int = 0, tail: bytes = b"") -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv) + kvs + tensors + tail


def _key(name: str) -> bytes:
    return struct.pack("<Q", len(name)) + name.encode()


@pytest.mark.parametrize("data, message", [
    # an array whose length field says 2^40: gguf-py walked it past the end of the file without end
    (_gguf(_key("tokenizer.ggml.scores") + struct.pack("<IIQ", 9, 6, 2**40) + b"\0" * 64, 1),
     "tokenizer.ggml.scores (1099511627776 items of 4 bytes) needs 4398046511104 bytes"),
    (_gguf(_key("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2**40) + b"\0" * 64, 1),
     "tokenizer.ggml.tokens (1099511627776 items of at least 8 bytes)"),
    (_gguf(b"", 2**50), "1125899906842624 key/value pairs"),
    (_gguf(struct.pack("<Q", 2**60) + b"\0" * 16, 1), "key 0 claims 1152921504606846976 bytes"),
    (_gguf(_key("general.name") + struct.pack("<IQ", 8, 2**33) + b"abc", 1), "general.name needs 8589934592 bytes"),
    (_gguf(_key("x") + struct.pack("<I", 99) + b"\0" * 8, 1), "x has unknown value type 99"),
    (_gguf(b"", 0, _key("w") + struct.pack("<IQIQ", 1, 2**40, 0, 0), 1), "dimensions [1099511627776], impossible"),
    (_gguf(b"", 0, _key("w") + struct.pack("<IQIQ", 9, 4, 0, 0), 1), "has 9 dimensions"),
    (_gguf(b"", 0, _key("w") + struct.pack("<IQIQ", 1, 64, 0, 0), 1), "claims bytes"),
    (_gguf(b"", 0, _key("w") + struct.pack("<IQIQ", 1, 4, 77, 0), 1), "unknown type 77"),
    (b"GGUF" + struct.pack("<IQQ", 1, 0, 0), "GGUF version 1"),
    (b"GGML" + b"\0" * 40, "magic b'GGML'"),
])
def test_gguf_header_claims_are_checked_against_the_file_size(tmp_path, data, message):
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    with pytest.raises(GGUFError) as info:
        check_gguf_header(path)
    assert str(path) in str(info.value) and message in str(info.value), str(info.value)


def test_a_valid_gguf_passes(tmp_path):
    _control_vector(tmp_path / "cv.gguf")
    summary = check_gguf_header(tmp_path / "cv.gguf")
    assert (summary.version, summary.tensor_count) == (3, 3)


# -- preset archives --------------------------------------------------------------------------------
def _zip(path: Path, entries: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> None:
    with zipfile.ZipFile(path, "w", compression=method) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)


def test_a_zip_bomb_preset_is_refused_before_inflating(tmp_path, monkeypatch):
    import mlx_hooks.presets as presets

    # the real limit is 1 GiB; a 4 MiB one makes the same check without deflating a gigabyte here
    monkeypatch.setattr(presets, "MAX_VECTORS_BYTES", 4 * 2**20)
    path = tmp_path / "bomb.symbiont-preset"
    _zip(path, {ARCHIVE_JSON: b"{}", ARCHIVE_VECTORS: b"\0" * (64 * 2**20) + b"x"})  # 64 KiB on disk, 64 MiB inflated
    assert path.stat().st_size < 2**17
    with pytest.raises(PresetError, match=r"bomb\.symbiont-preset!vectors\.safetensors: inflates to 67108865 bytes"):
        read_preset(path)
    monkeypatch.undo()
    _zip(path, {ARCHIVE_JSON: b" " * (17 * 2**20)})
    with pytest.raises(PresetError, match=r"preset\.json: inflates to 17825792 bytes"):
        read_preset(path)


def test_a_zip_whose_directory_lies_about_sizes_is_refused(tmp_path):
    buffer = io.BytesIO()
    _zip(buffer, {ARCHIVE_JSON: b'{"schema_version": 2}'}, method=zipfile.ZIP_STORED)
    data = bytearray(buffer.getvalue())
    central = data.rfind(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, 5)  # the directory's uncompressed size: 5, not 21
    path = tmp_path / "liar.symbiont-preset"
    path.write_bytes(bytes(data))
    with pytest.raises(PresetError, match=r"liar\.symbiont-preset"):
        read_preset(path)


def test_oversized_preset_files_are_not_read(tmp_path):
    path = tmp_path / "big.json"
    with open(path, "wb") as handle:
        handle.truncate(17 * 2**20)  # sparse: no disk used
    with pytest.raises(PresetError, match=r"big\.json: 17825792 bytes, more than a preset document can be"):
        read_preset(path)


# -- command-line values ------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["chat", "--prompt", "hi", "--temp", "nan"], "argument --temp: must be a finite number >= 0, got 'nan'"),
    (["chat", "--prompt", "hi", "--temp", "inf"], "argument --temp: must be a finite number >= 0, got 'inf'"),
    (["chat", "--prompt", "hi", "--top-p", "nan"], "argument --top-p: must lie in [0, 1], got 'nan'"),
    (["chat", "--prompt", "hi", "--top-k", "-3"], "argument --top-k: must be a whole number >= 0, got '-3'"),
    (["chat", "--prompt", "hi", "--seed", "-1"], "argument --seed: must be a whole number in [0, 2^64), got '-1'"),
    (["chat", "--prompt", "hi", "--max-tokens", "0"], "argument --max-tokens: must be a whole number >= 1"),
    (["chat", "--prompt", "hi", "--memory-budget", "nan"], "argument --memory-budget: must be a finite number > 0"),
    (["chat", "--prompt", "caf\udce9"], "argument --prompt: not valid UTF-8 text (undecodable bytes b'\\xe9'"),
    (["lens", "--prompt", ""], "argument --prompt: must not be empty"),
    (["patch", "--clean", "a", "--corrupted", "b", "--answers", "", " Rome"], "argument --answers: must not be empty"),
    (["models", "estimate", "--memory-budget", "-1"], "argument --memory-budget: must be a finite number > 0"),
    (["steer", "apply", "--vector", "v.safetensors=nan", "--prompt", "x"], "the coefficient must be a finite number"),
    (["steer", "apply", "--vector", "v.safetensors=1", "--prompt", "x", "--temp", "nan"], "argument --temp"),
    (["sae", "train", "--out", "o", "--lr", "nan"], "argument --lr: must be a finite number > 0"),
])
def test_bad_flag_values_are_refused_before_anything_loads(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "loading" not in err, err


def test_a_non_utf8_line_in_the_chat_repl_is_refused_and_the_repl_goes_on(tiny_folder, capsys, monkeypatch):
    lines = iter(["caf\udce9", "hi", ""])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    assert main(["chat", "--model", str(tiny_folder), "--max-tokens", "2", "--temp", "0"]) == 0
    captured = capsys.readouterr()
    assert "input: not valid UTF-8 text" in captured.err


# -- model config.json --------------------------------------------------------------------------------
@pytest.mark.parametrize("change, message", [
    ({"hidden_size": "576x"}, "hidden_size: expected a whole number above 0, got '576x'"),
    ({"hidden_size": "64"}, "hidden_size: expected a whole number above 0, got '64'"),
    ({"num_attention_heads": 0}, "num_attention_heads: expected a whole number above 0, got 0"),
    ({"num_hidden_layers": 2.5}, "num_hidden_layers: expected a whole number above 0, got 2.5"),
    ({"rms_norm_eps": -1e-5}, "rms_norm_eps: expected a finite number above 0, got -1e-05"),
    ({"num_attention_heads": 4, "num_key_value_heads": 3}, "num_attention_heads 4 is not a multiple of"),
])
def test_bad_config_values_are_refused_naming_the_file_and_key(tmp_path, change, message):
    import json
    import shutil

    from conftest import save_tiny_folder

    from mlx_hooks.errors import ModelLoadError
    from mlx_hooks.loader import load_model

    folder = save_tiny_folder(tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ModelLoadError) as info:
        load_model(str(folder))
    assert str(folder / "config.json") in str(info.value) and message in str(info.value), str(info.value)
    shutil.rmtree(folder)
