"""The Metal check of the app and of the macOS workflow: each outcome of ``check_metal``,
the CI verdict that compares the built app with the build's venv, and the self-check's
use of it. Linux has no Metal device: the GPU's answers are stood in for by replacing the
probe (``_probe``) where a test needs one; the "no GPU" outcome is this machine's own."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest

from mlx_hooks import metal_check
from mlx_hooks.metal_check import MetalCheck, check_metal, verdict

METALLIB_ERROR = RuntimeError("[metal::Device] Failed to load the default metallib. library not found")


def _gpu_answers(monkeypatch, gpu):
    """MLX reports a Metal device whose kernels answer ``gpu(cpu_result)`` (or raise it)."""
    real = metal_check._probe
    monkeypatch.setattr(mx.metal, "is_available", lambda: True)
    monkeypatch.setattr(mx, "device_info", lambda *a, **k: {"device_name": "Apple Paravirtual device"})

    def probe(device):
        if device == mx.gpu:
            if isinstance(gpu, Exception):
                raise gpu
            return gpu(real(mx.cpu))
        return real(device)

    monkeypatch.setattr(metal_check, "_probe", probe)


def test_this_machine_without_metal_says_no_gpu():
    check = check_metal()
    if mx.metal.is_available():
        pytest.skip("this machine has Metal: the outcome is its GPU's (see the macOS workflow)")
    assert check.status == "no-gpu" and not check.usable and "no Metal device" in check.detail


def test_metal_claimed_but_the_gpu_cannot_run_kernels_fails_with_mlxs_error(monkeypatch):
    if mx.metal.is_available():
        pytest.skip("this machine has Metal: MLX would really run the kernels")
    monkeypatch.setattr(mx.metal, "is_available", lambda: True)  # MLX's GPU stream then raises
    check = check_metal()
    assert check.status == "failed" and not check.metallib_error and "raised" in check.detail


def test_outcomes_of_a_gpu(monkeypatch):
    _gpu_answers(monkeypatch, lambda cpu: cpu)
    ok = check_metal()
    assert ok.status == "ok" and ok.usable and ok.device == "Apple Paravirtual device" and ok.max_abs_error == 0.0
    _gpu_answers(monkeypatch, lambda cpu: cpu + 0.5)
    wrong = check_metal()
    assert wrong.status == "unusable" and not wrong.usable and wrong.max_abs_error == pytest.approx(0.5)
    _gpu_answers(monkeypatch, lambda cpu: np.full_like(cpu, np.nan))
    assert check_metal().status == "unusable"
    _gpu_answers(monkeypatch, METALLIB_ERROR)
    missing = check_metal()
    assert missing.status == "failed" and missing.metallib_error and "Failed to load the default metallib" in missing.detail


def _check(status, metallib_error=False):
    return MetalCheck(status, f"{status} detail", metallib_error=metallib_error)


@pytest.mark.parametrize("venv, app, passed, verified", [
    (_check("ok"), _check("ok"), True, True),
    (_check("unusable"), _check("ok"), True, True),
    (_check("ok"), _check("failed", True), False, False),          # the bundle lost its metallib
    (_check("unusable"), _check("failed", True), False, False),    # ... even on a GPU that computes wrong
    (_check("failed"), _check("failed", True), False, False),      # the venv's MLX loads its library; the app's not
    (_check("ok"), _check("failed"), False, False),                # the app's MLX fails where the venv's works
    (_check("ok"), _check("unusable"), False, False),
    (_check("unusable"), _check("unusable"), True, False),         # a paravirtual GPU: say so, do not pass silently
    (_check("failed"), _check("failed"), True, False),
    (_check("no-gpu"), _check("no-gpu"), True, False),
    (_check("failed", True), _check("failed", True), True, False),  # neither finds a metallib: not the bundle's fault
])
def test_ci_verdict(venv, app, passed, verified):
    result = verdict(venv, app)
    assert (result.passed, result.verified) == (passed, verified)
    if passed and not verified:
        assert result.message.startswith("Metal NOT verified: this machine has no usable GPU")


def test_command_line_exit_codes_json_and_github_annotations(tmp_path, monkeypatch, capsys):
    out = tmp_path / "app.json"
    code = metal_check.main(["--json", str(out)])
    assert code == metal_check.EXIT_CODES[check_metal().status]
    assert MetalCheck.from_dict(json.loads(out.read_text())).status == check_metal().status
    venv, app = tmp_path / "venv.json", tmp_path / "app2.json"
    venv.write_text(json.dumps(_check("unusable").to_dict()))
    app.write_text(json.dumps(_check("failed", True).to_dict()))
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    capsys.readouterr()
    assert metal_check.main(["--verdict", str(venv), str(app)]) == 1
    printed = capsys.readouterr().out
    assert printed.startswith("FAILED: the app cannot load its mlx.metallib") and "::error title=Metal check failed::" in printed
    app.write_text(json.dumps(_check("unusable").to_dict()))
    assert metal_check.main(["--verdict", str(venv), str(app)]) == 0
    assert "::warning title=Metal not verified on this runner::Metal NOT verified" in capsys.readouterr().out
    assert summary.read_text().count("**Metal**") == 2
    (tmp_path / "bad.json").write_text('{"status": "fine"}')
    with pytest.raises(SystemExit, match="bad.json: cannot read a Metal check result"):
        metal_check.main(["--verdict", str(venv), str(tmp_path / "bad.json")])


def test_app_entry_metal_check(tmp_path, capsys):
    from symbiont_app.frozen_main import main

    report = tmp_path / "metal.json"
    assert main(["--metal-check", "--report-json", str(report)]) == metal_check.EXIT_CODES[check_metal().status]
    assert json.loads(report.read_text())["status"] == check_metal().status
    assert capsys.readouterr().out.startswith("metal: ")


def test_self_check_on_gpu_refuses_a_machine_without_a_usable_gpu(tmp_path, tiny_folder, monkeypatch, capsys):
    from symbiont_app.frozen_main import self_check

    monkeypatch.setenv("SYMBIONT_CACHE_DIR", str(tmp_path / "cache"))
    _gpu_answers(monkeypatch, lambda cpu: cpu * 2)
    report = tmp_path / "report.json"
    assert self_check(str(tiny_folder), device="gpu", report_json=str(report)) == 1
    assert "--device gpu: no usable GPU on this machine (unusable" in capsys.readouterr().out
    assert json.loads(report.read_text())["metal"]["status"] == "unusable"


def test_self_check_fails_on_a_broken_metallib_whatever_the_device_choice(tmp_path, tiny_folder, monkeypatch, capsys):
    from symbiont_app.frozen_main import self_check

    monkeypatch.setenv("SYMBIONT_CACHE_DIR", str(tmp_path / "cache"))
    _gpu_answers(monkeypatch, METALLIB_ERROR)
    assert self_check(str(tiny_folder), device="auto") == 1
    assert "self-check: FAILED: RuntimeError: Metal: running a kernel on the GPU raised RuntimeError" in \
        capsys.readouterr().out
