"""Presets: byte-stable export/import, schema and version checks, model and SAE checks,
llama.cpp control-vector export, and the `symbiont steer` / `symbiont preset` commands."""

from __future__ import annotations

import json
import zipfile
from types import SimpleNamespace

import mlx.core as mx
import numpy as np
import pytest

from conftest import make_tiny_llama
from mlx_hooks import FunctionIntervention, hooked, hooked_stream_generate, position_mask
from mlx_hooks.control_vector import ControlVectorItem, llama_cpp_layer, write_control_vector
from mlx_hooks.fingerprint import fingerprint_model
from mlx_hooks.preset_apply import apply_preset, import_preset
from mlx_hooks.presets import Preset, PresetError, SaeClampEntry, SteeringEntry, read_preset, write_preset
from mlx_hooks.sampling import SamplingSettings
from mlx_hooks.steering import SteeringError, SteeringVector, extract_steering_vector
from mlx_hooks.vector_file import vectors_to_bytes
from symbiont_app.cli import main

POSITIVE = ["hello wA", "abc dA", "xyz qqA"]
NEGATIVE = ["hello wB", "abc dB", "xyz qqB"]
TOKENS = [12, 80, 33, 7, 101, 55, 3, 240]


class TinySae:
    """A random ReLU SAE with the interface presets expect; the clamp is a real computation:
    x ← x + Σ_i d_i·(λ_i − f_i(x)) with f = ReLU(x·W_enc + b), at the masked positions."""

    def __init__(self, sae_id: str, hook_point: str, d_in: int = 64, d_sae: int = 16, seed: int = 0, maxima=True):
        rng = np.random.default_rng(seed)
        self.cfg = SimpleNamespace(sae_id=sae_id, hook_point=hook_point, d_in=d_in, d_sae=d_sae)
        self.w_enc = (rng.standard_normal((d_in, d_sae)) / np.sqrt(d_in)).astype(np.float32)  # [D, S]
        self.b_enc = (0.1 * rng.standard_normal(d_sae)).astype(np.float32)  # [S]
        self.w_dec = (rng.standard_normal((d_sae, d_in)) / np.sqrt(d_in)).astype(np.float32)  # [S, D]
        self.max_activations = rng.uniform(1.0, 5.0, d_sae).astype(np.float32) if maxima else None
        self.calls: list[tuple] = []

    def expected(self, x: np.ndarray, latents, values) -> np.ndarray:  # [T, D] -> [T, D]
        f = np.maximum(x @ self.w_enc[:, latents] + self.b_enc[latents], 0)  # [T, K]
        return x + (np.asarray(values, np.float32) - f) @ self.w_dec[latents]

    def clamp_intervention(self, latents, values, positions):
        self.calls.append((list(latents), list(values), positions))
        w_enc, b_enc = mx.array(self.w_enc[:, latents]), mx.array(self.b_enc[latents])
        w_dec, target = mx.array(self.w_dec[latents]), mx.array(np.asarray(values, np.float32))

        def clamp(x, ctx):  # x: [B, L, D]
            f = mx.maximum(x @ w_enc + b_enc, 0)  # [B, L, K]
            return mx.where(position_mask(positions, ctx), x + (target - f) @ w_dec, x)

        return FunctionIntervention(clamp, name="tiny-sae-clamp")


@pytest.fixture(scope="module")
def model():
    return make_tiny_llama()


@pytest.fixture(scope="module")
def vector(model):
    from conftest import make_byte_tokenizer

    return extract_steering_vector(model, make_byte_tokenizer(), POSITIVE, NEGATIVE, name="ab", layer=1)


def _preset(model, vector, clamps=(), **kwargs) -> Preset:
    entries = [SteeringEntry("ab", "resid_post.1", 0.25, True, "all"),
               SteeringEntry("ab", "resid_post.0", -1.5, False, (3, 4)), *clamps]
    return Preset(name="tiny-test", target_model_name="tiny", fingerprint=fingerprint_model(model),
                  description="for tests", sampling=SamplingSettings(temp=0.7, top_p=0.9, seed=3),
                  interventions=entries, vectors={"ab": vector}, **kwargs)


def _resid(model, point, interventions=None) -> np.ndarray:  # [T, D]
    with hooked(model, capture=[point], interventions=interventions) as hooks:
        model(mx.array([TOKENS]))
        return np.array(hooks.recorder.stack(point)[0])


