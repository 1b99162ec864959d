"""Resumability as a property: a lab run killed after *any* file write resumes to the result of
an uninterrupted run. Kills are injected deterministically (:mod:`fault_injection`): first
an uninterrupted run counts its writes W, then for every N in 1..W a fresh run is killed
right after its N-th write (appends torn in half) and run again to the end.

Under ``slow`` both are swept at every write: the LoRA student (every write of every
checkpoint) and the whole subliminal pipeline on the smallest configuration. The fast tier
kills the student after each kind of write and the pipeline at a spread of four writes.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from fault_injection import SimulatedKill, WriteFaults
from test_subliminal_student import tiny_loaded, write_numbers_dataset

from symbiont_lab.subliminal.student import LoRAConfig, train_student
from symbiont_lab.subliminal.student_checkpoint import read_checkpoint

STUDENT = LoRAConfig(iters=6, batch_size=4, learning_rate=5e-3, steps_per_checkpoint=2, rank=4)


def _arrays(path: Path) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in mx.load(str(path)).items()}


def _bury_the_dead() -> None:
    """A "killed" run's models stay referenced from its traceback's frames (a reference cycle) until
    the collector runs; a real kill frees them, and other tests count the models alive in this process."""
    gc.collect()


def _train(tokenizer, data: Path, out: Path):
    return train_student(tiny_loaded(tokenizer), data, out, STUDENT)


def _student_sweep(tmp_path, tokenizer, points) -> None:
    data = write_numbers_dataset(tmp_path / "data", n=12)
    ref_dir = tmp_path / "ref"
    with WriteFaults(ref_dir) as counter:
        ref = _train(tokenizer, data, ref_dir)
    writes = counter.count
    assert writes == 4 * 5, counter.log  # checkpoints at steps 0, 2, 4, 6: adapters, config, checkpoint
    ref_adapters = _arrays(ref_dir / "adapters.safetensors")
    for n in points(writes):
        out = tmp_path / f"kill{n:02d}"
        with pytest.raises(SimulatedKill):
            with WriteFaults(out, kill_at=n):
                _train(tokenizer, data, out)
        _bury_the_dead()
        resumed = _train(tokenizer, data, out)
        where = f"killed after write {n} ({counter.log[n - 1]})"
        assert resumed.steps_done == STUDENT.iters and [l for _, l in resumed.losses] == [l for _, l in ref.losses], where
        got = _arrays(out / "adapters.safetensors")
        assert set(got) == set(ref_adapters), where
        for key, value in ref_adapters.items():
            # same shapes, same kernels, same order of operations: bit-identical, not merely close
            assert np.array_equal(got[key], value), (where, key)
        assert read_checkpoint(out).step == STUDENT.iters, where


def test_student_killed_after_writes_of_every_kind_resumes_to_the_uninterrupted_adapters(tmp_path, tokenizer):
    # writes 1-5 are the step-0 checkpoint (adapters: 2 renames, config, checkpoint: 2), 6-10 step 2's, ...
    _student_sweep(tmp_path, tokenizer, lambda writes: [1, 2, 3, 4, 5, 8, writes])


@pytest.mark.slow
def test_student_killed_after_any_write_resumes_to_the_uninterrupted_adapters(tmp_path, tokenizer):
    _student_sweep(tmp_path, tokenizer, lambda writes: range(1, writes + 1))


def test_a_kill_before_the_first_periodic_checkpoint_resumes(tmp_path, tokenizer):
    """Only save(0) on disk: that checkpoint used to lack Adam's moments, so every re-run was
    refused ("optimizer state does not match"); any kill in a student's first 50 steps."""
    data = write_numbers_dataset(tmp_path / "data", n=12)
    config = LoRAConfig(iters=4, batch_size=4, steps_per_checkpoint=50)

    def kill():
        raise SimulatedKill("killed during step 1, before any periodic checkpoint")

    with pytest.raises(SimulatedKill):
        train_student(tiny_loaded(tokenizer), data, tmp_path / "ad", config, should_stop=kill)
    assert read_checkpoint(tmp_path / "ad").step == 0
    resumed = train_student(tiny_loaded(tokenizer), data, tmp_path / "ad", config)
    full = train_student(tiny_loaded(tokenizer), data, tmp_path / "full", config)
    assert resumed.steps_done == 4 and [l for _, l in resumed.losses] == [l for _, l in full.losses]
    a, b = _arrays(tmp_path / "ad" / "adapters.safetensors"), _arrays(tmp_path / "full" / "adapters.safetensors")
    assert all(np.array_equal(a[k], b[k]) for k in b)


