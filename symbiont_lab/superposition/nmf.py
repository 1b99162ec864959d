"""NMF of a model's activations ("The Building Blocks of Interpretability"), with PCA and an SAE beside it.

A tokens × units matrix is made non-negative — MLP neurons after a gating activation (SwiGLU,
GeGLU) go negative too, so either their positive part is kept (``clip``, the fraction of squared
activation dropped is reported) or each unit is split into its positive and negative parts
(``split``, 2U columns) — and factored into k components with scikit-learn's ``NMF``:
X ≈ W H, W ``[tokens, k]`` ≥ 0 (how much each token uses each component), H ``[k, units]`` ≥ 0.

Reconstruction is compared on held-out tokens at the same number of components k: NMF (W from
``transform``, i.e. non-negative least squares against the fitted H), PCA (k principal
components, centred), and an SAE with k latents trained here with the project's TopK trainer
(:class:`mlx_hooks.sae.train.TopKTrainer`, every latent allowed to fire: TopK with k = d_sae is a
ReLU autoencoder). Each method's error is the fraction of variance unexplained,
FVU = Σ‖x − x̂‖² / Σ‖x − mean‖², over the held-out tokens of the same non-negative matrix.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

NEGATIVES = ("clip", "split")


def nonnegative(acts: np.ndarray, mode: str) -> tuple[np.ndarray, float]:
    """(X ≥ 0, fraction of Σ acts² in the negative parts). ``clip``: max(acts, 0) ``[T, U]``;
    ``split``: [max(acts, 0), max(−acts, 0)] ``[T, 2U]`` (nothing dropped)."""
    acts = np.asarray(acts, dtype=np.float32)
    positive, negative = np.maximum(acts, 0.0), np.maximum(-acts, 0.0)
    total = float((acts.astype(np.float64) ** 2).sum())
    dropped = float((negative.astype(np.float64) ** 2).sum()) / total if total > 0 else 0.0
    if mode == "clip":
        return positive, dropped
    if mode == "split":
        return np.concatenate([positive, negative], axis=1), 0.0
    raise ValueError(f"unknown handling of negative activations {mode!r} (choose {', '.join(NEGATIVES)})")


def held_out_rows(text_index: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """``[T]`` bool: tokens of a random ``fraction`` of the texts (whole texts, so no context leaks)."""
    texts = np.unique(text_index)
    rng = np.random.default_rng([seed, 31])
    count = max(1, int(round(fraction * len(texts))))
    chosen = rng.choice(texts, size=min(count, len(texts) - 1), replace=False)
    return np.isin(text_index, chosen)


def fvu(x: np.ndarray, reconstruction: np.ndarray) -> float:
    """Σ‖x − x̂‖² / Σ‖x − mean(x)‖² over the rows of ``x``."""
    x = np.asarray(x, dtype=np.float64)
    total = float(((x - x.mean(axis=0)) ** 2).sum())
    return float(((x - reconstruction) ** 2).sum()) / total if total > 0 else float("nan")


def fit_nmf(x_train: np.ndarray, k: int, seed: int, max_iter: int = 400):
    """scikit-learn NMF (nndsvda start, coordinate descent, Frobenius loss)."""
    from sklearn.decomposition import NMF

    model = NMF(n_components=k, init="nndsvda", max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "maximum number of iterations reached": reported through the FVU
        model.fit(x_train)
    return model


def nmf_and_pca(x_train: np.ndarray, x_test: np.ndarray, k: int, seed: int) -> tuple[object, dict]:
    """The fitted NMF and the train / held-out FVU of NMF and PCA at ``k`` components."""
    from sklearn.decomposition import PCA

    nmf = fit_nmf(x_train, k, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w_train, w_test = nmf.transform(x_train), nmf.transform(x_test)
    pca = PCA(n_components=min(k, *x_train.shape), random_state=seed).fit(x_train)
    return nmf, {
        "nmf": {"train_fvu": fvu(x_train, w_train @ nmf.components_), "test_fvu": fvu(x_test, w_test @ nmf.components_),
                "iterations": int(nmf.n_iter_)},
        "pca": {"train_fvu": fvu(x_train, pca.inverse_transform(pca.transform(x_train))),
                "test_fvu": fvu(x_test, pca.inverse_transform(pca.transform(x_test)))},
    }


def train_sae(x_train: np.ndarray, x_test: np.ndarray, k: int, run_dir: Path, seed: int, steps: int,
              batch: int = 256) -> dict:
    """Train (or resume, from ``run_dir``) a TopK SAE with k latents, all allowed to fire; its train /
    held-out FVU on the same matrix."""
    import mlx.core as mx

    from mlx_hooks.sae.model import SAEConfig
    from mlx_hooks.sae.train import TopKTrainer, TrainConfig

    config = TrainConfig(d_sae=k, k=k, steps=steps, batch_size=min(batch, len(x_train)), lr=1e-3,
                         warmup_steps=min(100, steps // 10), aux_k=max(1, k // 2), seed=seed,
                         dead_after_tokens=10 * len(x_train))
    trainer = TopKTrainer(SAEConfig(d_in=x_train.shape[1], d_sae=k, k=k, hook_point="resid_post.0"), config,
                          x_train.astype(np.float16), run_dir)
    sae = trainer.train()

    def reconstruct(x):
        out = sae(mx.array(x.astype(np.float32))).reconstruction
        return np.array(out.astype(mx.float32))

    return {"train_fvu": fvu(x_train, reconstruct(x_train)), "test_fvu": fvu(x_test, reconstruct(x_test)),
            "outlier_rows_left_out": trainer.outlier_fraction, "steps": steps}


def directions(h: np.ndarray, mode: str) -> np.ndarray:
    """``[k, U]`` component directions in the activation space: H itself (``clip``), or the positive
    half minus the negative half (``split``)."""
    if mode == "split":
        half = h.shape[1] // 2
        return h[:, :half] - h[:, half:]
    return h


def best_cosines(vectors: np.ndarray, dictionary: np.ndarray) -> list[tuple[int, float]]:
    """For each row of ``vectors [k, D]``: (index, cos) of the most similar row of ``dictionary [N, D]``."""
    a = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    b = dictionary / np.maximum(np.linalg.norm(dictionary, axis=1, keepdims=True), 1e-12)
    cos = a @ b.T  # [k, N]
    best = cos.argmax(axis=1)
    return [(int(i), float(cos[c, i])) for c, i in enumerate(best)]


def best_correlations(usage: np.ndarray, latents: np.ndarray) -> list[tuple[int, float]]:
    """For each column of ``usage [T, k]``: (latent, Pearson r) of the most correlated column of ``latents [T, N]``
    (latents that never vary are skipped)."""
    u = usage - usage.mean(axis=0)
    v = latents - latents.mean(axis=0)
    norms_u = np.linalg.norm(u, axis=0)
    norms_v = np.linalg.norm(v, axis=0)
    r = (u.T @ v) / np.maximum(np.outer(norms_u, norms_v), 1e-12)  # [k, N]
    r[:, norms_v < 1e-9] = -np.inf
    best = r.argmax(axis=1)
    return [(int(i), float(r[c, i])) for c, i in enumerate(best)]


def top_rows(usage: np.ndarray, count: int) -> list[list[int]]:
    """Per component, the ``count`` rows (tokens) that use it most, strongest first."""
    return [list(np.argsort(-usage[:, c], kind="stable")[:count]) for c in range(usage.shape[1])]


__all__ = ["NEGATIVES", "best_correlations", "best_cosines", "directions", "fit_nmf", "fvu", "held_out_rows",
           "nmf_and_pca", "nonnegative", "top_rows", "train_sae"]
