"""Does MLX's Metal backend work in this process: its ``mlx.metallib`` found and loaded, and
kernels run on the GPU with the CPU's results?

    python -m mlx_hooks.metal_check [--json FILE]          this interpreter's MLX
    Symbiont --metal-check [--report-json FILE]            the built app's (frozen_main)
    python -m mlx_hooks.metal_check --verdict VENV APP     CI: judge the app against the venv

The outcomes (:attr:`MetalCheck.status`):

- ``ok``: the GPU ran a matmul, a reduction and an elementwise kernel, matching the CPU;
- ``no-gpu``: MLX reports no Metal device (Linux, a VM without one): nothing to check;
- ``unusable``: kernels ran but their numbers are wrong (a paravirtual GPU);
- ``failed``: loading the Metal library or running a kernel raised. ``metallib_error``
  says whether the error is MLX's "Failed to load the default metallib" (a packaging
  fault: the bundle's ``mlx.metallib`` is not where ``libmlx`` looks).

A hosted CI Mac has a paravirtual GPU that may not run MLX's kernels at all, so the app's
result alone cannot tell a broken bundle from a GPU that cannot compute. :func:`verdict`
compares the built app with the same MLX from the build's venv on the same runner: the
app fails the check when the venv's MLX works and the app's does not, or when only the
app cannot load its metallib; when neither can use the GPU the verdict says, explicitly,
that Metal could not be verified on this machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

STATUSES = ("ok", "no-gpu", "unusable", "failed")
EXIT_CODES = {"ok": 0, "failed": 1, "no-gpu": 3, "unusable": 3}
"""``--metal-check`` exit codes: 3 means "no usable GPU here", never a pass."""


@dataclass(frozen=True)
class MetalCheck:
    status: str
    """One of :data:`STATUSES`."""
    detail: str
    """What happened, in one sentence."""
    device: str | None = None
    """Metal's name for the GPU (``mx.device_info``), when there is one."""
    metallib: str | None = None
    """The ``mlx.metallib`` beside the loaded ``libmlx`` (None: not found there)."""
    metallib_error: bool = False
    """The failure was MLX's "failed to load the default metallib"."""
    max_abs_error: float | None = None
    """Largest difference between the GPU's and the CPU's results."""

    @property
    def usable(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "MetalCheck":
        if raw.get("status") not in STATUSES:
            raise ValueError(f"not a Metal check result: status {raw.get('status')!r}")
        return cls(**{k: raw.get(k) for k in cls.__dataclass_fields__ if k in raw})


def metallib_path() -> Path | None:
    """``mlx.metallib`` next to the ``libmlx`` this MLX loads (where MLX itself looks first)."""
    import mlx.core as mx

    lib = Path(mx.__file__).resolve().parent / "lib"
    for candidate in (lib / "mlx.metallib", lib / "Resources" / "mlx.metallib"):
        if candidate.exists():
            return candidate
    return None


def _probe(device) -> np.ndarray:
    """A matmul, an elementwise kernel and a reduction on ``device``; float32 ``[64]``."""
    import mlx.core as mx

    with mx.stream(device):
        a = mx.arange(64 * 64, dtype=mx.float32).reshape(64, 64) / 4096.0
        out = (a @ a.T + mx.sin(a)).sum(axis=1)
        mx.eval(out)
    return np.array(out)


def check_metal() -> MetalCheck:
    import mlx.core as mx

    library = metallib_path()
    where = str(library) if library else None
    if not mx.metal.is_available():
        return MetalCheck("no-gpu", "MLX reports no Metal device on this machine", metallib=where)
    try:
        device = str(mx.device_info(mx.gpu).get("device_name") or "") or None
    except Exception:  # noqa: BLE001 - the name is for the report only
        device = None
    try:
        gpu = _probe(mx.gpu)
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        message = f"{type(exc).__name__}: {exc}"
        return MetalCheck("failed", f"running a kernel on the GPU raised {message}", device, where,
                          metallib_error="metallib" in str(exc).lower())
    cpu = _probe(mx.cpu)
    error = float(np.max(np.abs(gpu - cpu))) if gpu.shape == cpu.shape else float("inf")
    if not np.all(np.isfinite(gpu)) or not np.allclose(gpu, cpu, rtol=1e-4, atol=1e-3):
        return MetalCheck("unusable", f"the GPU's kernels ran but differ from the CPU's (max error {error:.3g})",
                          device, where, max_abs_error=error)
    return MetalCheck("ok", f"metallib loaded, GPU kernels match the CPU (max error {error:.2g})", device, where,
                      max_abs_error=error)


@dataclass(frozen=True)
class Verdict:
    passed: bool
    """False only when the app is at fault."""
    verified: bool
    """Whether the app's Metal path was actually exercised with a working GPU."""
    message: str


def verdict(venv: MetalCheck, app: MetalCheck) -> Verdict:
    """Judge the built app's check against the build venv's on the same machine."""
    if app.usable:
        return Verdict(True, True, f"Metal verified in the app: {app.detail}")
    if app.status == "failed" and app.metallib_error and not (venv.status == "failed" and venv.metallib_error):
        return Verdict(False, False, f"the app cannot load its mlx.metallib (the venv's MLX can): {app.detail}")
    if venv.usable:
        return Verdict(False, False, f"the venv's MLX runs on this GPU but the app's does not: {app.detail}")
    return Verdict(True, False, f"Metal NOT verified: this machine has no usable GPU (venv: {venv.status}, "
                                f"{venv.detail}; app: {app.status}, {app.detail})")


def _read(path: str) -> MetalCheck:
    try:
        return MetalCheck.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        raise SystemExit(f"{path}: cannot read a Metal check result ({exc})") from exc


def _annotate(result: Verdict) -> None:
    """On GitHub Actions: an error or warning annotation and a line in the job summary, so an
    unverified Metal path is visible on the run's page, not only in its log."""
    import os

    if os.environ.get("GITHUB_ACTIONS") != "true":
        return
    if not result.passed:
        print(f"::error title=Metal check failed::{result.message}")
    elif not result.verified:
        print(f"::warning title=Metal not verified on this runner::{result.message}")
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        mark = "✅" if result.verified else ("❌" if not result.passed else "⚠️")
        with open(summary, "a", encoding="utf-8") as handle:
            handle.write(f"{mark} **Metal**: {result.message}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlx_hooks.metal_check", description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the result as JSON to this file")
    parser.add_argument("--verdict", nargs=2, metavar=("VENV_JSON", "APP_JSON"),
                        help="judge the app's result against the venv's; exit 1 only when the app is at fault")
    args = parser.parse_args(argv)
    if args.verdict:
        result = verdict(_read(args.verdict[0]), _read(args.verdict[1]))
        print(("" if result.passed else "FAILED: ") + result.message)
        _annotate(result)
        return 0 if result.passed else 1
    check = check_metal()
    print(f"metal: {check.status}: {check.detail}" + (f" [{check.device}]" if check.device else "")
          + f"; metallib: {check.metallib or 'not found beside libmlx'}")
    if args.json:
        from .atomic_io import atomic_write_bytes

        atomic_write_bytes(args.json, (json.dumps(check.to_dict(), indent=1) + "\n").encode())
    return EXIT_CODES[check.status]


if __name__ == "__main__":
    sys.exit(main())
