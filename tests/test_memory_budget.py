"""The memory budget on a Mac: Metal's recommended working set when it is below the RAM
share, the other Symbiont process's models, the wired limit mlx-lm's trainer leaves
raised, and the buffers a model switch must give back. Linux has no Metal device: its
report (``mx.device_info()``) and the wired limit are stood in for where needed."""

from __future__ import annotations

import gc
import weakref
import json
import os
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import pytest
from mlx.utils import tree_flatten

from mlx_hooks import memory
from mlx_hooks.errors import MemoryBudgetError
from mlx_hooks.memory import MemoryEstimate, check_budget, default_budget_bytes, memory_budget

GIB = 2**30
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def claims(tmp_path, monkeypatch):
    """Each test its own claims folder (other Symbiont processes on this machine stay out of it)."""
    folder = tmp_path / "claims"
    monkeypatch.setenv("SYMBIONT_MEMORY_CLAIMS_DIR", str(folder))
    monkeypatch.delenv("SYMBIONT_MEMORY_BUDGET_GB", raising=False)
    return folder


def _metal(monkeypatch, working_set: int | None):
    """The default device reports Metal's recommended working set (None: a CPU, no such key)."""
    info = {"architecture": "applegpu_g13g", "device_name": "Apple M1"}
    if working_set is not None:
        info["max_recommended_working_set_size"] = working_set
    monkeypatch.setattr(mx, "device_info", lambda *a, **k: dict(info))


def test_the_smaller_of_ram_share_and_metal_working_set_binds(monkeypatch):
    monkeypatch.setattr(memory, "physical_memory_bytes", lambda: 16 * GIB)  # a 16 GB Mac: 12 GiB RAM share
    _metal(monkeypatch, int(10.67 * GIB))  # what macOS recommends on such a Mac
    budget = memory_budget()
    assert budget.bytes == int(10.67 * GIB) == default_budget_bytes()
    assert budget.binding == "Metal's recommended working set" and budget.ram_share_bytes == 12 * GIB
    assert "set by Metal's recommended working set" in budget.describe() and "75% of RAM 12.00 GiB" in budget.describe()
    _metal(monkeypatch, 100 * GIB)
    assert memory_budget().bytes == 12 * GIB and memory_budget().binding == "75% of RAM"
    _metal(monkeypatch, None)  # MLX on the CPU: no Metal limit
    assert memory_budget().metal_bytes is None and memory_budget().bytes == 12 * GIB
    monkeypatch.setenv("SYMBIONT_MEMORY_BUDGET_GB", "3")
    assert memory_budget().bytes == 3 * GIB and memory_budget().binding == "SYMBIONT_MEMORY_BUDGET_GB=3"


def test_the_real_device_on_this_machine():
    info = mx.device_info()
    expected = info.get("max_recommended_working_set_size")
    assert memory.metal_working_set_bytes() == (int(expected) if expected else None)


def test_a_refusal_says_which_limit_bound(monkeypatch):
    monkeypatch.setattr(memory, "physical_memory_bytes", lambda: 16 * GIB)
    _metal(monkeypatch, 10 * GIB)
    budget = memory_budget()
    estimate = MemoryEstimate(11 * GIB, 0, 0, 4096, "float16")
    with pytest.raises(MemoryBudgetError, match="over the memory budget of 10.00 GiB \\(budget 10.00 GiB: limit "
                                                "10.00 GiB set by Metal's recommended working set"):
        check_budget(estimate, budget.bytes, "loading big", budget=budget)
    with pytest.raises(MemoryBudgetError) as plain:
        check_budget(estimate, budget.bytes, "loading big")  # the old call still works
    assert "set by" not in str(plain.value)


_HOLDER = """
import gc, sys
from mlx_hooks.loader import load_model
loaded = load_model(sys.argv[1], memory_budget_bytes=None)
print(loaded.estimate.total_bytes, flush=True)
sys.stdin.readline()
model = loaded.model
del loaded, model
gc.collect()
print("freed", flush=True)
sys.stdin.readline()
"""


def test_a_model_held_by_another_symbiont_process_comes_off_this_ones_budget(tiny_folder, claims, monkeypatch):
    monkeypatch.setattr(memory, "physical_memory_bytes", lambda: 16 * GIB)
    alone = memory_budget().bytes
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tiny_folder)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        held = int(holder.stdout.readline())
        budget = memory_budget()
        assert [c.pid for c in budget.others] == [holder.pid] and budget.others_bytes == held > 0
        assert budget.bytes == alone - held == default_budget_bytes()
        assert f"less {held / 2**20:.1f} MiB held by other Symbiont processes (pid {holder.pid}: {tiny_folder} (" \
            in budget.describe()
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "freed"
        assert memory_budget().others == () and memory_budget().bytes == alone  # the claim went with the model
    finally:
        holder.stdin.close()
        holder.wait(30)
    assert not list(claims.glob("*.json"))


