"""The auxiliary-logit lab (symbiont_lab.aux_logits): data, IDX files, the effect, resume, CLI.

Small networks and few epochs throughout; the effect test trains 2 seeds × 4 networks at
m = 50 for 3 epochs (a few seconds).
"""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from symbiont_lab.aux_logits.data import (
    AuxDataError, load_digits_dataset, load_mnist_dataset, read_idx, write_idx,
)
from symbiont_lab.aux_logits.experiments import AuxConfig, run_unit
from symbiont_lab.aux_logits.report import spearman, summarize
from symbiont_lab.aux_logits.runner import AuxRunError, RunFolder, run_lab
from symbiont_lab.progress import read_progress


@pytest.fixture(scope="module")
def digits():
    return load_digits_dataset()


def test_digits_loader_shapes_and_range(digits):
    assert digits.x_train.shape == (1437, 64) and digits.x_test.shape == (360, 64)
    assert digits.x_train.dtype == np.float32 and digits.y_train.dtype == np.int32
    both = np.concatenate([digits.x_train, digits.x_test])
    assert both.min() == -1.0 and both.max() == 1.0  # grey levels 0..16 -> [-1, 1], like the noise
    assert set(np.unique(digits.y_test)) == set(range(10))
    assert load_digits_dataset().fingerprint == digits.fingerprint  # the split is fixed


def _write_mnist(folder, n_train=12, n_test=6, gz=True):
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
              "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test)}
    for name, a in arrays.items():
        write_idx(folder / (name + (".gz" if gz else "")), a)
    return arrays


def test_idx_round_trip_and_mnist_folder(tmp_path):
    arrays = _write_mnist(tmp_path)
    back = read_idx(tmp_path / "train-images-idx3-ubyte.gz")
    assert back.shape == (12, 28, 28) and np.array_equal(back, arrays["train-images-idx3-ubyte"])
    write_idx(tmp_path / "raw" / "labels", arrays["t10k-labels-idx1-ubyte"])  # not gzipped
    assert np.array_equal(read_idx(tmp_path / "raw" / "labels"), arrays["t10k-labels-idx1-ubyte"])
    data = load_mnist_dataset(tmp_path)
    assert data.name == "mnist" and data.x_train.shape == (12, 784) and data.x_test.shape == (6, 784)
    assert data.x_train.min() >= -1.0 and data.x_train.max() <= 1.0
    assert np.array_equal(data.y_test, arrays["t10k-labels-idx1-ubyte"])


def test_bad_idx_files_are_named(tmp_path):
    _write_mnist(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])  # truncated
    with pytest.raises(AuxDataError, match=r"train-images-idx3-ubyte: truncated: header says shape \(12, 28, 28\)"):
        load_mnist_dataset(tmp_path)
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 20)[:-6])  # a cut gzip stream
    with pytest.raises(AuxDataError, match="train-images-idx3-ubyte: truncated or corrupt gzip"):
        read_idx(path)
    path.write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(AuxDataError, match="train-images-idx3-ubyte: not an IDX file"):
        read_idx(path)
    path.unlink()
    with pytest.raises(AuxDataError, match=r"no train-images-idx3-ubyte\[\.gz\]"):
        load_mnist_dataset(tmp_path)
    with pytest.raises(AuxDataError, match="not a folder"):
        load_mnist_dataset(tmp_path / "nowhere")


def test_same_init_student_learns_digits_from_noise_and_the_control_does_not(digits):
    # the effect itself: students that never see a digit nor a class logit
    config = AuxConfig(epochs=3, batch=64, lr=1e-3, hidden=128)
    results, _ = run_unit(config, 50, [0, 1], digits)
    for seed, r in results.items():
        acc = r["accuracy"]
        assert acc["teacher"] > 0.9 and acc["all_logits"] > 0.85, (seed, acc)
        assert acc["same_init"] - acc["different_init"] > 0.3, (seed, acc)
        assert acc["different_init"] < 0.35, (seed, acc)
    # one auxiliary logit: its softmax is constant, so nothing moves (as published: chance)
    one, _ = run_unit(AuxConfig(epochs=1, hidden=32), 1, [0], digits)
    assert one[0]["accuracy"]["same_init"] == one[0]["initial_accuracy"]["same_init"]


