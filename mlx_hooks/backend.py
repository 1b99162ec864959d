"""Which MLX backend and which BLAS this process uses, and how to get a fast one.

MLX's Linux CPU wheel bundles the netlib *reference* BLAS; an optimized BLAS
(OpenBLAS) loaded ahead of it makes float32 matmuls many times faster (a 1024×1024
matmul on this project's busy 2-core Linux machine: 1026 ms reference, 73 ms OpenBLAS).
A shared library cannot be swapped once loaded, so launchers re-execute the
interpreter with ``LD_PRELOAD`` set before MLX is imported
(:func:`reexec_with_fast_blas`). On macOS MLX uses Accelerate and nothing is needed.

Run ``python -m mlx_hooks.backend --summary`` to print what is in use.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

# Debian/Ubuntu (libopenblas0-pthread), Fedora/RHEL, Arch. The first that exists wins.
OPTIMIZED_BLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)
_REEXEC_MARK = "SYMBIONT_BLAS_REEXEC"
_FAST_BLAS_NAMES = ("openblas", "mkl", "blis", "accelerate", "vecLib")


@dataclass(frozen=True)
class BackendInfo:
    """What MLX computes on in this process."""

    device: str
    """MLX's default device, e.g. ``"Device(gpu, 0)"`` (Metal or CUDA) or ``"Device(cpu, 0)"``."""
    metal_available: bool
    """Whether MLX's Metal backend is usable (Apple silicon)."""
    blas_library: str
    """Path of the library that provides ``cblas_sgemm`` to MLX (or ``"Accelerate"``)."""
    blas_is_reference: bool
    """True when that library is the slow netlib reference BLAS bundled with MLX."""
    optimized_blas_available: str | None
    """An optimized BLAS found on this system that could be preloaded, if any."""
    cuda_available: bool = False
    """Whether MLX's CUDA backend is usable (the ``mlx-cuda`` wheels on an NVIDIA GPU)."""
    device_name: str = ""
    """The GPU's name as MLX reports it (``"Apple M2 Max"``, an NVIDIA model), empty on the CPU."""

    @property
    def backend(self) -> str:
        """``metal``, ``cuda`` or ``cpu``: what MLX's default device computes on."""
        if "gpu" not in self.device:
            return "cpu"
        return "cuda" if self.cuda_available and not self.metal_available else "metal"

    @property
    def slow_blas_warning(self) -> str | None:
        """A one-line warning for the user when matmuls run on the reference BLAS."""
        if not self.blas_is_reference:
            return None
        fix = (
            f"restart through the `symbiont` launcher (it preloads {self.optimized_blas_available})"
            if self.optimized_blas_available
            else "install OpenBLAS (Debian/Ubuntu: apt-get install libopenblas0-pthread)"
        )
        return (
            "MLX is using its bundled reference BLAS on the CPU: matrix products are ~50x "
            f"slower than with an optimized BLAS; {fix}."
        )

    def summary(self) -> str:
        lines = [
            f"MLX device: {self.device}, backend {self.backend}" + (f" ({self.device_name})" if self.device_name else "")
            + f" (Metal available: {self.metal_available}, CUDA available: {self.cuda_available})",
            f"BLAS: {self.blas_library}" + (" [reference BLAS: slow]" if self.blas_is_reference else ""),
        ]
        if self.slow_blas_warning:
            lines.append("warning: " + self.slow_blas_warning)
        return "\n".join(lines)


def default_device_is_cpu() -> bool:
    """Whether MLX's default device is the CPU (what every CPU-only code path asks). Cheap, unlike
    :func:`backend_info`, which also probes the BLAS libraries (~0.6 ms): some callers ask every step."""
    import mlx.core as mx  # not at import: this module re-executes the program before MLX loads

    return mx.default_device().type == mx.DeviceType.cpu


def find_optimized_blas() -> str | None:
    """Path of an optimized BLAS on this Linux system (``SYMBIONT_BLAS`` overrides)."""
    if sys.platform != "linux":
        return None
    override = os.environ.get("SYMBIONT_BLAS")
    if override:
        return override if Path(override).exists() else None
    for candidate in OPTIMIZED_BLAS_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    return None


