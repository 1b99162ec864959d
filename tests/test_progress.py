"""symbiont_lab.progress: the append-only progress log and its incremental reader."""

from __future__ import annotations

import json

import numpy as np

from symbiont_lab.progress import PROGRESS_FILE, ProgressLog, read_progress


def test_emit_and_tail_incrementally(tmp_path):
    log = ProgressLog(tmp_path / "run")
    log.emit("teacher", 1, 10, "training", loss=np.float32(0.5), accuracy=0.25)
    records, offset = read_progress(tmp_path / "run")
    assert [r["stage"] for r in records] == ["teacher"]
    assert records[0]["metrics"] == {"loss": 0.5, "accuracy": 0.25}
    assert records[0]["done"] == 1 and records[0]["total"] == 10 and records[0]["message"] == "training"
    assert read_progress(tmp_path / "run", offset) == ([], offset)
    log.emit("student", 2, 10, nan=float("nan"))
    more, offset2 = read_progress(tmp_path / "run", offset)
    assert [r["stage"] for r in more] == ["student"] and more[0]["metrics"] == {"nan": None}
    assert offset2 > offset


def test_partial_line_from_a_kill_is_left_then_skipped(tmp_path):
    ProgressLog(tmp_path).emit("a", 0, 2)
    path = tmp_path / PROGRESS_FILE
    with open(path, "ab") as handle:
        handle.write(b'{"stage": "b", "do')  # killed mid-write
    records, offset = read_progress(tmp_path)
    assert [r["stage"] for r in records] == ["a"]
    assert offset < path.stat().st_size  # the partial line stays unread
    ProgressLog(tmp_path).emit("c", 1, 2)  # a resumed run ends the broken line first
    more, _ = read_progress(tmp_path, offset)
    assert [r["stage"] for r in more] == ["c"]
    assert all(json.loads(line)["stage"] for line in path.read_text().splitlines()[2:])


def test_missing_file_and_replaced_file(tmp_path):
    assert read_progress(tmp_path, 7) == ([], 7)
    ProgressLog(tmp_path).emit("x", 0, 1)
    records, _ = read_progress(tmp_path, 10_000)  # shorter than the offset: a new run, read from the start
    assert [r["stage"] for r in records] == ["x"]


def test_negation_lab_writes_progress_per_chunk(tmp_path):
    from symbiont_lab.negation.experiments import NegationConfig
    from symbiont_lab.negation.runner import run_lab

    config = NegationConfig(seeds=2, steps=5, eval_per_class=20, mix_fractions=(0.25,), checkpoint_every=5,
                            experiments=("sorted",))
    run_lab(config, tmp_path, workers=1, chunk_seeds=1, verbose=False)
    records, _ = read_progress(tmp_path)
    assert [r["stage"] for r in records] == ["start", "sorted seeds 0-0", "sorted seeds 1-1", "done"]
    assert [(r["done"], r["total"]) for r in records] == [(0, 2), (1, 2), (2, 2), (2, 2)]
    run_lab(config, tmp_path, workers=1, verbose=False)  # resumed with nothing left: starts at 2 of 2
    records, _ = read_progress(tmp_path)
    assert [(r["stage"], r["done"]) for r in records[4:]] == [("start", 2), ("done", 2)]
