"""The labs against bad input and concurrent use: refused before any state is created, with the
file, key or folder named; undefined statistics reported as undefined."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import pytest
from test_subliminal_student import tiny_loaded, write_numbers_dataset

from symbiont_lab import run_folder
from symbiont_lab.subliminal.config import ConfigError, load_config, parse_config
from symbiont_lab.subliminal.run import RunFolderError, run_subliminal
from symbiont_lab.subliminal.stats import paired_comparison, sign_flip_test
from symbiont_lab.subliminal.student import LoRAConfig, StudentError, train_student

MINIMAL = '[trait]\nkind = "system_prompt"\nanimal = "owl"\n'


def test_bad_settings_are_refused_when_the_file_is_read(tmp_path):
    path = tmp_path / "run.toml"
    cases = {
        '[model]\ndtype = "float8"\n': "[model] dtype: 'float8' is not one of auto, stored",
        "[lora]\nlearning_rate = nan\n": "[lora] learning_rate: expected a finite number, got nan",
        "[lora]\nlearning_rate = inf\n": "[lora] learning_rate: expected a finite number, got inf",
        "[lora]\nlearning_rate = 0.0\n": "learning_rate must be a finite number above 0",
        "[lora]\nalpha = -1.0\n": "alpha must be a finite number above 0",
        "[lora]\nseed = -1\n": "seed must lie in [0, 2^32)",
        "[lora]\nsteps_per_checkpoint = 0\n": "steps_per_checkpoint must be at least 1",
        "[numbers]\ntemperature = nan\n": "[numbers] temperature: expected a finite number",
        "[model]\nmemory_budget_gb = -2.0\n": "[model] memory_budget_gb: must be positive",
    }
    for text, expected in cases.items():
        path.write_text(MINIMAL + text)
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert str(path) in str(info.value) and expected in str(info.value), (text, str(info.value))


def test_cli_refuses_a_bad_config_before_creating_the_run_folder(tmp_path, capsys):
    from symbiont_app.cli import main

    path = tmp_path / "run.toml"
    path.write_text(MINIMAL + '[model]\ndtype = "float8"\n')
    out = tmp_path / "out"
    assert main(["lab", "run", str(path), "--out", str(out)]) != 0
    assert "dtype" in capsys.readouterr().err
    assert not out.exists()  # so the corrected config is not then refused by a half-made folder


def test_a_run_folder_is_owned_by_one_run(tmp_path):
    """A second run on a folder another run owns is refused before it writes anything; the lock
    goes with the owning process, however it ends (no stale lock to clean up after a kill)."""
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from symbiont_lab.run_folder import owned
        with owned(Path({str(out)!r})):
            print("held", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        config = parse_config({"trait": {"kind": "system_prompt", "animal": "owl"}})
        with pytest.raises(RunFolderError, match=rf"{out}: another run is using this folder \(process {holder.pid}\)"):
            run_subliminal(config, out)
        assert sorted(p.name for p in out.iterdir()) == [run_folder.LOCK_FILE]  # nothing else written
        from symbiont_lab.negation.experiments import NegationConfig
        from symbiont_lab.negation.runner import run_lab

        with pytest.raises(ValueError, match="another run is using this folder"):
            run_lab(NegationConfig(seeds=1), out, workers=1, verbose=False)
    finally:
        holder.kill()  # SIGKILL: the kernel releases the lock with the process
        holder.wait()
    with run_folder.owned(out, RunFolderError):
        pass


def test_the_lock_also_refuses_a_second_run_in_the_same_process(tmp_path):
    with run_folder.owned(tmp_path / "run", RunFolderError):
        with pytest.raises(RunFolderError, match="another run is using this folder"):
            with run_folder.owned(tmp_path / "run", RunFolderError):
                pass


def test_undefined_statistics_are_reported_as_undefined():
    p, used = sign_flip_test([0.1, float("nan"), 0.2])
    assert math.isnan(p) and used == 0  # was p = 0: "significant"
    assert math.isnan(paired_comparison([0.1, 0.2, 0.3], [0.2, float("nan"), 0.1]).p_value)
    from symbiont_lab.subliminal.report import _compare, _fmt_diff, verdict

    c = _compare([0.1, 0.2, 0.3], [0.2, float("nan"), 0.1])
    assert c["p_value"] is None and c["difference"] is None and "not a finite number" in c["undefined"]
    assert _fmt_diff(c).startswith("undefined")
    fine = _compare([0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8])
    text = verdict({"animal": "owl", "comparisons": {"sampled:favourite": {"trait_vs_control": c},
                                                      "logit:favourite": {"trait_vs_control": fine}}})
    assert text.startswith("No verdict: the primary probe's comparison is undefined"), text
    assert "Significant" not in text and "p = 0 " not in text
    json.dumps(c, allow_nan=False)  # valid JSON: None, never NaN


def test_a_loss_that_stops_being_finite_stops_training(tmp_path, tokenizer):
    data = write_numbers_dataset(tmp_path / "data", n=12)
    config = LoRAConfig(iters=6, batch_size=4, learning_rate=1e30, warmup_steps=0, grad_clip=None)
    with pytest.raises(StudentError, match=r"ad: the training loss became (nan|inf) at step \d"):
        train_student(tiny_loaded(tokenizer), data, tmp_path / "ad", config)


def test_the_distributed_launcher_exits_non_zero_when_a_rank_fails(tmp_path, tiny_folder):
    """mlx.launch can exit 0 when a rank failed: the launcher reads every rank's status file."""
    import os

    data = write_numbers_dataset(tmp_path / "data", n=16)
    out = tmp_path / "ad"
    out.mkdir()
    (out / "rank1.json").write_text('{"rank": 1, "ok": true}')  # stale, from an earlier launch: must not count
    cmd = [sys.executable, "-m", "symbiont_lab.subliminal.distributed", "--launch", "2", "--model", str(tiny_folder),
           "--data", str(data), "--adapter-dir", str(out), "--iters", "1", "--batch-size", "3"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert proc.returncode != 0, proc.stdout + proc.stderr
    # Both ranks fail the same check, but once one exits mlx.launch may kill the other before it
    # writes its status: each rank is named either with the error or as never reported, and at
    # least one carries the error. Rank 1's stale "ok" file counts for neither.
    failed = "failed: SystemExit: batch size 3 does not divide over 2 processes"
    for rank in (0, 1):
        assert (f"distributed: rank {rank}: {failed}" in proc.stderr
                or f"distributed: rank {rank}: never reported" in proc.stderr), proc.stderr
    assert f"distributed: rank 0: {failed}" in proc.stderr or f"distributed: rank 1: {failed}" in proc.stderr, \
        proc.stderr


def test_rank_failures_names_every_rank_that_did_not_succeed(tmp_path):
    from symbiont_lab.subliminal.distributed import rank_failures, write_rank_status

    write_rank_status(tmp_path, 0, {"rank": 0, "ok": True})
    write_rank_status(tmp_path, 1, {"rank": 1, "ok": False, "error": "RuntimeError: out of memory"})
    (tmp_path / "rank3.json").write_text("{not json")
    assert rank_failures(tmp_path, 4) == [
        "rank 1: failed: RuntimeError: out of memory",
        "rank 2: never reported (killed, or failed before training started)",
        f"rank 3: unreadable status {tmp_path / 'rank3.json'} (Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1))"]
    assert rank_failures(tmp_path, 1) == []
