"""Nothing assumes Metal-or-CPU: the backend is named (metal, cuda, cpu) and the memory budget
takes a CUDA device's memory as it takes Metal's working set."""

from __future__ import annotations

import mlx.core as mx
import pytest

from mlx_hooks import memory
from mlx_hooks.backend import BackendInfo, backend_info
from mlx_hooks.memory import GIB, memory_budget


@pytest.fixture
def on_cuda(monkeypatch):
    """MLX's default device is a CUDA GPU (the mlx-cuda wheels) reporting ``gpu_bytes`` of memory."""
    def set_gpu(gpu_bytes: int | None, name: str = "NVIDIA H200"):
        info = {"device_name": name, "architecture": "sm_90"}
        if gpu_bytes is not None:
            info["memory_size"] = gpu_bytes
        monkeypatch.setattr(mx, "device_info", lambda *a, **k: dict(info))
        monkeypatch.setattr(mx.cuda, "is_available", lambda: True)
        monkeypatch.setattr(mx, "default_device", lambda: mx.Device(mx.gpu, 0))
    monkeypatch.setattr(memory, "physical_memory_bytes", lambda: 128 * GIB)  # 96 GiB RAM share
    monkeypatch.delenv(memory.BUDGET_ENV, raising=False)
    return set_gpu


def test_budget_on_cuda_takes_the_smaller_of_ram_share_and_device_memory(on_cuda):
    on_cuda(24 * GIB, "NVIDIA RTX 4090")
    budget = memory_budget(other_processes=False)
    assert budget.bytes == 24 * GIB and budget.binding == "CUDA device memory"
    assert "CUDA device memory 24.00 GiB" in budget.describe() and "Metal" not in budget.describe()
    on_cuda(141 * GIB)
    budget = memory_budget(other_processes=False)
    assert budget.bytes == 96 * GIB and budget.binding == "75% of RAM" and budget.metal_bytes == 141 * GIB
    on_cuda(None)  # a device that reports no memory size: no GPU limit
    assert memory_budget(other_processes=False).metal_bytes is None


def test_cpu_budget_says_the_cpu_not_metal(monkeypatch):
    monkeypatch.setattr(mx, "device_info", lambda *a, **k: {})
    monkeypatch.setattr(mx.cuda, "is_available", lambda: False)
    monkeypatch.delenv(memory.BUDGET_ENV, raising=False)
    text = memory_budget(other_processes=False).describe()
    assert "no GPU memory limit: MLX's default device is the CPU" in text


@pytest.mark.parametrize("device,metal,cuda,backend", [
    ("Device(gpu, 0)", True, False, "metal"), ("Device(gpu, 0)", False, True, "cuda"),
    ("Device(cpu, 0)", False, True, "cpu"), ("Device(cpu, 0)", True, False, "cpu"),
])
def test_backend_is_named(device, metal, cuda, backend):
    info = BackendInfo(device, metal, "libblas", False, None, cuda_available=cuda, device_name="X" if cuda else "")
    assert info.backend == backend
    assert f"backend {backend}" in info.summary() and f"CUDA available: {cuda}" in info.summary()


def test_backend_info_here():
    info = backend_info()
    assert info.cuda_available == mx.cuda.is_available() and info.metal_available == mx.metal.is_available()
    assert info.backend == ("cpu" if mx.default_device().type == mx.cpu else "cuda" if info.cuda_available else "metal")
