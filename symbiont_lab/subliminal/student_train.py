"""``train_student`` and ``load_student``: the training call around mlx-lm's ``trainer.train``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from .student import (
    ClippedAdam,
    LoRAConfig,
    StudentError,
    TrainResult,
    add_lora,
    answer_only_loss,
    answer_positions,
    as_loaded,
    has_lora,
    learning_rate_schedule,
    load_chat_datasets,
    total_steps,
)
from .student_checkpoint import (
    AdapterError,
    Checkpoint,
    dataset_digest,
    load_adapter_weights,
    optimizer_arrays,
    read_checkpoint,
    restore_optimizer,
    write_adapters,
    write_checkpoint,
)


class _Stop(Exception):
    """Raised from the training callback to leave mlx-lm's loop after a checkpoint."""


def isolated_batches(seed: int, skip: int):
    """An ``iterate_batches`` for ``trainer.train``: mlx-lm's own iterator, but the training
    stream keeps a private NumPy RNG state (validation batches draw from the global one and
    would otherwise shift the training order) and skips the ``skip`` batches already trained."""
    from mlx_lm.tuner.trainer import iterate_batches

    def iterate(dataset, batch_size, max_seq_length, loop=False, seed_=None, comm_group=None, **kwargs):
        if not loop:  # validation: order does not matter
            for batch, lengths in iterate_batches(dataset, batch_size, max_seq_length, loop=False,
                                                  comm_group=comm_group):
                yield with_answer_positions(batch, lengths)
            return
        inner = iterate_batches(dataset, batch_size, max_seq_length, loop=True, seed=seed, comm_group=comm_group)
        private = None
        skipped = 0
        while True:
            outer = np.random.get_state()
            if private is not None:
                np.random.set_state(private)
            item = next(inner)  # the first call seeds NumPy with `seed` inside mlx-lm
            private = np.random.get_state()
            np.random.set_state(outer)
            if skipped < skip:
                skipped += 1
                continue
            yield with_answer_positions(*item)

    return iterate


def with_answer_positions(batch: mx.array, lengths: mx.array) -> tuple[mx.array, ...]:
    """mlx-lm's ``(batch, lengths)`` plus the columns :func:`answer_only_loss` counts (its
    ``positions``, ``weights``), computed on the host from the lengths mlx-lm built there."""
    positions, weights = answer_positions(np.array(lengths), batch.shape[1] - 1)
    return batch, lengths, mx.array(positions), mx.array(weights)


def _check_resume(ckpt: Checkpoint, config: LoRAConfig, digest: str, adapter_dir: Path) -> None:
    saved = LoRAConfig.from_json(ckpt.config).to_json()
    if saved != config.to_json():
        diff = sorted(k for k in saved if saved[k] != config.to_json()[k])
        raise StudentError(f"{adapter_dir}: its checkpoint was made with a different LoRA config ({', '.join(diff)} "
                           "differ); use a new adapter folder or the same config")
    if ckpt.dataset_digest != digest:
        raise StudentError(f"{adapter_dir}: its checkpoint was trained on a different dataset; use a new adapter folder")