def test_claims_of_processes_that_died_are_ignored_and_removed(claims):
    from mlx_hooks.memory_claims import other_claims

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    claims.mkdir(parents=True)
    (claims / f"{dead_pid}.json").write_text(json.dumps({"pid": dead_pid, "bytes": 5 * GIB, "what": ["x"]}))
    (claims / "notes.json").write_text("{}")  # not a claim: left alone
    assert other_claims() == []
    assert not (claims / f"{dead_pid}.json").exists() and (claims / "notes.json").exists()


def test_models_estimate_says_which_limit_binds(tiny_folder, monkeypatch, capsys):
    from symbiont_app.cli import main

    monkeypatch.setattr(memory, "physical_memory_bytes", lambda: 8 * GIB)
    _metal(monkeypatch, int(5.33 * GIB))
    assert main(["models", "estimate", str(tiny_folder), "--context", "256"]) == 0
    out = capsys.readouterr().out
    assert "budget 5.33 GiB: limit 5.33 GiB set by Metal's recommended working set" in out
    assert "75% of RAM 6.00 GiB" in out and "budget 5.33 GiB: fits" in out
    _metal(monkeypatch, None)
    assert main(["models", "estimate", str(tiny_folder), "--context", "256"]) == 0
    assert "set by 75% of RAM" in capsys.readouterr().out


def test_switching_models_gives_the_old_ones_memory_back(tiny_folder, claims):
    from mlx_hooks.chat import ChatSession
    from mlx_hooks.loader import load_model
    from mlx_hooks.memory_claims import claimed_by, held_bytes
    from symbiont_app.engine.state import EngineState

    state = EngineState()
    # Models of earlier tests in this process may still be held (awaiting the collector, kept by a
    # fixture, or loaded by an engine thread an earlier test left behind): this test follows its own
    # model's claim, so it does not depend on which tests ran before it or beside it.
    gc.collect()
    mx.clear_cache()
    before = mx.get_active_memory()
    loaded = load_model(str(tiny_folder), memory_budget_bytes=None)
    state.loaded, state.chat = loaded, ChatSession(loaded.model, loaded.tokenizer)
    list(state.chat.send("hello", max_tokens=4))  # a KV cache and temporaries too
    weights = sum(p.nbytes for _, p in tree_flatten(loaded.model.parameters()))
    assert claimed_by(loaded.model) == loaded.estimate.total_bytes and mx.get_active_memory() - before >= weights
    model = weakref.ref(loaded.model)
    del loaded
    state.reset_model()
    assert model() is None, "the old model is still referenced"  # and with it gone, its claim is released
    assert mx.get_cache_memory() == 0, "MLX still caches the old model's buffers"
    assert mx.get_active_memory() - before < weights // 4
    if held_bytes() == 0:
        assert not list(claims.glob("*.json"))


class _WiredLimit:
    """Stands in for MLX's wired limit (0 by default; a Mac with macOS 15 applies it)."""

    def __init__(self):
        self.value = 0
        self.calls = []

    def __call__(self, limit):
        previous, self.value = self.value, int(limit)
        self.calls.append(int(limit))
        return previous


def test_lora_training_puts_the_wired_limit_back(tmp_path, monkeypatch, tokenizer):
    from test_subliminal_student import tiny_loaded, write_numbers_dataset

    from symbiont_lab.subliminal.student import LoRAConfig, train_student

    wired = _WiredLimit()
    _metal(monkeypatch, 12 * GIB)
    monkeypatch.setattr(mx, "set_wired_limit", wired)
    data = write_numbers_dataset(tmp_path / "data")
    train_student(tiny_loaded(tokenizer), data, tmp_path / "ad", LoRAConfig(iters=2, batch_size=4))
    assert 12 * GIB in wired.calls, "mlx-lm's trainer did not raise the limit: the test no longer tests anything"
    assert wired.value == 0, f"the wired limit was left at {wired.value / GIB:.1f} GiB"


def test_wired_limit_restored_does_nothing_on_the_cpu(monkeypatch):
    wired = _WiredLimit()
    _metal(monkeypatch, None)
    monkeypatch.setattr(mx, "set_wired_limit", wired)
    with memory.wired_limit_restored():
        pass
    assert wired.calls == []
