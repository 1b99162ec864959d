"""Sparse probing (symbiont_lab.superposition: probe_data, sparse_probe, probe_run) and `symbiont probe`:
planted single-neuron and distributed features, the built-in and user sets, a resumable run on a tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from symbiont_lab.superposition.probe_data import ProbeSetError, builtin_names, load_probe_set
from symbiont_lab.superposition.sparse_probe import ProbeSettings, f1_score, folds_of, probe_table, top_units


# -- the probes on planted features ----------------------------------------------------------------------
def _data(n=200, units=300, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat([1, 0], n // 2)
    return rng.standard_normal((n, units)) * rng.uniform(0.5, 20.0, units), y, np.arange(n)


@pytest.mark.parametrize("selection", ["mean_diff", "l1"])
def test_a_property_carried_by_one_neuron_is_found_by_a_one_unit_probe(selection):
    x, y, groups = _data()
    x[:, 17] = 0.05 * x[:, 17] + 3.0 * y  # one unit carries it (on a small scale among large ones)
    table = probe_table(x, y, groups, ProbeSettings(k_values=(1, 4), selection=selection))
    assert table["f1"]["1"] > 0.95 and table["dense_f1"] < table["f1"]["1"]  # the dense probe drowns in noise
    assert top_units(x, y, ProbeSettings(selection=selection), 3)[0]["unit"] == 17


def test_a_property_spread_over_many_units_needs_a_larger_k():
    x, y, groups = _data(n=240, seed=1)
    x = x / x.std(axis=0)
    x[:, 100:132] += 0.6 * y[:, None]  # 32 units, each a weak cue (d′ = 0.6); together a strong one (d′ ≈ 3.4)
    table = probe_table(x, y, groups, ProbeSettings(k_values=(1, 32)))
    assert table["f1"]["1"] < 0.75 and table["f1"]["32"] > 0.85, table
    units = {u["unit"] for u in top_units(x, y, ProbeSettings(), 16)}
    assert len(units & set(range(100, 132))) >= 12


def test_pairs_stay_in_one_fold_and_small_sets_are_refused():
    y = np.array([1, 0] * 10)
    groups = np.repeat(np.arange(10), 2)
    for train, test in folds_of(y, groups, ProbeSettings(folds=5)):
        assert not set(groups[train]) & set(groups[test])
    with pytest.raises(ValueError, match="at least 5 texts of each class"):
        folds_of(np.array([1, 1, 0, 0]), np.arange(4), ProbeSettings(folds=5))
    assert f1_score(np.array([1, 1, 0]), np.array([1, 0, 0])) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="unknown unit selection"):
        ProbeSettings(selection="nope")


# -- sets ---------------------------------------------------------------------------------------------------
def test_builtin_sets():
    assert builtin_names() == ["code_prose", "french_english", "numbers_words", "past_present", "plural_singular",
                               "sentiment"]
    for name in builtin_names():
        data = load_probe_set(name)
        assert data.counts() == (32, 32) and len(set(data.texts)) == 64, name
        assert data.groups[:4] == (0, 0, 1, 1) and data.labels[:2] == (1, 0)


def test_user_files_and_their_errors(tmp_path):
    jsonl = tmp_path / "mine.jsonl"
    jsonl.write_text('{"text": "a cat", "label": "animal"}\n\n{"text": "a car", "label": "machine", "group": 7}\n')
    data = load_probe_set(str(jsonl))
    assert data.labels == (1, 0) and data.positive_label == "animal"  # the first row's label
    assert load_probe_set(str(jsonl), positive="machine").labels == (0, 1)
    csv = tmp_path / "mine.csv"
    csv.write_text('text,label\n"hello, world",0\nbye,1\n')
    data = load_probe_set(str(csv))
    assert data.texts == ("hello, world", "bye") and data.labels == (0, 1)  # 1 is positive for 0/1 labels
    jsonl.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 2}\n{"text": "c", "label": 3}\n')
    with pytest.raises(ProbeSetError, match=r"mine\.jsonl: labels must take exactly two values \(found 3"):
        load_probe_set(str(jsonl))
    jsonl.write_text('{"text": "a", "label": 1}\n{"txt": "b"}\n')
    with pytest.raises(ProbeSetError, match=r"mine\.jsonl: line 2: expected an object with 'text' and 'label'"):
        load_probe_set(str(jsonl))
    csv.write_text("sentence,class\nx,1\n")
    with pytest.raises(ProbeSetError, match=r"mine\.csv: line 1: the header needs 'text' and 'label'"):
        load_probe_set(str(csv))
    bad = tmp_path / "bad.json"
    bad.write_text('{"pairs": [{"positive": "x"}]}')
    with pytest.raises(ProbeSetError, match=r"bad\.json: pairs/0"):
        load_probe_set(str(bad))
    with pytest.raises(ProbeSetError, match="not a built-in probe set"):
        load_probe_set(str(tmp_path / "nowhere.jsonl"))


# -- a run on a tiny model, through the CLI --------------------------------------------------------------------
def _letters_set(path, shift=0):
    rows = [{"text": "ab" * (3 + i % 4) + "a", "label": 1, "group": i} for i in range(10)]
    rows += [{"text": "xy" * (3 + (i + shift) % 4) + "x", "label": 0, "group": i} for i in range(10)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_probe_cli_on_a_tiny_model_resumes_and_refuses_other_settings(tiny_folder, tmp_path, capsys):
    from mlx_hooks.sae.model import SAE, SAEConfig
    from mlx_hooks.sae.saving import save_sae
    from symbiont_app.cli import main

    save_sae(SAE(SAEConfig(d_in=64, d_sae=96, k=8, hook_point="resid_post.1")), tmp_path / "sae")
    data = _letters_set(tmp_path / "letters.jsonl")
    out = tmp_path / "run"
    args = ["probe", "--model", str(tiny_folder), "--sets", str(data), "--kinds", "resid_post,mlp_hidden,sae",
            "--sae", str(tmp_path / "sae"), "--layers", "0,-1", "--k", "1,2", "--folds", "2", "--out", str(out),
            "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "## Overview" in printed and "| letters | mlp_hidden |" in printed and "| letters | sae |" in printed
    result = json.loads((out / "results" / "letters" / "resid_post.json").read_text())
    assert [r["point"] for r in result["layers"]] == ["resid_post.0", "resid_post.2"]
    assert result["layers"][0]["dense_f1"] == 1.0  # 'a'/'b' against 'x'/'y' bytes: separable from the embedding on
    assert len(result["layers"][0]["top_units"]) == 8 and set(result["layers"][0]["f1"]) == {"1", "2"}
    sae_result = json.loads((out / "results" / "letters" / "sae.json").read_text())
    assert sae_result["layers"][0]["point"] == "sae@resid_post.1" and sae_result["layers"][0]["units"] == 96
    assert (out / "plots" / "letters.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stamp = (out / "results" / "letters" / "sae.json").stat().st_mtime_ns
    assert main(args) == 0 and "nothing left to compute" in (out / "report.md").read_text()
    assert (out / "results" / "letters" / "sae.json").stat().st_mtime_ns == stamp
    assert main([*args, "--pooling", "last"]) == 1
    assert "config.json" in capsys.readouterr().err
    _letters_set(data, shift=1)  # same name, other texts
    (out / "results" / "letters" / "sae.json").unlink()
    assert main(args) == 1
    assert "letters.safetensors: made from other texts" in capsys.readouterr().err
