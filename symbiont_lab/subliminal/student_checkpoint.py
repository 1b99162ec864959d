"""Adapter files and training checkpoints of a student, written atomically.

``adapters.safetensors`` + ``adapter_config.json`` are mlx-lm's adapter folder format
(``mlx_lm.generate --adapter-path`` reads them). ``checkpoint.safetensors`` holds what a
resume needs in one file, so a kill between two writes can never pair adapters of one
step with optimizer moments of another: the LoRA weights (``adapter.*``), the optimizer
state (``optimizer.*``: step, learning rate, Adam moments), MLX's RNG key (``rng``), and
in the safetensors metadata the step, the config, the dataset digest and the loss history.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

from mlx_hooks.atomic_io import atomic_path, atomic_write_bytes
from mlx_hooks.errors import SymbiontError

ADAPTERS_FILE = "adapters.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
CHECKPOINT_FILE = "checkpoint.safetensors"


class AdapterError(SymbiontError):
    """An adapter or checkpoint file that is missing, truncated, corrupt or for another model."""


@dataclass
class Checkpoint:
    step: int
    total_steps: int
    adapter: dict[str, mx.array]
    optimizer: dict[str, mx.array]
    rng: mx.array | None
    config: dict
    dataset_digest: str
    losses: list[tuple[int, float]] = field(default_factory=list)
    val_losses: list[tuple[int, float]] = field(default_factory=list)


def dataset_digest(dataset_dir: str | Path) -> str:
    """SHA-256 over train.jsonl (and valid.jsonl): a resume must train on the same data."""
    digest = hashlib.sha256()
    for name in ("train.jsonl", "valid.jsonl"):
        path = Path(dataset_dir) / name
        if path.is_file():
            digest.update(name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _save_safetensors(path: Path, arrays: dict[str, mx.array], metadata: dict[str, str] | None = None) -> None:
    with atomic_path(path) as tmp:
        # mx.save_safetensors appends ".safetensors" to names without it: save under that, then move onto tmp
        named = tmp.with_name(tmp.name + ".safetensors")
        try:
            mx.save_safetensors(str(named), arrays, metadata=metadata or {})
            os.replace(named, tmp)
        finally:
            named.unlink(missing_ok=True)


def _load_safetensors(path: Path, what: str) -> tuple[dict[str, mx.array], dict[str, str]]:
    if not path.is_file():
        raise AdapterError(f"{path}: {what} not found")
    try:
        arrays, metadata = mx.load(str(path), return_metadata=True)
    except (RuntimeError, ValueError, OSError) as exc:
        raise AdapterError(f"{path}: corrupt or truncated {what} ({exc})") from None
    return arrays, metadata


def write_adapters(adapter_dir: str | Path, weights: dict[str, mx.array], adapter_config: dict) -> None:
    folder = Path(adapter_dir)
    _save_safetensors(folder / ADAPTERS_FILE, weights)
    atomic_write_bytes(folder / ADAPTER_CONFIG, json.dumps(adapter_config, indent=2).encode())


def load_adapter_weights(adapter_dir: str | Path) -> tuple[dict[str, mx.array], dict]:
    """The adapter weights and mlx-lm adapter config of a folder, with clear errors."""
    folder = Path(adapter_dir)
    config_path = folder / ADAPTER_CONFIG
    if not config_path.is_file():
        raise AdapterError(f"{folder}: no {ADAPTER_CONFIG} (not an adapter folder)")
    try:
        config = json.loads(config_path.read_text())
        config["lora_parameters"]["rank"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise AdapterError(f"{config_path}: not a valid mlx-lm adapter config ({type(exc).__name__}: {exc})") from None
    weights, _ = _load_safetensors(folder / ADAPTERS_FILE, "adapter weights")
    return weights, config


def write_checkpoint(adapter_dir: str | Path, ckpt: Checkpoint) -> None:
    arrays = {f"adapter.{k}": v for k, v in ckpt.adapter.items()}
    arrays.update({f"optimizer.{k}": v for k, v in ckpt.optimizer.items()})
    if ckpt.rng is not None:
        arrays["rng"] = ckpt.rng
    metadata = {
        "step": str(ckpt.step),
        "total_steps": str(ckpt.total_steps),
        "config": json.dumps(ckpt.config),
        "dataset_digest": ckpt.dataset_digest,
        "losses": json.dumps(ckpt.losses),
        "val_losses": json.dumps(ckpt.val_losses),
    }
    _save_safetensors(Path(adapter_dir) / CHECKPOINT_FILE, arrays, metadata)


def read_checkpoint(adapter_dir: str | Path) -> Checkpoint | None:
    """The folder's checkpoint, or None when it has none."""
    path = Path(adapter_dir) / CHECKPOINT_FILE
    if not path.exists():
        return None
    arrays, meta = _load_safetensors(path, "training checkpoint")
    try:
        return Checkpoint(
            step=int(meta["step"]),
            total_steps=int(meta["total_steps"]),
            adapter={k[len("adapter."):]: v for k, v in arrays.items() if k.startswith("adapter.")},
            optimizer={k[len("optimizer."):]: v for k, v in arrays.items() if k.startswith("optimizer.")},
            rng=arrays.get("rng"),
            config=json.loads(meta["config"]),
            dataset_digest=meta["dataset_digest"],
            losses=[tuple(x) for x in json.loads(meta["losses"])],
            val_losses=[tuple(x) for x in json.loads(meta["val_losses"])],
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise AdapterError(f"{path}: checkpoint metadata missing or unreadable ({type(exc).__name__}: {exc})") from None


def optimizer_arrays(optimizer) -> dict[str, mx.array]:
    return dict(tree_flatten(optimizer.state))


def restore_optimizer(optimizer, arrays: dict[str, mx.array], trainable: dict, path_hint: str) -> None:
    """Put a saved optimizer state back (step, learning rate, moments), checking it fits."""
    state = tree_unflatten(list(arrays.items()))
    optimizer.init(trainable)  # the expected structure, to check against
    expected = dict(tree_flatten(optimizer.state))
    step = arrays.get("step")
    if step is not None and step.size == 1 and int(step.item()) == 0 and set(arrays) < set(expected):
        # A step-0 checkpoint from before the moments were created with it: at step 0 they are
        # Adam's zeros, exactly what init() just made.
        arrays = {**expected, **arrays}
        state = tree_unflatten(list(arrays.items()))
    if set(expected) != set(arrays):
        missing = sorted(set(expected) - set(arrays))[:3]
        raise AdapterError(f"{path_hint}: optimizer state does not match this model's adapters (missing {missing})")
    for key, value in arrays.items():
        if expected[key].shape != value.shape:
            raise AdapterError(f"{path_hint}: optimizer state {key} has shape {value.shape}, expected {expected[key].shape}")
    optimizer.state = state
    optimizer.init(trainable)  # marks it initialised; every entry is already there
