"""Train a TopK sparse autoencoder in MLX on a buffer of activations.

The recipe follows Gao et al. (2024), "Scaling and evaluating sparse autoencoders":
TopK activation, decoder initialised as the encoder's transpose with unit-norm rows
(renormalised after every step), ``b_dec`` initialised at the data mean, and an
auxiliary TopK loss on the dead latents that keeps the dictionary alive. Inputs are
scaled so their mean norm is √d_in (SAELens' "expected average norm"), which makes one
learning rate work across models; the scale is saved with the SAE.

Nothing here is specific to a model: the trainer reads a float16 ``[N, d_in]`` array
(see :mod:`mlx_hooks.sae.activations`). Progress goes to a callback; the run
checkpoints atomically and resumes from its last checkpoint; ``should_stop`` cancels
between steps (after a checkpoint).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from ..backend import backend_info
from .model import SAE, SAEConfig
from .top_k import kth_largest, top_k_indices

DECODES = ("auto", "sparse", "dense")
# Fields that change how a step is computed but not what it computes: a checkpoint
# resumes under other values of them.
_NOT_IDENTITY = ("decode",)


@dataclass
class TrainConfig:
    """Hyper-parameters of a TopK SAE training run."""

    d_sae: int = 4608
    """Number of latents (expansion × d_in)."""
    k: int = 32
    """Active latents per token."""
    steps: int = 3000
    """Optimizer steps."""
    batch_size: int = 1024
    """Activations per step."""
    lr: float = 4e-4
    """Adam learning rate (linear warm-up, then constant, then linear decay over the last 20%)."""
    warmup_steps: int = 100
    """Warm-up length."""
    aux_k: int = 256
    """Dead latents used by the auxiliary loss per token."""
    aux_alpha: float = 1 / 32
    """Weight of the auxiliary loss."""
    dead_after_tokens: int = 200_000
    """A latent that has not fired for this many training tokens counts as dead."""
    outlier_norm_factor: float = 10.0
    """Rows with a norm above this multiple of the median are left out (attention sinks: at
    SmolLM2's resid_post.15, 0.013% of positions with ~160x the median norm hold 81% of the
    summed squared norm, and would dominate the MSE)."""
    seed: int = 0
    """Seed for initialisation and batch order: the run is reproducible from it."""
    checkpoint_every: int = 250
    """Steps between checkpoints."""
    report_every: int = 50
    """Steps between progress reports."""
    decode: str = "auto"
    """How a step reconstructs from the k active latents of each token; the same loss and
    gradients either way, only the speed differs. ``sparse`` gathers the k decoder rows of
    each token (``W_dec[index]``, ``[B, k, d_in]``; the gradient is a scatter-add into
    ``W_dec``); ``dense`` multiplies a ``[B, d_sae]`` latent matrix, zero outside the top k,
    by ``W_dec`` (matrix products); ``auto`` picks by backend and ``d_sae / k``
    (:func:`resolve_decode`).
    Not part of the run's identity: a run resumes under another choice."""

    def __post_init__(self):
        if self.decode not in DECODES:
            raise ValueError(f"decode must be one of {', '.join(DECODES)}, got {self.decode!r}")


@dataclass(frozen=True)
class TrainReport:
    """Progress of a run (sent to the callback, e.g. the app's progress bar)."""

    step: int
    steps: int
    tokens_seen: int
    mse: float
    """Mean squared error per element, in the SAE's normalised input units."""
    variance_explained: float
    """1 − FVU on the step's batch."""
    l0: float
    """Mean active latents per token."""
    dead_fraction: float
    """Latents that have not fired for ``dead_after_tokens`` tokens."""
    aux_loss: float


