"""Training the grokking network on (a + b) mod p, resumably, with its curves.

Full-batch AdamW on a fixed fraction of all p² pairs (Power et al. 2022; Nanda et al. 2023);
the rest is the test set. Every ``eval_every`` steps a record of the curves is kept: train
and test loss and accuracy, the weights' L2 norm, and the Fourier sparsity of the
embedding (:mod:`.progress_measures`). Every ``checkpoint_every`` steps the weights are saved
for the analyses (EI, restricted/excluded loss), and the resume state (weights, AdamW's
moments and step, the records so far) is replaced atomically: a killed run continues from
the last checkpoint and, the training being deterministic (full batch, no dropout), ends
with the same weights as one that was never stopped.

An arm may stop early once it has generalised: test accuracy at or above
``stop_accuracy`` for ``stop_patience`` consecutive steps (the curves and checkpoints after
the jump are what the analyses need; more steps would only repeat them).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from mlx_hooks.atomic_io import atomic_path
from mlx_hooks.errors import SymbiontError

from ..run_folder import dump_json, read_json
from .model import ModelShape, ModularTransformer
from .progress_measures import fourier_sparsity, weight_norm


BUDGET_REASON = "step budget"
"""How an arm stopped by its budget says so (a larger budget continues it)."""


class EmergenceError(SymbiontError):
    """An emergence-lab file or setting that cannot be used (names the file or the setting)."""


@dataclass(frozen=True)
class ArmConfig:
    """One training run of the grokking network."""

    name: str
    """Folder and label (``grokking``, ``no_weight_decay``, ``large_fraction``)."""
    p: int = 59
    """The modulus."""
    train_fraction: float = 0.3
    """Share of the p² pairs trained on (the rest is the test set)."""
    weight_decay: float = 1.0
    """AdamW's decoupled weight decay."""
    lr: float = 1e-2
    """AdamW learning rate (betas 0.9, 0.98 as Nanda et al.)."""
    steps: int = 2500
    """Full-batch steps at most."""
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int = 512
    seed: int = 0
    """Initial weights and the train/test split."""
    eval_every: int = 50
    """Steps between curve records."""
    checkpoint_every: int = 250
    """Steps between saved weights (and resume points)."""
    stop_accuracy: float = 0.99
    """Early stop once test accuracy stays at or above this ..."""
    stop_patience: int = 300
    """... for this many steps (0: never stop early)."""
    top_frequencies: int = 4
    """The Fourier sparsity of the embedding is the share of its power in this many frequencies."""

    @property
    def shape(self) -> ModelShape:
        return ModelShape(self.p, self.d_model, self.n_heads, self.d_mlp)

    def identity(self) -> dict:
        """Settings its results depend on. Not the step budget: a larger one continues an arm that
        stopped at the old budget, and the steps both budgets cover are the same."""
        return {k: v for k, v in asdict(self).items() if k != "steps"}


@dataclass
class Split:
    """All p² pairs as ``[a, b, =]`` token rows, and which are trained on."""

    tokens: np.ndarray
    """``[p², 3]`` int32, row a·p + b."""
    labels: np.ndarray
    """``[p²]`` (a + b) mod p."""
    train: np.ndarray
    """Row indices of the training pairs."""
    test: np.ndarray


def make_split(p: int, train_fraction: float, seed: int) -> Split:
    if p < 3:
        raise EmergenceError(f"p must be at least 3, got {p}")
    if not 0 < train_fraction < 1:
        raise EmergenceError(f"train fraction must be between 0 and 1, got {train_fraction}")
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    tokens = np.stack([a.ravel(), b.ravel(), np.full(p * p, p)], axis=1).astype(np.int32)
    order = np.random.default_rng([seed, *b"grokking-split"]).permutation(p * p)
    n_train = max(1, int(round(train_fraction * p * p)))
    return Split(tokens, ((a + b) % p).ravel().astype(np.int32), np.sort(order[:n_train]), np.sort(order[n_train:]))


def evaluate(model: ModularTransformer, split: Split) -> dict:
    """Loss and accuracy on the train and test pairs (one forward over all p² pairs)."""
    logits = model(mx.array(split.tokens))  # [p², p]
    labels = mx.array(split.labels)
    losses = np.array(nn.losses.cross_entropy(logits, labels, reduction="none"))
    correct = np.array(mx.argmax(logits, axis=-1) == labels)
    out = {}
    for part, rows in (("train", split.train), ("test", split.test)):
        out[f"{part}_loss"] = float(losses[rows].mean()) if rows.size else float("nan")
        out[f"{part}_accuracy"] = float(correct[rows].mean()) if rows.size else float("nan")
    return out


# -- the arm folder ------------------------------------------------------------------------------------
def checkpoint_path(folder: Path, step: int) -> Path:
    return folder / "checkpoints" / f"step_{step:06d}.safetensors"


def resume_path(folder: Path, step: int) -> Path:
    """Weights and AdamW state at ``step`` (only the one state.json names is kept)."""
    return folder / f"resume_{step:06d}.safetensors"


def saved_checkpoints(folder: Path) -> list[int]:
    """Steps with saved weights, ascending."""
    return sorted(int(p.stem.split("_")[1]) for p in (folder / "checkpoints").glob("step_*.safetensors"))


def load_weights(config: ArmConfig, path: Path) -> ModularTransformer:
    model = ModularTransformer(config.shape, config.seed)
    try:
        model.load_weights(str(path))
    except Exception as exc:  # a truncated or foreign file: name it
        raise EmergenceError(f"{path}: not weights of this grokking network ({exc}); delete it to recompute") from None
    return model