def test_a_seed_gives_the_same_result_alone_or_in_a_chunk(digits):
    config = AuxConfig(epochs=1, hidden=32)
    together, _ = run_unit(config, 3, [0, 1], digits)
    alone, _ = run_unit(config, 3, [1], digits)
    assert together[1]["accuracy"] == pytest.approx(alone[1]["accuracy"], abs=1 / 360 + 1e-9)
    assert together[1]["initial_accuracy"] == alone[1]["initial_accuracy"]


def test_a_killed_run_resumes_without_recomputing_finished_seeds(tmp_path, digits):
    config = AuxConfig(seeds=3, aux=(2,), epochs=1, hidden=32)
    full = run_lab(config, tmp_path / "full", data=digits, chunk_seeds=1)
    assert full.computed == {2: [0, 1, 2]}

    def kill_after_first(unit):
        raise KeyboardInterrupt  # as if the process were killed after the first unit was saved

    with pytest.raises(KeyboardInterrupt):
        run_lab(config, tmp_path / "run", data=digits, chunk_seeds=1, on_unit_done=kill_after_first)
    first = RunFolder(tmp_path / "run").result_path(2, 0)
    stamp = (first.read_bytes(), first.stat().st_mtime_ns)
    summary = run_lab(config, tmp_path / "run", data=digits, chunk_seeds=1)
    assert summary.skipped == {2: [0]} and summary.computed == {2: [1, 2]}
    assert (first.read_bytes(), first.stat().st_mtime_ns) == stamp
    assert RunFolder(tmp_path / "run").results(config) == RunFolder(tmp_path / "full").results(config)
    assert [r["interrupted"] for r in json.loads((tmp_path / "run" / "runs.json").read_text())] == [True, False]
    records, _ = read_progress(tmp_path / "run")
    assert records[-1]["stage"] == "done" and records[-1]["done"] == records[-1]["total"]
    assert any("same_init_accuracy" in r["metrics"] for r in records)
    with pytest.raises(AuxRunError, match=r"config\.json.*hidden: folder 32, now 16"):
        run_lab(AuxConfig(seeds=3, aux=(2,), epochs=1, hidden=16), tmp_path / "run", data=digits)


def test_summary_and_verdicts_are_computed_from_results():
    def result(same, diff):
        return {"accuracy": {"teacher": 0.95, "same_init": same, "different_init": diff, "all_logits": 0.93},
                "initial_accuracy": {"same_init": 0.1, "different_init": 0.1, "all_logits": 0.1}}
    results = {m: {s: result(0.1 + 0.01 * m + 0.01 * s, 0.1 + 0.005 * s) for s in range(3)} for m in (1, 3, 10)}
    summary = summarize(results, AuxConfig(seeds=3, aux=(1, 3, 10)))
    verdicts = {v["effect"].split(" (")[0].split(":")[0]: v["verdict"] for v in summary["verdicts"]}
    assert verdicts == {"transfer": "partly", "the control learns no digits": "yes",
                        "distilling all logits recovers the teacher": "yes", "more auxiliary logits, more transfer": "yes"}
    assert summary["by_m"][3]["same_init"]["mean"] == pytest.approx(14.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_cli_prints_the_table(tmp_path, capsys):
    from symbiont_app.cli import main

    out = tmp_path / "lab"
    args = ["lab", "aux-logits", "--data", "digits", "--seeds", "2", "--aux", "1,3", "--epochs", "1", "--hidden", "32",
            "--out", str(out), "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| m | seeds | same init (ours) | same init (published)" in printed
    assert "| 3 | 2 |" in printed and "| 1 | 2 |" in printed and "## Did the published effects reproduce?" in printed
    assert (out / "plots" / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["by_m"]) == ["1", "3"] and summary["settings"]["hidden"] == 32
    assert main(args) == 0  # resumed: nothing left to compute
    assert "nothing left to compute" in capsys.readouterr().out


def test_init_scale_multiplies_the_same_draws_and_is_part_of_a_runs_identity():
    from symbiont_lab.aux_logits.model import init_mlp

    base, doubled = init_mlp(3, "init-a", (8, 16, 13)), init_mlp(3, "init-a", (8, 16, 13), scale=2.0)
    for (w, b), (w2, b2) in zip(base, doubled):
        assert np.allclose(w2, 2 * w, atol=1e-6) and np.allclose(b2, 2 * b, atol=1e-6)
    assert "init_scale" not in AuxConfig().identity()  # older run folders still resume
    assert AuxConfig(init_scale=2.0).identity()["init_scale"] == 2.0