def train_student(
    loaded_or_spec: Any,
    dataset_dir: str | Path,
    adapter_dir: str | Path,
    config: LoRAConfig | None = None,
    *,
    on_report: Callable[..., None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    memory_budget_bytes: int | None = -1,
    quiet: bool = True,
) -> TrainResult:
    """LoRA-train the base model on ``dataset_dir`` (mlx-lm chat JSONL) into ``adapter_dir``.

    Adds LoRA layers to the loaded model in place (it *is* the student afterwards; use
    :func:`strip_lora` or load a fresh base to get the base back). Resumes from
    ``adapter_dir/checkpoint.safetensors`` when present (same config and data required);
    a finished run returns at once. ``on_report(step, loss, lr, **info)`` is called after
    every optimizer step (info: ``total_steps``, ``tokens_per_second``, ``peak_memory_gb``, ``val_loss`` when
    one was measured). ``should_stop()`` is polled after every step: when it returns True
    a checkpoint is written and the call returns with ``stopped=True``.
    ``memory_budget_bytes``: -1 default budget, None no check.
    """
    from mlx_lm.tuner.callbacks import TrainingCallback
    from mlx_lm.tuner.trainer import TrainingArgs, train

    from mlx_hooks.memory import check_budget, default_budget_bytes, wired_limit_restored

    from .student_memory import estimate_lora_memory

    config = config or LoRAConfig()
    loaded = as_loaded(loaded_or_spec)
    model, tokenizer = loaded.model, loaded.tokenizer
    adapter_dir = Path(adapter_dir)
    train_set, valid_set = load_chat_datasets(dataset_dir, tokenizer, config)
    world = mx.distributed.init()
    steps = total_steps(config, len(train_set), world.size())
    digest = dataset_digest(dataset_dir)

    longest = max(train_set.itemlen(i) for i in range(len(train_set)))
    estimate = estimate_lora_memory(model, config, min(longest, config.max_seq_length))
    budget = default_budget_bytes() if memory_budget_bytes == -1 else memory_budget_bytes
    check_budget(estimate, budget, f"LoRA training on {getattr(loaded, 'name', 'the model')}")

    ckpt = read_checkpoint(adapter_dir)
    if ckpt is not None:
        _check_resume(ckpt, config, digest, adapter_dir)
    adapter_config = add_lora(model, config)
    optimizer = ClippedAdam(learning_rate_schedule(config, steps), max_grad_norm=config.grad_clip)
    start = 0
    losses: list[tuple[int, float]] = []
    val_losses: list[tuple[int, float]] = []
    if ckpt is not None:
        trainable = dict(tree_flatten(model.trainable_parameters()))
        bad = [k for k in trainable if k not in ckpt.adapter or ckpt.adapter[k].shape != trainable[k].shape]
        if bad or len(ckpt.adapter) != len(trainable):
            raise AdapterError(f"{adapter_dir}: checkpoint adapters do not fit this model (e.g. {bad[:2]})")
        model.load_weights(list(ckpt.adapter.items()), strict=False)
        restore_optimizer(optimizer, ckpt.optimizer, model.trainable_parameters(), str(adapter_dir))
        start, losses, val_losses = ckpt.step, list(ckpt.losses), list(ckpt.val_losses)
    # MLX's RNG key cannot be set back to a saved value, only re-seeded: the key is re-seeded
    # from the step before every step (here and in the callback), so dropout draws are the
    # same whether the run was resumed or not.
    mx.random.seed(config.seed + start)
    mx.eval(model.parameters(), optimizer.state)

    def save(step: int) -> None:
        if world.rank() != 0:
            return
        weights = dict(tree_flatten(model.trainable_parameters()))
        write_adapters(adapter_dir, weights, adapter_config)
        write_checkpoint(adapter_dir, Checkpoint(
            step=step, total_steps=steps, adapter=weights, optimizer=optimizer_arrays(optimizer),
            rng=None, config=config.to_json(), dataset_digest=digest,
            losses=losses, val_losses=val_losses))

    class Callback(TrainingCallback):
        last_val: float | None = None

        def on_val_loss_report(self, info: dict) -> None:
            step = start + int(info["iteration"])
            self.last_val = float(info["val_loss"])
            val_losses.append((step, self.last_val))

        def on_train_loss_report(self, info: dict) -> None:
            step = start + int(info["iteration"])
            if not math.isfinite(float(info["train_loss"])):
                # stop before the checkpoint: the last one on disk still holds finite adapters
                raise StudentError(f"{adapter_dir}: the training loss became {float(info['train_loss'])} at step "
                                   f"{step} (learning rate {float(info['learning_rate']):.3g}); lower the learning "
                                   "rate or check the dataset")
            losses.append((step, float(info["train_loss"])))
            if on_report is not None:
                on_report(step, float(info["train_loss"]), float(info["learning_rate"]), total_steps=steps,
                          tokens_per_second=float(info["tokens_per_second"]), val_loss=self.last_val,
                          peak_memory_gb=float(info.get("peak_memory", 0.0)))
            stop = step < steps and should_stop is not None and bool(should_stop())
            if stop or step % config.steps_per_checkpoint == 0 or step == steps:
                save(step)
            if stop:
                raise _Stop
            mx.random.seed(config.seed + step)

    result = TrainResult(str(adapter_dir), start, steps, losses, val_losses, resumed_from=start)
    if start >= steps:
        return result
    if start == 0:
        # Adam creates its moments lazily on the first update; create them (zeros, exactly what that
        # update would make) before the step-0 checkpoint, so the checkpoint has the full state that a
        # resume checks against (without them every resume before the first periodic save was refused).
        optimizer.init(model.trainable_parameters())
        mx.eval(optimizer.state)
        save(0)  # the initial adapters: a resume before the first checkpoint starts from the same weights
    args = TrainingArgs(
        batch_size=config.batch_size, iters=steps - start, val_batches=config.val_batches, steps_per_report=1,
        steps_per_eval=config.steps_per_eval or steps + 1, steps_per_save=steps + 1,
        max_seq_length=config.max_seq_length, adapter_file=str(adapter_dir / ".trainer_final.safetensors"),
        grad_accumulation_steps=config.grad_accumulation_steps,
    )
    use_valid = valid_set if (valid_set is not None and config.steps_per_eval > 0) else None
    try:
        # mlx-lm's trainer raises MLX's wired limit and leaves it raised: put it back afterwards
        with _maybe_quiet(quiet), wired_limit_restored():
            train(model, optimizer, train_set, use_valid, args=args, loss=answer_only_loss,
                  iterate_batches=isolated_batches(config.seed, start), training_callback=Callback())
    except _Stop:
        result.stopped = True
    finally:
        (adapter_dir / ".trainer_final.safetensors").unlink(missing_ok=True)
    result.steps_done = losses[-1][0] if losses else start
    return result


class _maybe_quiet:
    """mlx-lm's trainer prints a progress bar and a line per report: keep library calls quiet."""

    def __init__(self, quiet: bool):
        self.quiet = quiet

    def __enter__(self):
        if self.quiet:
            import contextlib
            import io

            self._ctx = contextlib.redirect_stdout(io.StringIO())
            self._ctx.__enter__()

    def __exit__(self, *exc):
        if self.quiet:
            self._ctx.__exit__(*exc)
        return False


def load_student(base: Any, adapter_dir: str | Path):
    """The base model (spec or LoadedModel) with the adapters of ``adapter_dir`` applied.

    A LoadedModel passed in is modified in place and returned.
    """
    from mlx_lm.tuner.utils import linear_to_lora_layers

    loaded = as_loaded(base)
    if has_lora(loaded.model):
        raise StudentError("the model already carries LoRA layers; load the student onto a fresh base")
    weights, adapter_config = load_adapter_weights(adapter_dir)
    if adapter_config.get("fine_tune_type", "lora") != "lora":
        raise AdapterError(f"{adapter_dir}: fine_tune_type {adapter_config.get('fine_tune_type')!r} is not LoRA")
    linear_to_lora_layers(loaded.model, int(adapter_config["num_layers"]), adapter_config["lora_parameters"])
    params = dict(tree_flatten(loaded.model.parameters()))
    problems = [k for k, v in weights.items() if k not in params or params[k].shape != v.shape]
    if problems:
        from mlx_lm.tuner.utils import remove_lora_layers

        remove_lora_layers(loaded.model)
        raise AdapterError(f"{Path(adapter_dir)}: adapters do not fit this model ({len(problems)} tensors, "
                           f"e.g. {problems[0]}); were they trained on another base?")
    loaded.model.load_weights(list(weights.items()), strict=False)
    loaded.model.eval()
    mx.eval(loaded.model.parameters())
    if hasattr(loaded, "extras"):
        loaded.extras["adapter_dir"] = str(adapter_dir)
    return loaded