def _save_arrays(path: Path, arrays: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        staged = tmp.with_suffix(".safetensors")  # MLX adds the suffix to a name without it
        try:
            mx.save_safetensors(str(staged), arrays)
            staged.replace(tmp)
        finally:
            staged.unlink(missing_ok=True)


@dataclass
class ArmState:
    """What the arm folder says about a run: its records and whether it is finished."""

    records: list
    step: int
    finished: bool
    stop_reason: str = ""


def read_state(folder: Path, config: ArmConfig) -> ArmState:
    path = folder / "state.json"
    if not path.exists():
        return ArmState([], 0, False)
    data = read_json(path, "grokking arm state", EmergenceError)
    if not isinstance(data, dict) or data.get("config") != config.identity():
        raise EmergenceError(f"{path}: made with other settings than this run's {config.name!r} arm; "
                             "use another output folder")
    state = ArmState(data["records"], int(data["step"]), bool(data["finished"]), data.get("stop_reason", ""))
    if state.finished and state.stop_reason.startswith(BUDGET_REASON) and config.steps > state.step:
        state.finished, state.stop_reason = False, ""  # a larger budget: go on
    elif not state.finished and state.step > config.steps:
        raise EmergenceError(f"{path}: the {config.name!r} arm is at step {state.step}, beyond the step budget "
                             f"{config.steps}; give a budget of at least {state.step}")
    return state


def _write_state(folder: Path, config: ArmConfig, state: ArmState) -> None:
    dump_json(folder / "state.json", {"config": config.identity(), "records": state.records, "step": state.step,
                                      "finished": state.finished, "stop_reason": state.stop_reason})


def _generalised_for(records: list, config: ArmConfig) -> int:
    """Steps for which test accuracy has stayed at or above ``stop_accuracy`` (up to the last record)."""
    since = None
    for r in records:
        since = (since if since is not None else r["step"]) if r["test_accuracy"] >= config.stop_accuracy else None
    return records[-1]["step"] - since if since is not None and records else -1


def train_arm(config: ArmConfig, folder: Path, on_record: Callable[[dict], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> ArmState:
    """Train (or resume, or return at once if finished) one arm in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    state = read_state(folder, config)
    if state.finished:
        return state
    split = make_split(config.p, config.train_fraction, config.seed)
    model = ModularTransformer(config.shape, config.seed)
    optimizer = optim.AdamW(learning_rate=config.lr, betas=[0.9, 0.98], weight_decay=config.weight_decay)
    optimizer.init(model.trainable_parameters())
    if state.step:
        resume = resume_path(folder, state.step)
        try:
            arrays = mx.load(str(resume))
        except Exception as exc:
            raise EmergenceError(f"{resume}: unreadable resume state ({exc}); delete {folder} to restart the arm") from None
        model.update(tree_unflatten([(k[6:], v) for k, v in arrays.items() if k.startswith("model.")]))
        optimizer.state = tree_unflatten([(k[10:], v) for k, v in arrays.items() if k.startswith("optimizer.")])
    x, y = mx.array(split.tokens[split.train]), mx.array(split.labels[split.train])

    def loss_fn(m):
        return nn.losses.cross_entropy(m(x), y, reduction="mean")

    value_and_grad = nn.value_and_grad(model, loss_fn)
    compiled_state = [model.state, optimizer.state]

    @partial(mx.compile, inputs=compiled_state, outputs=compiled_state)
    def step_fn():
        loss, grads = value_and_grad(model)
        optimizer.update(model, grads)
        return loss

    def record(step: int) -> None:
        r = {"step": step, **evaluate(model, split), "weight_norm": weight_norm(model),
             "fourier_sparsity": fourier_sparsity(model, config.top_frequencies), "time": round(time.time(), 1)}
        state.records.append(r)
        if on_record:
            on_record(r)

    def checkpoint(step: int) -> None:
        weights = dict(tree_flatten(model.parameters()))
        _save_arrays(checkpoint_path(folder, step), weights)
        _save_arrays(resume_path(folder, step), {**{f"model.{k}": v for k, v in weights.items()},
                                                 **{f"optimizer.{k}": v for k, v in tree_flatten(optimizer.state)}})
        state.step = step
        _write_state(folder, config, state)  # names the step: a run killed before this resumes from the last one
        for old in folder.glob("resume_*.safetensors"):
            if old != resume_path(folder, step):
                old.unlink(missing_ok=True)

    if state.step == 0:
        record(0)
        checkpoint(0)
    step = state.step
    while step < config.steps:
        if should_stop and should_stop():
            break
        step_fn()
        step += 1
        if step % config.eval_every == 0 or step == config.steps:
            mx.eval(model.parameters(), optimizer.state)
            record(step)
            if config.stop_patience and _generalised_for(state.records, config) >= config.stop_patience:
                state.stop_reason = (f"test accuracy ≥ {config.stop_accuracy:g} for {config.stop_patience} steps")
                state.finished = True
        if step % config.checkpoint_every == 0 or step == config.steps or state.finished:
            if step == config.steps:
                state.finished = True
                state.stop_reason = state.stop_reason or f"{BUDGET_REASON} ({config.steps}) reached"
            checkpoint(step)
        if state.finished:
            break
    return state


__all__ = ["ArmConfig", "ArmState", "EmergenceError", "Split", "checkpoint_path", "evaluate", "load_weights",
           "make_split", "read_state", "saved_checkpoints", "train_arm"]