def _sgemm_provider() -> str:
    """Path of the shared object whose ``cblas_sgemm`` the dynamic linker resolves.

    Uses ``dladdr`` because the reference BLAS stays mapped even when a preloaded
    library overrides its symbols: which one *answers* is what matters.
    """
    import mlx.core  # noqa: F401  (maps MLX's BLAS into the process)

    if sys.platform == "darwin":
        return "Accelerate"

    class DlInfo(ctypes.Structure):
        _fields_ = [
            ("dli_fname", ctypes.c_char_p),
            ("dli_fbase", ctypes.c_void_p),
            ("dli_sname", ctypes.c_char_p),
            ("dli_saddr", ctypes.c_void_p),
        ]

    libc = ctypes.CDLL(None)
    try:
        address = ctypes.cast(libc.cblas_sgemm, ctypes.c_void_p).value
    except AttributeError:
        # Nothing preloaded: MLX's extension loaded its BLAS privately (RTLD_LOCAL),
        # so it is the BLAS mapped into the process.
        return _mapped_blas() or "unknown"
    info = DlInfo()
    if not libc.dladdr(ctypes.c_void_p(address), ctypes.byref(info)) or not info.dli_fname:
        return "unknown"
    return info.dli_fname.decode()


def _mapped_blas() -> str | None:
    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return None
    paths = [line.split()[-1] for line in maps if "/" in line]
    blas = [p for p in paths if "blas" in Path(p).name.lower()]
    # numpy brings its own (symbol-prefixed) OpenBLAS; the one MLX uses sits beside MLX.
    return next((p for p in blas if "mlx" in p), blas[0] if blas else None)


def backend_info() -> BackendInfo:
    import mlx.core as mx

    blas = _sgemm_provider()
    lowered = blas.lower()
    is_reference = sys.platform == "linux" and not any(n.lower() in lowered for n in _FAST_BLAS_NAMES)
    device = mx.default_device()
    name = ""
    if device.type == mx.gpu:
        try:
            name = str(mx.device_info().get("device_name") or "")
        except (RuntimeError, ValueError):
            pass  # the name is for the report only
    cuda = getattr(mx, "cuda", None)  # MLX releases before the CUDA backend have no mx.cuda
    return BackendInfo(
        device=str(device),
        metal_available=bool(mx.metal.is_available()),
        blas_library=blas,
        blas_is_reference=is_reference,
        optimized_blas_available=find_optimized_blas(),
        cuda_available=bool(cuda is not None and cuda.is_available()),
        device_name=name,
    )


def preload_path() -> str:
    """The library to put in ``LD_PRELOAD`` for a child process, or ``""``."""
    blas = find_optimized_blas()
    if not blas or blas in os.environ.get("LD_PRELOAD", ""):
        return ""
    return blas


def reexec_with_fast_blas() -> None:
    """Re-execute this interpreter with an optimized BLAS preloaded, when that helps.

    Call it first thing in a launcher, before MLX is imported. Does nothing on macOS,
    when no optimized BLAS exists, when it is already preloaded, or when
    ``SYMBIONT_NO_BLAS_REEXEC`` is set. Never loops (marks the environment).
    """
    if sys.platform != "linux" or os.environ.get("SYMBIONT_NO_BLAS_REEXEC"):
        return
    if os.environ.get(_REEXEC_MARK) or "mlx.core" in sys.modules:
        return
    blas = preload_path()
    if not blas:
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = blas + (":" + env["LD_PRELOAD"] if env.get("LD_PRELOAD") else "")
    env[_REEXEC_MARK] = "1"
    argv = list(getattr(sys, "orig_argv", [])) or [sys.executable, *sys.argv]
    try:
        os.execve(sys.executable, [sys.executable, *argv[1:]], env)
    except OSError:
        return  # keep running on the slow BLAS rather than fail to start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlx_hooks.backend", description=__doc__.splitlines()[0])
    parser.add_argument("--summary", action="store_true", help="print the MLX device and BLAS in use")
    parser.add_argument("--preload-path", action="store_true", help="print the optimized BLAS to LD_PRELOAD, or nothing")
    args = parser.parse_args(argv)
    if args.preload_path:
        print(preload_path())
        return 0
    reexec_with_fast_blas()  # report what the launchers would use
    print(f"platform: {platform.system()} {platform.machine()}")
    print(backend_info().summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