# -- byte stability --------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".json", ".symbiont-preset"])
def test_export_is_byte_stable_and_import_export_round_trips(model, vector, tmp_path, suffix):
    preset = _preset(model, vector)
    first = write_preset(tmp_path / "a" / f"p{suffix}", preset)
    again = write_preset(tmp_path / "b" / f"p{suffix}", preset)
    assert [p.name for p in first] == ([f"p.safetensors"] if suffix == ".json" else []) + [f"p{suffix}"]
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in again]
    imported = read_preset(first[-1])
    re_exported = write_preset(tmp_path / "c" / f"p{suffix}", imported)
    assert [p.read_bytes() for p in re_exported] == [p.read_bytes() for p in first]
    assert imported.interventions == preset.interventions and imported.sampling == preset.sampling
    np.testing.assert_array_equal(imported.vectors["ab"].vector, vector.vector)
    assert imported.vectors["ab"].typical_norm == vector.typical_norm


def test_archive_packs_exactly_the_sidecar_pair_with_fixed_entries(model, vector, tmp_path):
    preset = _preset(model, vector)
    sidecar, document = write_preset(tmp_path / "p.json", preset)
    (archive,) = write_preset(tmp_path / "p.symbiont-preset", preset)
    with zipfile.ZipFile(archive) as z:
        infos = z.infolist()
        assert [i.filename for i in infos] == ["preset.json", "vectors.safetensors"]
        assert all(i.date_time == (1980, 1, 1, 0, 0, 0) and i.compress_type == zipfile.ZIP_STORED for i in infos)
        assert z.read("preset.json") == document.read_bytes()
        assert z.read("vectors.safetensors") == sidecar.read_bytes()
    text = document.read_text()
    assert json.loads(text)["schema_version"] == 2 and text.endswith("\n")
    assert '"coefficient": -1.5' in text and '"positions": [\n        3,\n        4\n      ]' in text


# -- applying and model checks -----------------------------------------------------------------------


def test_imported_preset_applies_its_steering_and_sampling(model, vector, tmp_path):
    write_preset(tmp_path / "p.symbiont-preset", _preset(model, vector))
    applied = import_preset(tmp_path / "p.symbiont-preset", model, fingerprint_model(model))
    assert applied.compatibility.status == "exact" and applied.messages == []
    assert applied.sampling == SamplingSettings(temp=0.7, top_p=0.9, seed=3)
    assert list(applied.interventions) == ["resid_post.1", "resid_post.0"]
    base0, base1 = _resid(model, "resid_post.0"), _resid(model, "resid_post.1")
    got0 = _resid(model, "resid_post.0", applied.interventions)
    np.testing.assert_allclose((got0 - base0)[[3, 4]], np.stack([-1.5 * vector.unit()] * 2), atol=1e-5)
    assert np.abs(np.delete(got0 - base0, [3, 4], axis=0)).max() == 0
    # resid_post.1 also sees the change from resid_post.0, so compare against that run's own input
    only0 = {"resid_post.0": applied.interventions["resid_post.0"]}
    got1, pre1 = _resid(model, "resid_post.1", applied.interventions), _resid(model, "resid_post.1", only0)
    np.testing.assert_allclose(got1 - pre1, np.broadcast_to(0.25 * vector.typical_norm * vector.unit(), got1.shape),
                               rtol=1e-4, atol=1e-4)
    assert not np.allclose(base1, got1)
    # live: the steering set's coefficients drive the returned interventions
    applied.steering.applied[0].coefficient = 0.0
    np.testing.assert_allclose(_resid(model, "resid_post.1", applied.interventions), pre1, atol=1e-5)


def test_preset_works_with_hooked_stream_generate(model, vector, tmp_path, tokenizer):
    write_preset(tmp_path / "p.json", _preset(model, vector))
    applied = import_preset(tmp_path / "p.json", model, fingerprint_model(model))
    steps = list(hooked_stream_generate(model, tokenizer, "hello", max_tokens=5, sampling=applied.sampling,
                                        interventions=applied.interventions))
    plain = list(hooked_stream_generate(model, tokenizer, "hello", max_tokens=5, sampling=applied.sampling))
    assert len(steps) == len(plain) == 5
    assert steps[0].raw_entropy != pytest.approx(plain[0].raw_entropy, abs=1e-6)  # the steering reached the output


