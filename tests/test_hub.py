"""Hub repos without the Hub: estimate from headers, verdict before download, progress,
cancel and resume, error messages, cache first. Against tests/fake_hub.py's local server."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from fake_hub import FakeHub, FakeRepo
from hub_env import home, hub, leftovers, point_hub_at, tiny_repo_folder  # noqa: F401 - fixtures
from mlx_hooks.errors import DownloadCancelled, HubAccessError, MemoryBudgetError
from mlx_hooks.hub import cached_snapshot, download, fetch_model, looks_like_repo_id, plan_download
from mlx_hooks.hub_progress import DownloadProgress
from mlx_hooks.loader import estimate_for, estimate_for_plan, load_model, model_shape, read_config
from mlx_hooks.weights_shape import shape_from_tensors
from tiny_models import ARCHITECTURES, save_model_folder

HEADER_WINDOW = 100_001
"""Bytes huggingface-hub's get_safetensors_metadata reads from the start of a weight file."""


def _run_beside(fn, *args):
    """Run ``fn`` on a thread; returns (thread, outcome dict with "value" or "error")."""
    outcome: dict = {}

    def work():
        try:
            outcome["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - checked by the test
            outcome["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, outcome


def _wait_for_gets(hub: FakeHub, names, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = {e.path.rsplit("/", 1)[-1] for e in list(hub.log) if e.method == "GET" and not e.range}
        if set(names) <= got:
            return
        time.sleep(0.02)
    raise TimeoutError(f"no GET of {set(names) - got}")


def test_estimate_comes_from_headers_without_fetching_weights(hub, tiny_repo_folder):
    weights = tiny_repo_folder / "model.safetensors"
    assert weights.stat().st_size > 4 * HEADER_WINDOW  # so "read only a header window" means something
    plan = plan_download("org/tiny")
    assert hub.full_gets("model.safetensors") == 0
    assert 0 < hub.bytes_sent("model.safetensors") <= HEADER_WINDOW
    assert {f.name for f in plan.files} == {p.name for p in tiny_repo_folder.iterdir()}
    assert [f.name for f in plan.files if f.cached] == ["config.json"]  # the plan's one download
    assert plan.missing_bytes == sum(p.stat().st_size for p in tiny_repo_folder.iterdir() if p.name != "config.json")
    # the same estimate the loader makes from the files on disk
    assert estimate_for_plan(plan, "float32") == estimate_for(str(tiny_repo_folder), "float32")
    assert estimate_for_plan(plan, "stored", 512, 3) == estimate_for(str(tiny_repo_folder), "stored", 512, 3)
    assert estimate_for("org/tiny", "float32") == estimate_for(str(tiny_repo_folder), "float32")  # loader's own path
    assert hub.full_gets("model.safetensors") == 0


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_header_shape_matches_the_loader_for_every_family(model_type, tmp_path, home, monkeypatch):
    folder = save_model_folder(tmp_path / model_type, model_type)
    fake = FakeHub({f"org/{model_type}": FakeRepo.from_folder(folder)})
    point_hub_at(fake, home, monkeypatch)
    try:
        plan = plan_download(f"org/{model_type}")
        from mlx_hooks.loader import model_dims

        remote = shape_from_tensors(plan.config, plan.tensors, model_dims(folder, plan.config))
        assert remote == model_shape(folder, read_config(folder))
        assert fake.full_gets("model.safetensors") == 0
    finally:
        fake.stop()


def test_over_budget_is_refused_before_any_weight_is_fetched(hub, home):
    with pytest.raises(MemoryBudgetError, match=r"downloading org/tiny \(checked before fetching any weights\)"):
        fetch_model("org/tiny", estimate=lambda plan: estimate_for_plan(plan, "float32"), budget_bytes=64 * 1024)
    with pytest.raises(MemoryBudgetError, match="over the memory budget"):
        load_model("org/tiny", runtime_dtype="float32", memory_budget_bytes=64 * 1024)
    for name in ("model.safetensors", "tokenizer.json", "model.safetensors.index.json"):
        assert hub.full_gets(name) == 0, name
    assert cached_snapshot("org/tiny") is None
    assert not list((home / "hub").rglob("model.safetensors"))


def test_progress_is_monotonic_and_ends_at_the_total(hub, tiny_repo_folder):
    plan = plan_download("org/tiny")
    steps: list[DownloadProgress] = []
    folder = download(plan, steps.append)
    done = [s.done_bytes for s in steps]
    assert done[0] == 0 and done == sorted(done)
    assert len(set(done)) >= 5  # intermediate steps, not just start and end
    assert all(s.total_bytes == plan.missing_bytes for s in steps)
    assert steps[-1].done_bytes == plan.missing_bytes and steps[-1].fraction == 1.0
    assert steps[-1].rate_bytes_per_s > 0
    assert hub.full_gets("model.safetensors") == 1
    assert cached_snapshot("org/tiny") == folder
    loaded = load_model("org/tiny")
    assert loaded.source.kind == "hub" and loaded.folder == folder
    assert loaded.fingerprint == load_model(str(tiny_repo_folder)).fingerprint


def test_cancel_mid_download_then_a_rerun_fetches_only_what_is_missing(hub, home, tiny_repo_folder):
    plan = plan_download("org/tiny")
    hub.hold["model.safetensors"] = 64 * 1024
    cancel = threading.Event()
    steps: list[DownloadProgress] = []
    thread, outcome = _run_beside(download, plan, steps.append, cancel.is_set)
    assert hub.held.wait(30)
    small = [f for f in plan.missing if f.name != "model.safetensors"]
    _wait_for_gets(hub, [f.name for f in small])  # the other files were all served
    deadline = time.monotonic() + 30
    while not all(isinstance(_cached(home, f.name), str) for f in small) and time.monotonic() < deadline:
        time.sleep(0.02)
    cancel.set()
    hub.release.set()  # more bytes arrive: the next chunk sees the flag
    thread.join(30)
    assert isinstance(outcome.get("error"), DownloadCancelled), outcome
    assert "org/tiny: download cancelled" in str(outcome["error"])
    assert "resumes" in str(outcome["error"])
    assert steps and max(s.done_bytes for s in steps) < plan.missing_bytes
    assert leftovers(home) == []  # huggingface-hub removed its partial file
    assert cached_snapshot("org/tiny") is None  # incomplete: not taken for a model
    assert _cached(home, "model.safetensors") is None

    hub.hold.clear()
    again = plan_download("org/tiny")
    assert [f.name for f in again.missing] == ["model.safetensors"]
    resumed: list[DownloadProgress] = []
    folder = download(again, resumed.append)
    assert resumed[-1].done_bytes == resumed[-1].total_bytes == (tiny_repo_folder / "model.safetensors").stat().st_size
    assert cached_snapshot("org/tiny") == folder
    assert load_model("org/tiny").fingerprint == load_model(str(tiny_repo_folder)).fingerprint


def _cached(home, name):
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache("org/tiny", name, cache_dir=str(home / "hub"))
    return found if isinstance(found, str) else None


def test_gated_private_missing_and_unreachable_repos_say_what_to_do(hub, tiny_repo_folder, tmp_path, monkeypatch):
    files = FakeRepo.from_folder(tiny_repo_folder).files
    hub.repos["org/gated"] = FakeRepo(dict(files), gated=True)
    hub.repos["org/private"] = FakeRepo(dict(files), private=True)
    hub.repos["org/pytorch"] = FakeRepo({"config.json": files["config.json"], "pytorch_model.bin": b"\0" * 64})
    with pytest.raises(HubAccessError, match=r"org/gated: a gated repo \(401\).*hf auth login.*HF_TOKEN"):
        plan_download("org/gated")
    with pytest.raises(HubAccessError, match=r"org/private: no such model repo .*\(401\).*check the name.*hf auth login"):
        plan_download("org/private")
    with pytest.raises(HubAccessError, match=r"org/nope: no such model repo .*\(404\).*check the name"):
        plan_download("org/nope")
    with pytest.raises(HubAccessError, match=r"org/pytorch: the repo has no model.safetensors"):
        plan_download("org/pytorch")
    with pytest.raises(HubAccessError, match="org/nope: no such model repo"):
        load_model("org/nope")  # the loader says the same
    hub.stop()
    with pytest.raises(HubAccessError, match=r"org/tiny: not in the local Hugging Face cache and the Hub \(http://127"
                                             r".*could not be reached"):
        plan_download("org/tiny")


def test_cached_repo_loads_with_the_server_down(hub, tiny_repo_folder):
    folder = fetch_model("org/tiny")
    hub.stop()
    n_requests = len(hub.log)
    assert fetch_model("org/tiny") == folder
    assert estimate_for("org/tiny", "float32") == estimate_for(str(tiny_repo_folder), "float32")
    assert load_model("org/tiny").fingerprint == load_model(str(tiny_repo_folder)).fingerprint
    assert len(hub.log) == n_requests


def test_sharded_repo_plan_and_download(hub, tiny_repo_folder, tmp_path):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(tiny_repo_folder / "model.safetensors"))
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    files = {p.name: p.read_bytes() for p in tiny_repo_folder.iterdir() if p.name != "model.safetensors"}
    for shard, keys in shards.items():
        save_file({k: np.ascontiguousarray(tensors[k]) for k in keys}, str(tmp_path / shard))
        files[shard] = (tmp_path / shard).read_bytes()
    index = {"metadata": {}, "weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
    files["model.safetensors.index.json"] = json.dumps(index).encode()
    hub.repos["org/sharded"] = FakeRepo(files)
    plan = plan_download("org/sharded")
    assert set(plan.tensors) == set(tensors)
    for shard in shards:
        assert hub.full_gets(shard) == 0
    assert estimate_for_plan(plan, "float32") == estimate_for(str(tiny_repo_folder), "float32")
    folder = download(plan)
    assert sorted(p.name for p in folder.glob("*.safetensors")) == sorted(shards)
    assert load_model("org/sharded").fingerprint == load_model(str(tiny_repo_folder)).fingerprint


def test_progress_text_and_repo_ids():
    step = DownloadProgress("org/x", 50 * 2**20, 100 * 2**20, 10 * 2**20, 5.0, 5.0)
    assert step.describe() == "50.0 MiB of 100.0 MiB (50%), 10.0 MiB/s, 0:05 left"
    assert DownloadProgress("org/x", 0, 3 * 2**30, 0.0, None, 0.0).describe() == "0 B of 3.00 GiB (0%)"
    assert looks_like_repo_id("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert not looks_like_repo_id("default") and not looks_like_repo_id("./org/name")
    assert not looks_like_repo_id("org/model.gguf")


def test_models_info_on_an_uncached_repo_reads_its_config_not_its_weights(hub, capsys):
    from symbiont_app.cli import main

    assert main(["models", "info", "org/tiny"]) == 0
    out = capsys.readouterr().out
    assert "architecture: llama" in out and "widths: D=64, 3 layers" in out
    assert hub.full_gets("model.safetensors") == 0
