"""The student: LoRA fine-tuning of the base model on a teacher's numbers, through mlx-lm.

Everything that trains is mlx-lm's: its chat dataset (with ``mask_prompt``, so only the
answer tokens carry loss), its LoRA layers (``linear_to_lora_layers``), its
``trainer.train`` loop (compiled step, gradient averaging over an ``mx.distributed``
group). What this module adds is what that loop does not do for a lab run:

- a deterministic data order that survives a resume (mlx-lm's batch iterator draws
  from NumPy's global RNG, which validation also draws from: we give the training
  iterator its own RNG state and skip the batches already trained on);
- checkpoints holding adapters *and* optimizer state, step, RNG and loss history in
  one atomically written file, so an interrupted run resumes to the same final
  adapters as an uninterrupted one;
- cancellation (``should_stop``) and a live loss callback (``on_report``);
- gradient-norm clipping (the published protocol clips at 1.0; mlx-lm's loop does not);
- a memory estimate checked before anything trains (:mod:`.student_memory`).

The adapter folder is the one ``mlx_lm.generate --adapter-path`` reads
(``adapter_config.json`` + ``adapters.safetensors``), plus ``checkpoint.safetensors``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import mlx.optimizers as optim

from mlx_hooks.errors import SymbiontError

from .dataset import read_chat_records
from .student_checkpoint import (
    ADAPTER_CONFIG,
    ADAPTERS_FILE,
    Checkpoint,
    dataset_digest,
    load_adapter_weights,
    read_checkpoint,
    write_adapters,
    write_checkpoint,
)

DEFAULT_KEYS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


class StudentError(SymbiontError):
    """A student run that cannot start or resume (bad dataset, foreign checkpoint, bad config)."""


@dataclass
class LoRAConfig:
    """LoRA fine-tuning settings; defaults follow the published open-model protocol."""

    rank: int = 8
    """LoRA rank r."""
    alpha: float = 8.0
    """LoRA alpha; the update is scaled by alpha / rank (mlx-lm's ``scale``)."""
    dropout: float = 0.0
    """Dropout on the LoRA input."""
    keys: tuple[str, ...] | None = None
    """Module paths inside a decoder layer to adapt; None = every attention and MLP
    projection the layer has (q/k/v/o/gate/up/down on llama-like models)."""
    num_layers: int = -1
    """How many decoder layers, counted from the last, get adapters; -1 = all."""
    learning_rate: float = 2e-4
    """Peak learning rate (Adam)."""
    warmup_steps: int = 5
    """Linear warm-up from 0 to ``learning_rate``."""
    schedule: str = "linear"
    """After warm-up: ``linear`` (decay to 0 at the last step), ``cosine`` or ``constant``."""
    epochs: float = 3.0
    """Passes over the training set (ignored when ``iters`` is set)."""
    batch_size: int = 4
    """Sequences per step (summed over processes when distributed)."""
    grad_accumulation_steps: int = 1
    """Steps whose gradients are summed before one update (effective batch = batch_size × this)."""
    grad_clip: float | None = 1.0
    """Clip the global gradient norm to this (None: no clipping)."""
    max_seq_length: int = 500
    """Longer sequences are truncated."""
    mask_prompt: bool = True
    """Loss on the assistant answer only (mlx-lm's ``mask_prompt``)."""
    seed: int = 0
    """Seeds the LoRA initialisation and the data order."""
    steps_per_checkpoint: int = 50
    """Checkpoint (adapters + optimizer state) every this many steps, and at the end."""
    steps_per_eval: int = 0
    """Validation loss every this many steps (0: never; needs ``valid.jsonl``)."""
    val_batches: int = 25
    """Validation batches per evaluation (-1: the whole set)."""
    iters: int | None = None
    """Total optimizer steps; overrides ``epochs`` when set."""

    def __post_init__(self):
        # Checked here, not where they are used: a NaN learning rate trains to NaN losses without
        # an error, and a zero batch size or rank fails deep inside mlx-lm.
        for name in ("learning_rate", "alpha"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number above 0, got {value!r}")
        if not (math.isfinite(self.dropout) and 0 <= self.dropout < 1):
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout!r}")
        if not math.isfinite(self.epochs) or self.epochs <= 0:
            raise ValueError(f"epochs must be a finite number above 0, got {self.epochs!r}")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            raise ValueError(f"grad_clip must be a finite number above 0 (or none), got {self.grad_clip!r}")
        for name in ("rank", "batch_size", "grad_accumulation_steps", "max_seq_length", "steps_per_checkpoint"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        for name in ("warmup_steps", "steps_per_eval"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be at least 0, got {getattr(self, name)!r}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must lie in [0, 2^32), got {self.seed!r}")
        if self.iters is not None and self.iters < 1:
            raise ValueError(f"iters must be at least 1, got {self.iters!r}")

    def lora_parameters(self, model) -> dict:
        keys = list(self.keys) if self.keys else present_projection_keys(model)
        return {"rank": self.rank, "scale": self.alpha / self.rank, "dropout": self.dropout, "keys": keys}

    def to_json(self) -> dict:
        data = asdict(self)
        data["keys"] = list(self.keys) if self.keys else None
        return data

    @classmethod
    def from_json(cls, data: dict) -> "LoRAConfig":
        data = dict(data)
        if data.get("keys"):
            data["keys"] = tuple(data["keys"])
        return cls(**data)


@dataclass
class TrainResult:
    """What a (possibly cancelled) training call did."""

    adapter_dir: str
    steps_done: int
    total_steps: int
    losses: list[tuple[int, float]] = field(default_factory=list)
    """(step, training loss) for every step since the start of the run (resumes included)."""
    val_losses: list[tuple[int, float]] = field(default_factory=list)
    resumed_from: int = 0
    """Step the call resumed at (0: fresh start)."""
    stopped: bool = False
    """True when ``should_stop`` ended it early (resume by calling again)."""

    @property
    def final_loss(self) -> float | None:
        return self.losses[-1][1] if self.losses else None


def present_projection_keys(model) -> list[str]:
    """The default keys that exist in this model's first decoder layer."""
    names = {name for name, _ in model.layers[0].named_modules()}
    keys = [k for k in DEFAULT_KEYS if k in names]
    if not keys:
        raise StudentError(f"{type(model).__name__}: none of {DEFAULT_KEYS} in its layers; pass LoRAConfig.keys")
    return keys


def as_loaded(loaded_or_spec: Any):
    """A ``LoadedModel`` (or anything with ``.model`` and ``.tokenizer``) or a model spec to load."""
    if isinstance(loaded_or_spec, str):
        from mlx_hooks.loader import load_model

        return load_model(loaded_or_spec)
    if not (hasattr(loaded_or_spec, "model") and hasattr(loaded_or_spec, "tokenizer")):
        raise TypeError("train_student needs a LoadedModel, an object with .model/.tokenizer, or a model spec")
    return loaded_or_spec


def has_lora(model) -> bool:
    from mlx_lm.tuner.lora import LoRALinear

    return any(isinstance(m, LoRALinear) for _, m in model.named_modules())


def add_lora(model, config: LoRAConfig) -> dict:
    """Freeze ``model`` and add fresh LoRA layers (seeded); returns mlx-lm's adapter config."""
    from mlx_lm.tuner.utils import linear_to_lora_layers

    if has_lora(model):
        raise StudentError("the model already carries LoRA layers; load a fresh base (or strip_lora) first")
    params = config.lora_parameters(model)
    mx.random.seed(config.seed)
    model.freeze()
    linear_to_lora_layers(model, config.num_layers if config.num_layers > 0 else len(model.layers), params)
    mx.eval(model.trainable_parameters())
    return {"fine_tune_type": "lora", "num_layers": config.num_layers if config.num_layers > 0 else len(model.layers),
            "lora_parameters": params}


def strip_lora(model) -> None:
    """Put the base layers back (the model is the base model again)."""
    from mlx_lm.tuner.utils import remove_lora_layers

    remove_lora_layers(model)


def load_chat_datasets(dataset_dir: str | Path, tokenizer, config: LoRAConfig):
    """mlx-lm ``CacheDataset``\\ s for ``train.jsonl`` and (if present) ``valid.jsonl``."""
    from types import SimpleNamespace

    from mlx_lm.tuner.datasets import CacheDataset, create_dataset

    folder = Path(dataset_dir)
    train_path = folder / "train.jsonl"
    if not train_path.is_file():
        raise StudentError(f"{folder}: no train.jsonl (expected an mlx-lm chat dataset folder)")
    options = SimpleNamespace(mask_prompt=config.mask_prompt)
    train_rows = read_chat_records(train_path, StudentError)
    if len(train_rows) < config.batch_size:
        raise StudentError(f"{train_path}: {len(train_rows)} examples, fewer than batch_size {config.batch_size}")
    train = CacheDataset(create_dataset(train_rows, tokenizer, options))
    valid_path = folder / "valid.jsonl"
    valid_rows = read_chat_records(valid_path, StudentError) if valid_path.is_file() else []
    valid = CacheDataset(create_dataset(valid_rows, tokenizer, options)) if len(valid_rows) >= config.batch_size else None
    return train, valid


def total_steps(config: LoRAConfig, n_train: int, world_size: int = 1) -> int:
    if config.iters is not None:
        return int(config.iters)
    per_epoch = n_train // config.batch_size  # mlx-lm drops the last partial batch
    return max(1, math.ceil(config.epochs * per_epoch / config.grad_accumulation_steps))


def learning_rate_schedule(config: LoRAConfig, steps: int):
    """Warm-up then the chosen decay, as an mlx.optimizers schedule over optimizer updates."""
    warm = min(config.warmup_steps, max(steps - 1, 0))
    rest = max(steps - warm, 1)
    if config.schedule == "linear":
        after = optim.linear_schedule(config.learning_rate, 0.0, rest)
    elif config.schedule == "cosine":
        after = optim.cosine_decay(config.learning_rate, rest)
    elif config.schedule == "constant":
        after = lambda step: mx.array(config.learning_rate, mx.float32)  # noqa: E731
    else:
        raise StudentError(f"schedule {config.schedule!r}: use linear, cosine or constant")
    if warm == 0:
        return after
    # warm-up from lr/warm (not 0) so the very first update moves the adapters
    return optim.join_schedules([optim.linear_schedule(config.learning_rate / warm, config.learning_rate, warm), after],
                                [warm])


def answer_only_loss(model, batch, lengths, positions=None, weights=None):
    """mlx-lm's ``default_loss`` with its mask's upper bound made exclusive, and the head run
    only where the loss is counted.

    mlx-lm 0.32 masks targets ``offset <= index <= length``: index ``length`` is the first
    padding column, so every row is also trained to predict token id 0 after its end
    (reported upstream as ml-explore/mlx-lm PR #1697). With ``mask_prompt`` that pad
    target is a sizeable share of a short number answer, so we count ``index < length``.

    ``positions`` / ``weights`` (``[B, A]``, from :func:`answer_positions`, passed by the
    trainer's batch iterator) name the target columns the mask keeps. The unembedding and the
    vocabulary-wide log-softmax then run at those columns only, not at every prompt and
    padding column whose loss the mask would zero: the same loss and gradients, and on the
    subliminal lab's chat records (a long prompt, a short number answer) most of the head's
    work is skipped (mlx-lm's loss has no such option: it calls ``model(inputs)``).
    """
    import mlx.nn as nn

    inputs, targets = batch[:, :-1], batch[:, 1:]
    if positions is not None:
        from mlx_hooks.points import ModelAdapter

        adapter = ModelAdapter(model)
        hidden = adapter.backbone(inputs)  # [B, L, D], after the final norm
        hidden = mx.take_along_axis(hidden, positions[..., None], axis=1)  # [B, A, D]
        logits = adapter.head(hidden)  # [B, A, V]
        ce = nn.losses.cross_entropy(logits, mx.take_along_axis(targets, positions, axis=1)) * weights
        ntoks = weights.sum()
        return ce.astype(mx.float32).sum() / ntoks, ntoks
    logits = model(inputs)  # [B, L, V]
    steps = mx.arange(1, targets.shape[1] + 1)  # index of each target in the unshifted row
    mask = mx.logical_and(steps >= lengths[:, 0:1], steps < lengths[:, 1:])
    ce = nn.losses.cross_entropy(logits, targets) * mask
    ntoks = mask.sum()
    return ce.astype(mx.float32).sum() / ntoks, ntoks


def answer_positions(lengths: np.ndarray, width: int, bucket: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """The target columns :func:`answer_only_loss` counts, per row: ``(positions, weights)``,
    int32 and float32 ``[B, A]``.

    ``lengths`` is mlx-lm's ``[B, 2]`` (offset, length) per row; ``width`` the number of target
    columns. Row ``b`` counts columns ``j`` with ``offset <= j + 1 < length``. ``A`` is the
    longest row's count rounded up to ``bucket`` (at most ``width``), so mlx-lm's compiled
    step sees few distinct shapes; the padding repeats a counted column with weight 0.
    """
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1, 2)
    lo = np.maximum(lengths[:, 0] - 1, 0)
    hi = np.minimum(lengths[:, 1] - 1, width)
    counts = np.maximum(hi - lo, 0)
    a = int(min(width, max(1, -(-int(counts.max(initial=0)) // bucket) * bucket)))
    steps = np.arange(a)[None, :]  # [1, A]
    valid = steps < counts[:, None]  # [B, A]
    positions = np.where(valid, lo[:, None] + steps, np.maximum(lo, 0)[:, None])
    positions = np.minimum(positions, width - 1)
    return positions.astype(np.int32), valid.astype(np.float32)


class ClippedAdam(optim.Adam):
    """Adam that clips the global gradient norm first. mlx-lm's training loop has no
    clipping option; the optimizer is the one place its compiled step lets us add it."""

    def __init__(self, learning_rate, max_grad_norm: float | None = None):
        super().__init__(learning_rate=learning_rate)
        self.max_grad_norm = max_grad_norm

    def apply_gradients(self, gradients: dict, parameters: dict):
        if self.max_grad_norm:
            gradients, _ = optim.clip_grad_norm(gradients, self.max_grad_norm)
        return super().apply_gradients(gradients, parameters)


def __getattr__(name: str):
    # The public entry points live in student_train, which imports this module: re-exported
    # lazily, so importing either module first works (an eager import here was circular).
    if name in ("train_student", "load_student"):
        from . import student_train

        return getattr(student_train, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["LoRAConfig", "TrainResult", "StudentError", "train_student", "load_student", "add_lora", "strip_lora",
           "load_chat_datasets", "answer_only_loss", "answer_positions", "ADAPTER_CONFIG", "ADAPTERS_FILE", "Checkpoint", "dataset_digest",
           "load_adapter_weights", "read_checkpoint", "write_adapters", "write_checkpoint"]