def test_import_refuses_a_preset_for_another_model(model, vector, tmp_path):
    write_preset(tmp_path / "p.json", _preset(model, vector))
    narrow = make_tiny_llama(hidden=32)
    with pytest.raises(PresetError, match=r"p\.json: made for tiny .*d_model: 64 != 32.*preset's value first"):
        import_preset(tmp_path / "p.json", narrow, fingerprint_model(narrow), allow_different_weights=True)
    deeper = make_tiny_llama(layers=4)
    with pytest.raises(PresetError, match=r"n_layers: 3 != 4"):
        import_preset(tmp_path / "p.json", deeper, fingerprint_model(deeper))


def test_same_architecture_other_weights_needs_the_override_and_warns(model, vector, tmp_path):
    write_preset(tmp_path / "p.json", _preset(model, vector))
    other = make_tiny_llama(seed=1)
    with pytest.raises(PresetError, match=r"same architecture|loaded model's architecture but different weights.*weights_hash"):
        import_preset(tmp_path / "p.json", other, fingerprint_model(other))
    with pytest.warns(UserWarning, match="different weights"):
        applied = import_preset(tmp_path / "p.json", other, fingerprint_model(other), allow_different_weights=True)
    assert applied.compatibility.status == "different_weights"
    assert any("different weights" in m for m in applied.messages)
    assert set(applied.interventions) == {"resid_post.0", "resid_post.1"}


# -- versions and bad input --------------------------------------------------------------------------