# -- the whole subliminal pipeline --------------------------------------------------------------------
def smallest_config(model: Path) -> dict:
    """Every stage of a run (two teachers, filter, datasets, two students, logit probes), each as small
    as it goes: 16 prompts in 2 chunks, 2 LoRA steps checkpointed at each, 2 questions."""
    return {
        "experiment": "subliminal", "name": "smallest", "seed": 3,
        "model": {"spec": str(model), "dtype": "float32"},
        "trait": {"kind": "system_prompt", "animal": "owl"},
        "numbers": {"prompt_count": 16, "dataset_size": 8, "batch_size": 2, "max_tokens": 6, "valid_fraction": 0.0},
        "lora": {"iters": 2, "batch_size": 2, "learning_rate": 5e-3, "warmup_steps": 1, "steps_per_checkpoint": 1,
                 "rank": 2},
        "probes": {"max_questions": 2, "sampled": False, "numbers_prefix": False, "animals": ["owl", "cat"]},
        "mechanism": {"enabled": False},
    }


TIMING_KEYS = {"seconds", "seconds_this_call", "generated_now", "sequences_per_s", "resumed_from",
               "budget_gib"}  # the default memory budget moves with free RAM and other processes' models


def _outcome(out: Path) -> dict:
    """Everything a run's result consists of, without wall times and resume bookkeeping."""
    from symbiont_lab.subliminal.report import build_metrics
    from symbiont_lab.subliminal.run_stages import read_responses

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in TIMING_KEYS}
        return value

    result = {"stages": {p.name: strip(json.loads(p.read_text())) for p in sorted((out / "stages").glob("*.json"))
                         if not p.name.startswith(".")}}
    result["responses"] = {t.name: read_responses(t / "responses.jsonl") for t in sorted((out / "teachers").iterdir())}
    result["datasets"] = {f"{d.name}/{f.name}": f.read_bytes() for d in sorted((out / "datasets").iterdir())
                          for f in sorted(d.glob("*.jsonl"))}
    result["adapters"] = {s.name: {k: v.tobytes() for k, v in _arrays(s / "adapters.safetensors").items()}
                          for s in sorted((out / "students").iterdir())}
    metrics = build_metrics(out)
    result["verdict"], result["probes"] = metrics["verdict"], metrics["probes"]
    return result


@pytest.fixture(scope="module")
def pipeline_reference(tmp_path_factory):
    from test_subliminal_run import save_number_model

    from symbiont_lab.subliminal.config import parse_config
    from symbiont_lab.subliminal.run import run_subliminal

    root = tmp_path_factory.mktemp("pipeline")
    config = parse_config(smallest_config(save_number_model(root / "model")))
    ref = root / "ref"
    with WriteFaults(ref) as counter:
        run_subliminal(config, ref, report=False, plots=False)
    yield config, root, _outcome(ref), counter
    _bury_the_dead()


def _kill_and_resume(pipeline_reference, n: int) -> None:
    from symbiont_lab.subliminal.run import run_subliminal

    config, root, reference, counter = pipeline_reference
    out = root / f"kill{n:03d}"
    faults = WriteFaults(out, kill_at=n)
    try:
        with faults:
            run_subliminal(config, out, report=False, plots=False)
    except SimulatedKill:
        pass
    else:
        # The live progress lines are throttled by wall-clock time (one per 2 s), so a run can make a few
        # writes fewer than the reference run did; then there was nothing to kill at n. A kill that
        # happened and did not end the run would be a real defect: it fails here.
        assert not faults.killed and faults.count < n, f"write {n} was cut and the run went on ({faults.log[-3:]})"
    _bury_the_dead()
    run_subliminal(config, out, report=False, plots=False)
    got = _outcome(out)
    where = f"killed after write {n} of {counter.count} ({counter.log[n - 1]})"
    for key in reference:
        assert got[key] == reference[key], (where, key)
    runs = json.loads((out / "runs.json").read_text()) if (out / "runs.json").exists() else []
    assert runs and runs[-1]["interrupted"] is False, where


def _spread(count: int, points: int) -> list[int]:
    """``points`` kill points spread over 1..count, always including the first and the last."""
    return sorted({1, count, *np.linspace(1, count, points).round().astype(int).tolist()})


def test_pipeline_killed_at_a_spread_of_writes_resumes_to_the_same_result(pipeline_reference):
    count = pipeline_reference[3].count
    for n in _spread(count, 4):
        _kill_and_resume(pipeline_reference, n)


@pytest.mark.slow
@pytest.mark.exhaustive
def test_pipeline_killed_after_every_write_resumes_to_the_same_result(pipeline_reference):
    for n in range(1, pipeline_reference[3].count + 1):
        _kill_and_resume(pipeline_reference, n)