# The largest d_sae / k (latents per active latent) at which the dense decode is the
# faster one, per backend. Dense costs three [B, d_sae] x [d_sae, d_in] matrix products
# per step (the forward, dW_dec, dlatents): 6*B*d_sae*d_in flops, growing with d_sae.
# Sparse moves [B, k, d_in] floats about a dozen times (the gather, its product with the
# values, the sum; in the backward the row gradients, the values' gradient reading the
# rows again, and the scatter-add into W_dec, a read-modify-write per element): ~48*B*k*d_in
# bytes, growing with k. So the crossover is a d_sae / k ratio set by the backend's flops
# per byte.
DENSE_DECODE_MAX_RATIO = {
    # Measured: benchmarks/sae_train_decode.py, MLX 0.32.4, 2-core x86-64 Linux with OpenBLAS
    # (d_in 576, a busy machine; medians of 3 rounds, two runs): dense/sparse tok/s 1.1-3.0x
    # at d_sae/k 72 and 144 (d_sae 4608, k 64/32, batch 512/4096), 1.0-1.3x at 128
    # (8192/64, 16384/128), 0.4-0.8x at 256 and 512 (8192/32, 16384/64, 16384/32).
    # Re-measured 2026-12-05 after the step changes (two-pass top-k, mask product, compiled
    # Adam; batch 512, 3 rounds, quiet): 2.7x at 72, 1.5x at 144, 2.2x at 128, 0.87-0.98x
    # (8192/32) and 1.09-1.12x (16384/64) at 256, 0.83-0.87x at 512: still crossing near 192-256.
    "cpu": 192,
    # Reasoned, not measured on Apple silicon: there the products run on MLX's Metal GEMM
    # (~80% of peak) and the gather and scatter-add (native float atomics) are
    # bandwidth-bound. Apple GPUs have 26-40 fp32 flops per byte of bandwidth (M1 2.6 TFLOP/s
    # over 68 GB/s .. M2 Max 13.6 over 400), which puts the crossover at d_sae/k ~ 8x that,
    # 210-320, higher if the gather and atomics reach less of the bandwidth than GEMM of its
    # peak. 256: dense at the app's default 4608/32 (by that estimate 1.4-2.2x faster),
    # sparse for 16k+ latents at k 32 (dense 1.6-2.5x slower). Applied to CUDA too, where it
    # is equally an estimate.
    "gpu": 256,
}


def resolve_decode(decode: str, d_sae: int, k: int, backend: str | None = None) -> str:
    """``sparse`` or ``dense``: ``decode`` itself unless it is ``auto``; then dense when
    ``d_sae / k`` is at most :data:`DENSE_DECODE_MAX_RATIO` of the backend (``cpu``,
    ``metal``, ``cuda``; default: the one MLX computes on). Re-measure a backend with
    ``python benchmarks/sae_train_decode.py``."""
    if decode != "auto":
        return decode
    if backend is None:
        backend = backend_info().backend
    limit = DENSE_DECODE_MAX_RATIO["cpu" if backend == "cpu" else "gpu"]
    return "dense" if d_sae <= limit * k else "sparse"


def _lr_schedule(config: TrainConfig):
    decay_start = int(config.steps * 0.8)

    def schedule(step):
        warm = mx.minimum((step + 1) / config.warmup_steps, 1.0)
        decay = mx.clip((config.steps - step) / max(config.steps - decay_start, 1), 0.0, 1.0)
        return config.lr * warm * decay

    return schedule