def _rewrite(path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def test_newer_schema_version_is_refused(model, vector, tmp_path):
    write_preset(tmp_path / "p.json", _preset(model, vector))
    _rewrite(tmp_path / "p.json", lambda d: d.update(schema_version=3, future_field=1))
    with pytest.raises(PresetError, match=r"p\.json: schema_version 3 was written by a newer Symbiont.*reads versions 1 to 2"):
        read_preset(tmp_path / "p.json")


def test_version_1_is_migrated(model, vector, tmp_path):
    write_preset(tmp_path / "p.json", _preset(model, vector))

    def to_v1(doc):
        doc["schema_version"] = 1
        doc["interventions"] = [{"type": "steering", "vector": "ab", "hook_point": "resid_post.0", "coefficient": 2.0}]

    _rewrite(tmp_path / "p.json", to_v1)
    preset = read_preset(tmp_path / "p.json")
    assert preset.interventions == [SteeringEntry("ab", "resid_post.0", 2.0, relative=False, positions="all")]
    assert any("migrated from schema_version 1 to 2" in n for n in preset.notes)
    applied = apply_preset(preset, model, fingerprint_model(model))
    delta = _resid(model, "resid_post.0", applied.interventions) - _resid(model, "resid_post.0")
    np.testing.assert_allclose(delta, np.broadcast_to(2.0 * vector.unit(), delta.shape), atol=1e-5)  # absolute
    v1_with_v2_field = json.loads((tmp_path / "p.json").read_text())
    v1_with_v2_field["interventions"][0]["relative"] = True
    (tmp_path / "p.json").write_text(json.dumps(v1_with_v2_field))
    with pytest.raises(PresetError, match=r"interventions\[0\]: Additional properties are not allowed \('relative'"):
        read_preset(tmp_path / "p.json")


def test_malformed_json_names_the_file_and_line(tmp_path):
    (tmp_path / "bad.json").write_text('{\n  "schema_version": 2,\n  "name": oops\n}')
    with pytest.raises(PresetError, match=r"bad\.json: line 3, column 11: invalid JSON"):
        read_preset(tmp_path / "bad.json")
    (tmp_path / "nan.json").write_text('{"schema_version": 2, "x": NaN}')
    with pytest.raises(PresetError, match=r"nan\.json: invalid JSON \(NaN is not a number a preset may hold\)"):
        read_preset(tmp_path / "nan.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(PresetError, match=r"list\.json: a preset is a JSON object"):
        read_preset(tmp_path / "list.json")


@pytest.mark.parametrize("change, message", [
    (lambda d: d["interventions"][0].update(coefficient="big"), r"interventions\[0\]\.coefficient: 'big' is not of type 'number'"),
    (lambda d: d["interventions"][1].update(positions="middle"), r"interventions\[1\]\.positions: 'middle' is not valid"),
    (lambda d: d["interventions"][0].update(hook_point="resid.3"), r"interventions\[0\]\.hook_point: 'resid.3' does not match"),
    (lambda d: d["interventions"].append({"type": "lora"}), r"interventions\[2\]\.type: 'lora' is not one of"),
    (lambda d: d["sampling"].update(top_p=2), r"sampling\.top_p: 2 is greater than the maximum of 1"),
    (lambda d: d["target_model"]["fingerprint"].pop("d_model"), r"target_model\.fingerprint: 'd_model' is a required property"),
    (lambda d: d.update(extra=True), r"at the top level: Additional properties are not allowed \('extra'"),
    (lambda d: d.pop("schema_version"), r"schema_version is missing or not a positive integer"),
])
def test_schema_violations_name_the_file_and_field(model, vector, tmp_path, change, message):
    write_preset(tmp_path / "p.json", _preset(model, vector))
    _rewrite(tmp_path / "p.json", change)
    with pytest.raises(PresetError, match=r"p\.json: .*" + message):
        read_preset(tmp_path / "p.json")


def test_missing_sidecar_missing_key_and_wrong_shapes_name_the_file(model, vector, tmp_path):
    write_preset(tmp_path / "p.json", _preset(model, vector))
    sidecar = tmp_path / "p.safetensors"
    good = sidecar.read_bytes()
    sidecar.unlink()
    with pytest.raises(PresetError, match=r"p\.json: its vectors file .*p\.safetensors is missing \(needed for ab\)"):
        read_preset(tmp_path / "p.json")
    sidecar.write_bytes(vectors_to_bytes([SteeringVector("other", "resid_post.1", vector.vector, typical_norm=1.0)]))
    with pytest.raises(PresetError, match=r"p\.safetensors: has no tensor for vector\(s\) ab \(it holds: \['other'\]\)"):
        read_preset(tmp_path / "p.json")
    sidecar.write_bytes(vectors_to_bytes([SteeringVector("ab", "resid_post.1", np.ones(32), typical_norm=1.0)]))
    with pytest.raises(PresetError, match=r"p\.safetensors: vector 'ab' has shape \[32\], but the preset's target model has d_model 64"):
        read_preset(tmp_path / "p.json")
    from safetensors.numpy import save

    raw = bytearray(good)  # same metadata, but the tensor is 2-D
    meta = json.loads(bytes(raw[8:8 + int.from_bytes(raw[:8], "little")]))["__metadata__"]
    sidecar.write_bytes(save({"ab": np.ones((2, 32), np.float32)}, metadata=meta))
    with pytest.raises(PresetError, match=r"p\.safetensors: tensor 'ab' is float32\[2, 32\], expected float32 \[D\]"):
        read_preset(tmp_path / "p.json")
    sidecar.write_bytes(good)
    assert read_preset(tmp_path / "p.json").vectors["ab"].d_model == 64


def test_bad_archives_are_refused(model, vector, tmp_path):
    (tmp_path / "junk.symbiont-preset").write_bytes(b"not a zip")
    with pytest.raises(PresetError, match=r"junk\.symbiont-preset: not a readable preset archive"):
        read_preset(tmp_path / "junk.symbiont-preset")
    (good,) = write_preset(tmp_path / "p.symbiont-preset", _preset(model, vector))
    with zipfile.ZipFile(good) as z, zipfile.ZipFile(tmp_path / "extra.symbiont-preset", "w") as out:
        out.writestr("preset.json", z.read("preset.json"))
        out.writestr("notes.txt", "hi")
    with pytest.raises(PresetError, match=r"extra\.symbiont-preset: a preset archive holds preset\.json"):
        read_preset(tmp_path / "extra.symbiont-preset")
    with pytest.raises(PresetError, match=r"written as \.json"):
        write_preset(tmp_path / "p.yaml", _preset(model, vector))


# -- SAE clamps ----------------------------------------------------------------------------------------


def _clamps():
    return [SaeClampEntry("sae-a", "resid_post.1", 3, "cheer", 2.5, "absolute", "all"),
            SaeClampEntry("sae-a", "resid_post.1", 7, "calm", 0.5, "max_multiple", "all")]


def test_sae_clamps_are_resolved_grouped_and_applied(model, vector, tmp_path):
    sae = TinySae("sae-a", "resid_post.1")
    write_preset(tmp_path / "p.json", _preset(model, vector, clamps=_clamps()))
    preset = read_preset(tmp_path / "p.json")
    applied = apply_preset(preset, model, fingerprint_model(model), sae_resolver={"sae-a": sae}.get)
    assert sae.calls == [([3, 7], [2.5, 0.5 * float(sae.max_activations[7])], "all")]  # one call per SAE
    # only the clamp at resid_post.1: the result must be the SAE's own formula on the unclamped stream
    clamp_only = {"resid_post.1": applied.interventions["resid_post.1"][-1:]}
    got = _resid(model, "resid_post.1", clamp_only)
    np.testing.assert_allclose(got, sae.expected(_resid(model, "resid_post.1"), *sae.calls[0][:2]), atol=1e-4)


@pytest.mark.parametrize("resolver, clamp, message", [
    (lambda saes: (lambda i: None), None, r"SAE 'sae-a' could not be found"),
    (lambda saes: saes.__getitem__, SaeClampEntry("nope", "resid_post.1", 1, "x", 1.0), r"SAE 'nope' could not be found \(KeyError"),
    (lambda saes: saes.get, SaeClampEntry("sae-a", "resid_post.2", 1, "x", 1.0), r"SAE 'sae-a' reads resid_post.1, but the clamp is at resid_post.2"),
    (lambda saes: saes.get, SaeClampEntry("sae-a", "resid_post.1", 16, "x", 1.0), r"latent 16 is out of range for SAE 'sae-a' \(d_sae 16\)"),
    (lambda saes: saes.get, SaeClampEntry("sae-b", "resid_post.1", 1, "x", 1.0, "max_multiple"), r"max_multiple needs the maximum activations of SAE 'sae-b'"),
    (lambda saes: saes.get, SaeClampEntry("sae-a", "resid_post.1", 3, "again", 1.0), r"latent 3 of SAE 'sae-a' is clamped twice"),
    (lambda saes: None, None, r"no SAE resolver was given"),
])
def test_bad_sae_clamps_are_refused_and_nothing_is_applied(model, vector, tmp_path, resolver, clamp, message):
    saes = {"sae-a": TinySae("sae-a", "resid_post.1"), "sae-b": TinySae("sae-b", "resid_post.1", maxima=False)}
    clamps = _clamps() + ([clamp] if clamp else [])
    write_preset(tmp_path / "p.json", _preset(model, vector, clamps=clamps))
    before = _resid(model, "resid_post.1")
    with pytest.raises(PresetError, match=r"p\.json: interventions\[\d\]: .*" + message):
        import_preset(tmp_path / "p.json", model, fingerprint_model(model), sae_resolver=resolver(saes))
    assert all(s.calls == [] for s in saes.values())  # no clamp intervention was ever built
    np.testing.assert_array_equal(_resid(model, "resid_post.1"), before)  # and the model is untouched


def test_sae_with_wrong_width_is_refused(model, vector, tmp_path):
    write_preset(tmp_path / "p.json", _preset(model, vector, clamps=_clamps()[:1]))
    with pytest.raises(PresetError, match=r"SAE 'sae-a' has d_in 32, the model's width is 64"):
        import_preset(tmp_path / "p.json", model, fingerprint_model(model),
                      sae_resolver=lambda i: TinySae("sae-a", "resid_post.1", d_in=32))


# -- llama.cpp control vectors -------------------------------------------------------------------------


def test_control_vector_gguf_reads_back_with_llama_cpp_layout(vector, tmp_path):
    import gguf

    other = SteeringVector("other", "resid_pre.2", np.arange(64, dtype=np.float32), typical_norm=2.0)
    items = [ControlVectorItem(vector, 0.5, relative=True, hook_point="resid_post.2"),
             ControlVectorItem(vector, 3.0, relative=False, hook_point="resid_post.1"),
             ControlVectorItem(other, 1.0, relative=True, hook_point=None, positions="generated")]
    notes = write_control_vector(tmp_path / "cv.gguf", items, model_hint="llama", n_layers=4)
    assert notes == ["other: positions 'generated' not carried over; llama.cpp steers every position"]
    reader = gguf.GGUFReader(str(tmp_path / "cv.gguf"))
    assert reader.fields["general.architecture"].contents() == "controlvector"
    assert reader.fields["controlvector.model_hint"].contents() == "llama"
    assert reader.fields["controlvector.layer_count"].contents() == 3
    tensors = {t.name: t for t in reader.tensors}
    assert sorted(tensors) == ["direction.1", "direction.2", "direction.3"]
    assert all(t.tensor_type == gguf.GGMLQuantizationType.F32 and list(t.shape) == [64] for t in tensors.values())
    # resid_post.N -> direction.N; resid_pre.2 is block 1's output -> direction.1 (summed with resid_post.1)
    expected1 = 3.0 * vector.unit() + 2.0 * other.unit()
    np.testing.assert_allclose(np.asarray(tensors["direction.1"].data), expected1, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(tensors["direction.2"].data), 0.5 * vector.typical_norm * vector.unit(),
                               rtol=1e-6)
    assert not np.any(np.asarray(tensors["direction.3"].data))


def test_control_vector_layer_mapping_and_refusals():
    assert [llama_cpp_layer(p, 30) for p in ("resid_post.1", "resid_post.15", "resid_pre.16", "resid_post.-1")] == [
        1, 15, 15, 29]
    for point in ("resid_post.0", "resid_pre.1", "resid_pre.0", "embed", "mlp_out.3"):
        with pytest.raises(SteeringError, match=point.replace(".", r"\.")):
            llama_cpp_layer(point, 30)


# -- command line -----------------------------------------------------------------------------------------


def test_steer_and_preset_commands_on_a_tiny_model_folder(tiny_folder, tmp_path, capsys):
    model = str(tiny_folder)
    vec, preset_json = tmp_path / "ab.safetensors", tmp_path / "ab.json"
    assert main(["steer", "extract", "--model", model, "--positive", *POSITIVE, "--negative", *NEGATIVE,
                 "--layer", "1", "--name", "ab", "-o", str(vec)]) == 0
    assert "ab: mean_diff at resid_post.1" in capsys.readouterr().out and vec.is_file()
    assert main(["steer", "apply", "--model", model, "--vector", f"{vec}=0.5", "--prompt", "hello", "--max-tokens", "4",
                 "--baseline"]) == 0
    captured = capsys.readouterr()
    assert "-- baseline --" in captured.out and "-- steered --" in captured.out
    assert "ab at resid_post.1, coefficient 0.5 (× typical norm)" in captured.err
    assert main(["steer", "sweep", "--model", model, "--vector", f"{vec}:ab", "--prompt", "hello", "--coefficients",
                 "-1", "0", "1", "--probe-positive", "A", "--probe-negative", "B", "--max-tokens", "3"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.strip()[:2] in ("-1", "0 ", "1 ")]
    assert [r[0] for r in rows] == ["-1", "0", "1"] and float(rows[0][1]) < float(rows[2][1])
    assert main(["preset", "export", "--model", model, "--vector", f"{vec}=0.3", "--name", "ab-preset",
                 "--temp", "0.5", "-o", str(preset_json)]) == 0
    assert main(["preset", "show", str(preset_json)]) == 0
    out = capsys.readouterr().out
    assert "preset 'ab-preset'" in out and "steering  ab" in out and "temp 0.5" in out
    assert main(["preset", "import", str(preset_json), "--model", model]) == 0
    assert "exact match" in capsys.readouterr().out
    archive, cv = tmp_path / "ab.symbiont-preset", tmp_path / "ab.gguf"
    assert main(["preset", "export", "--from", str(preset_json), "-o", str(archive), "--gguf", str(cv)]) == 0
    assert read_preset(archive).interventions == read_preset(preset_json).interventions and cv.is_file()
    assert main(["steer", "apply", "--model", model, "--preset", str(archive), "--prompt", "hi", "--max-tokens", "2"]) == 0
    capsys.readouterr()
    preset_json.write_text(preset_json.read_text().replace('"schema_version": 2', '"schema_version": 9'))
    assert main(["preset", "import", str(preset_json), "--model", model]) == 1
    assert "ab.json: schema_version 9 was written by a newer Symbiont" in capsys.readouterr().err
    assert main(["steer", "apply", "--model", model, "--vector", f"{tmp_path / 'none.safetensors'}=1", "--prompt", "x"]) == 1
    assert "none.safetensors: vector file not found" in capsys.readouterr().err


def test_clamps_resolve_to_the_real_sae_class(model, vector, tmp_path):
    from mlx_hooks.sae import SAE, SAEConfig

    mx.random.seed(5)
    sae = SAE(SAEConfig(d_in=64, d_sae=32, architecture="standard", hook_point="resid_post.1", sae_id="sae-a"))
    sae.max_activations = np.linspace(1.0, 4.0, 32).astype(np.float32)
    write_preset(tmp_path / "p.json", _preset(model, vector, clamps=_clamps()))
    applied = import_preset(tmp_path / "p.json", model, fingerprint_model(model), sae_resolver={"sae-a": sae}.get)
    clamp = applied.interventions["resid_post.1"][-1]
    direct = sae.clamp_intervention([3, 7], [2.5, 0.5 * float(sae.max_activations[7])], "all")
    got, want = (_resid(model, "resid_post.1", {"resid_post.1": [c]}) for c in (clamp, direct))
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert np.abs(got - _resid(model, "resid_post.1")).max() > 1e-3  # the clamp did change the stream