class TopKTrainer:
    """One training run in ``run_dir`` over ``activations`` (``[N, d_in]`` float16)."""

    def __init__(self, sae_config: SAEConfig, config: TrainConfig, activations: np.ndarray, run_dir: str | os.PathLike):
        self.config = config
        self.activations = activations
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.rng = np.random.default_rng(config.seed)
        mx.random.seed(config.seed)
        norms = np.concatenate([
            np.linalg.norm(np.asarray(activations[i : i + 65536], dtype=np.float32), axis=-1)
            for i in range(0, len(activations), 65536)
        ])
        sink_norm = float(np.median(norms) * config.outlier_norm_factor)
        self.rows = np.flatnonzero(norms <= sink_norm)  # the rows trained on
        self.outlier_fraction = 1.0 - len(self.rows) / len(activations)
        sample = activations[np.sort(self.rng.choice(self.rows, size=min(len(self.rows), 20_000), replace=False))]
        sample = sample.astype(np.float32)
        sae_config.extra = {**sae_config.extra, "sink_norm_threshold": sink_norm}
        mean_norm = float(np.linalg.norm(sample, axis=-1).mean())
        sae_config.normalisation = "constant_scale"
        sae_config.input_scale = float(np.sqrt(sae_config.d_in) / mean_norm)
        sae_config.architecture, sae_config.k, sae_config.d_sae = "topk", config.k, config.d_sae
        self.sae = SAE(sae_config)
        directions = mx.random.normal((config.d_sae, sae_config.d_in))
        directions = directions / mx.linalg.norm(directions, axis=-1, keepdims=True)
        self.sae.W_dec = directions  # [d_sae, d_in], unit rows
        self.sae.W_enc = directions.T  # [d_in, d_sae]
        self.sae.b_dec = mx.array(sample.mean(axis=0) * sae_config.input_scale)
        self.optimizer = optim.Adam(learning_rate=_lr_schedule(config))
        self.step = 0
        self.tokens_seen = 0
        self.last_fired = np.zeros(config.d_sae, dtype=np.int64)  # tokens_seen when each latent last fired
        self._order = self.rows[self.rng.permutation(len(self.rows))]
        self._cursor = 0
        self.decode = resolve_decode(config.decode, config.d_sae, config.k)  # what this run's steps use
        self._resume()
        self._train_step = self._make_step()

    # -- the step -----------------------------------------------------------------------
    def _loss(self, sae: SAE, x: mx.array, dead: mx.array | None):  # x: [N, d_in] normalised
        if not sae.cfg.apply_b_dec_to_input:
            pre = x @ sae.W_enc + sae.b_enc  # [N, d_sae]
        else:
            # The value is (x - b_dec) @ W_enc + b_enc. Autodiff of that would give b_dec its
            # gradient through an [N, d_sae] x [d_sae, d_in] product, a fifth of a step here;
            # the zero-valued second term carries it instead, as a [d_sae] x [d_sae, d_in] one.
            b_dec_delta = sae.b_dec - mx.stop_gradient(sae.b_dec)  # 0, with b_dec's gradient
            centred = x - mx.stop_gradient(sae.b_dec)  # [N, d_in]
            pre = centred @ sae.W_enc + sae.b_enc - b_dec_delta @ mx.stop_gradient(sae.W_enc)  # [N, d_sae]
        k = self.config.k
        index = mx.stop_gradient(top_k_indices(pre, k))  # [N, k]
        values = nn.relu(mx.take_along_axis(pre, index, axis=-1))  # [N, k]
        if self.decode == "dense":
            # The same k latents as `index` (not `pre >= k-th value`, which lets ties in), so
            # both decodes train the same latents; the gradient reaches `pre` through the mask.
            # As a product with a 0/1 mask of the chosen latents that are positive: the same values
            # and gradients as `where(chosen, relu(pre), 0)`, whose select and relu cost ~10 ms more
            # a step forward and backward at [512, 4608] on the CPU backend.
            active = mx.put_along_axis(mx.zeros(pre.shape, dtype=pre.dtype), index,
                                       (mx.stop_gradient(values) > 0).astype(pre.dtype), axis=-1)
            latents = pre * active  # [N, d_sae]
            recon = latents @ sae.W_dec + sae.b_dec  # [N, d_in]
        else:
            recon = (values[..., None] * sae.W_dec[index]).sum(axis=1) + sae.b_dec  # [N, k, d_in] -> [N, d_in]
        error = x - recon
        mse = (error**2).mean()
        aux = mx.array(0.0)
        if dead is not None:
            # Auxiliary loss: the top aux_k *dead* latents try to explain the residual error.
            dead_pre = mx.where(dead, nn.relu(pre), 0.0)
            kth = kth_largest(mx.stop_gradient(dead_pre), min(self.config.aux_k, pre.shape[-1]))  # [N, 1]
            aux_latents = mx.where((dead_pre >= kth) & (dead_pre > 0), dead_pre, 0.0)
            residual = mx.stop_gradient(error)
            aux_error = residual - aux_latents @ sae.W_dec
            aux = (aux_error**2).sum(-1).mean() / mx.maximum((residual**2).sum(-1).mean(), 1e-8)
        return mse + self.config.aux_alpha * aux, (mse, aux, index, values, error)

    def _make_step(self):
        loss_and_grad = nn.value_and_grad(self.sae, self._loss)
        d_sae = self.config.d_sae
        self.optimizer.init(self.sae.trainable_parameters())  # a no-op after a resume
        # The Adam update compiled: one fused pass over each weight instead of a dozen
        # element-wise passes (alone 13 vs 21 ms at 4608 x 576 on the CPU backend, a whole step
        # 117 vs 122 ms in an alternating A/B; MLX fuses element-wise graphs on every backend).
        # Compiling the whole step gained nothing more.
        state = [self.sae.state, self.optimizer.state]
        apply_gradients = mx.compile(lambda grads: self.optimizer.update(self.sae, grads), inputs=state, outputs=state)

        def step(x, dead, spread: float):
            (loss, (mse, aux, index, values, error)), grads = loss_and_grad(self.sae, x, dead)
            apply_gradients(grads)
            # Keep decoder rows at unit norm, so latent values carry the scale.
            self.sae.W_dec = self.sae.W_dec / mx.maximum(mx.linalg.norm(self.sae.W_dec, axis=-1, keepdims=True), 1e-8)
            fvu = (error**2).sum() / max(spread, 1e-12)
            active = values > 0  # [N, k]
            fired = mx.zeros((d_sae,)).at[index.reshape(-1)].add(active.reshape(-1).astype(mx.float32)) > 0
            l0 = active.sum(axis=-1).mean()
            return mse, aux, fvu, l0, fired

        return step

    def _next_batch(self) -> np.ndarray:
        size = self.config.batch_size
        if self._cursor + size > len(self._order):
            self._order = self.rows[self.rng.permutation(len(self.rows))]
            self._cursor = 0
        index = np.sort(self._order[self._cursor : self._cursor + size])  # sorted: faster memmap reads
        self._cursor += size
        return np.asarray(self.activations[index], dtype=np.float32)

    def train(
        self, callback: Callable[[TrainReport], None] | None = None, should_stop: Callable[[], bool] | None = None
    ) -> SAE:
        config = self.config
        while self.step < config.steps:
            if should_stop is not None and should_stop():
                self.checkpoint()
                return self.sae
            mse, aux, fvu, l0 = self.advance()
            if callback is not None and (self.step % config.report_every == 0 or self.step == config.steps):
                callback(TrainReport(
                    self.step, config.steps, self.tokens_seen, float(mse.item()), 1.0 - float(fvu.item()),
                    float(l0.item()), self.dead_fraction(), float(aux.item()),
                ))
            if self.step % config.checkpoint_every == 0 or self.step == config.steps:
                self.checkpoint()
        return self.sae

    def advance(self) -> tuple[mx.array, mx.array, mx.array, mx.array]:
        """One optimizer step on the next batch, evaluated: ``(mse, aux, fvu, l0)`` scalars."""
        batch = self._next_batch() * self.sae.cfg.input_scale  # [N, d_in] float32
        # The batch's summed squared deviation from its mean (FVU's denominator), on the host: in
        # MLX the column mean of a [512, 576] batch cost 5.5 ms a step on the CPU backend.
        spread = float(np.square(batch - batch.mean(axis=0)).sum(dtype=np.float64))
        x = mx.array(batch)
        dead_mask = self.tokens_seen - self.last_fired >= self.config.dead_after_tokens
        dead = mx.array(dead_mask) if dead_mask.any() else None  # no aux work while nothing is dead
        mse, aux, fvu, l0, fired = self._train_step(x, dead, spread)
        mx.eval(self.sae.parameters(), self.optimizer.state, mse, aux, fvu, l0, fired)
        self.tokens_seen += x.shape[0]
        self.last_fired[np.array(fired)] = self.tokens_seen
        self.step += 1
        return mse, aux, fvu, l0

    def dead_fraction(self) -> float:
        if self.tokens_seen < self.config.dead_after_tokens:
            return float(np.mean(self.last_fired == 0)) if self.tokens_seen else 1.0
        return float(np.mean(self.tokens_seen - self.last_fired >= self.config.dead_after_tokens))

    # -- checkpoints -------------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoint"

    def checkpoint(self) -> None:
        """Weights, optimizer state and counters, written to a temp folder then swapped in."""
        tmp = Path(tempfile.mkdtemp(dir=self.run_dir, prefix=".checkpoint-"))
        try:
            mx.save_safetensors(str(tmp / "sae.safetensors"), dict(tree_flatten(self.sae.parameters())))
            mx.save_safetensors(str(tmp / "optimizer.safetensors"), dict(tree_flatten(self.optimizer.state)))
            np.save(tmp / "last_fired.npy", self.last_fired)
            np.save(tmp / "order.npy", self._order)
            state = {
                "step": self.step, "tokens_seen": self.tokens_seen, "cursor": self._cursor,
                "rng": self.rng.bit_generator.state, "train_config": asdict(self.config),
                "sae_config": self.sae.cfg.to_dict(),
            }
            (tmp / "state.json").write_text(json.dumps(state))
            old = self.run_dir / ".checkpoint-old"
            if self.checkpoint_dir.exists():
                shutil.rmtree(old, ignore_errors=True)
                os.replace(self.checkpoint_dir, old)
            os.replace(tmp, self.checkpoint_dir)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _resume(self) -> None:
        folder = self.checkpoint_dir
        if not (folder / "state.json").exists():
            return
        state = json.loads((folder / "state.json").read_text())
        if _identity(state["train_config"]) != _identity(asdict(self.config)):
            raise ValueError(
                f"{folder}: checkpoint was made with a different training config; use a new run folder "
                f"(checkpoint: {state['train_config']})"
            )
        self.sae.cfg = SAEConfig.from_dict(state["sae_config"])
        self.sae.update(tree_unflatten(list(mx.load(str(folder / "sae.safetensors")).items())))
        self.optimizer.state = tree_unflatten(list(mx.load(str(folder / "optimizer.safetensors")).items()))
        self.last_fired = np.load(folder / "last_fired.npy", allow_pickle=False)
        self._order = np.load(folder / "order.npy", allow_pickle=False)
        self.step, self.tokens_seen, self._cursor = state["step"], state["tokens_seen"], state["cursor"]
        self.rng.bit_generator.state = state["rng"]


def _identity(train_config: dict) -> dict:
    return {key: value for key, value in train_config.items() if key not in _NOT_IDENTITY}
