"""The superposition lab's experiments: what each one trains or measures for one seed.

- ``phase``: n = 20 features into m = 5 dimensions, importance 0.9^i, swept over sparsity
  (the published phase picture): which features are represented, WᵀW, features per dimension.
- ``geometry``: uniform importance, many features into few dimensions, sparsity on a log grid
  of 1/(1 − S): the feature dimensionalities D_i and where they cluster.
- ``pictures``: 2 → 1, 3 → 2 and 5 → 2, dense and sparse: the small pictures (an antipodal pair,
  a triangle, a pentagon) and their dense counterparts (the most important features only).
- ``xor``: the two-layer XOR network and one-weight lesions (:mod:`.xor`).
- ``interference``: toy models with m dimensions and n = m, 2m, 4m, 8m features (one padded
  stack), sparse: the cosines between represented features as features per dimension grow.
- ``interference_sae``: the same statistics for random subsets of an SAE's decoder directions
  (the default: the shipped SmolLM2 SAE) against random directions (:mod:`.interference`).

:func:`run_unit` runs one (experiment, seed) and returns a JSON-ready result.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from mlx_hooks.errors import SymbiontError

from . import geometry
from .interference import cosine_stats, dictionary_sweep
from .toy import ToySpec, train_toy
from .xor import run_xor

EXPERIMENTS = ("phase", "geometry", "pictures", "xor", "interference", "interference_sae")
PHASE_SPARSITIES = (0.0, 0.7, 0.9, 0.97, 0.99, 0.997, 0.999)
"""The published phase picture's sparsities (S = 1 − feature density)."""
PICTURES = ((2, 1), (3, 2), (5, 2))
"""(n, m) of the small pictures."""


class SuperpositionError(SymbiontError):
    """A superposition-lab input or run folder that cannot be used (names the file and the problem)."""


@dataclass
class LabConfig:
    """What ``symbiont lab superposition`` runs; every field but ``seeds`` and ``experiments`` is part of
    the run folder's identity (changing one needs another folder)."""

    seeds: int = 2
    """Seeds per experiment (each seed: every toy model from fresh initial weights and data)."""
    experiments: tuple[str, ...] = EXPERIMENTS
    """Which experiments to run (a subset of :data:`EXPERIMENTS`)."""
    steps: int = 6000
    """Adam steps of every toy model (published 10,000; at 4,000 the dense 20 → 5 model had not yet
    dropped feature 5 in some seeds, at 6,000 it had in every seed tried)."""
    batch: int = 1024
    """Toy-model batch (published 1,024); the geometry and interference sweeps use half of it."""
    lr: float = 1e-3
    """Toy-model Adam learning rate (published 1e-3)."""
    geometry_features: int = 60
    """n of the geometry sweep."""
    geometry_hidden: int = 6
    """m of the geometry sweep."""
    geometry_points: int = 8
    """Sparsities of the geometry sweep, 1/(1 − S) log-spaced from 1.5 to 100."""
    interference_hidden: int = 10
    """m of the toy interference sweep; n = 1, 2, 4, 8 times m."""
    interference_sparsity: float = 0.99
    """S of the toy interference sweep."""
    xor_hidden: tuple[int, ...] = (2, 8)
    """Hidden widths of the XOR networks (2: the classic minimal net)."""
    xor_networks: int = 32
    """XOR networks trained per (coding, width) and seed."""
    sae_path: str | None = None
    """The SAE whose decoder ``interference_sae`` reads (None: the shipped SmolLM2 SAE)."""
    sae_ratios: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
    """Decoder-subset sizes, in features per dimension."""

    def __post_init__(self):
        unknown = [e for e in self.experiments if e not in EXPERIMENTS]
        if unknown:
            raise SuperpositionError(f"unknown experiment(s) {', '.join(unknown)} (choose from {', '.join(EXPERIMENTS)})")
        if self.seeds < 1 or self.steps < 100 or self.batch < 16:
            raise SuperpositionError(f"seeds ≥ 1, steps ≥ 100 and batch ≥ 16 (got {self.seeds}, {self.steps}, {self.batch})")
        if not 0.0 <= self.interference_sparsity < 1.0:
            raise SuperpositionError(f"interference sparsity must lie in [0, 1), got {self.interference_sparsity}")

    def identity(self, sae_fingerprint: dict | None) -> dict:
        """Settings a result depends on (a resumed run must match; seeds and experiments may change)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("seeds", "experiments", "sae_path")}
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
        out["sae"] = sae_fingerprint
        return out

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def geometry_sparsities(points: int) -> tuple[float, ...]:
    return tuple(float(1.0 - 1.0 / v) for v in np.geomspace(1.5, 100.0, points))


def specs(config: LabConfig) -> dict[str, list[ToySpec]]:
    """The toy sweeps each toy experiment trains (one stack each)."""
    common = dict(steps=config.steps, lr=config.lr)
    half = max(16, config.batch // 2)
    m = config.interference_hidden
    return {
        "phase": [ToySpec(20, 5, PHASE_SPARSITIES, importance_decay=0.9, batch=config.batch, **common)],
        "geometry": [ToySpec(config.geometry_features, config.geometry_hidden,
                             geometry_sparsities(config.geometry_points), importance_decay=1.0, batch=half, **common)],
        "pictures": [ToySpec(n, mm, (0.0, 0.9, 0.99), importance_decay=0.9, batch=config.batch, **common) for n, mm in PICTURES],
        "interference": [ToySpec(8 * m, m, (config.interference_sparsity,) * 4, importance_decay=1.0,
                                 features_per_copy=(m, 2 * m, 4 * m, 8 * m),
                                 batch=half, **common)],
    }


def shipped_sae_path() -> Path:
    from mlx_hooks.sae.registry import SHIPPED_DIR

    return SHIPPED_DIR / "smollm2-135m-instruct" / "resid_post.15-topk32-4608"


def load_decoder(path: str | Path | None) -> tuple[np.ndarray, dict]:
    """An SAE's decoder directions ``[d_sae, d_in]`` (float32) and a fingerprint of the file they came from."""
    from mlx_hooks.sae.formats import load_sae

    folder = Path(path) if path else shipped_sae_path()
    sae = load_sae(folder, attach_records=False)  # no model: only the decoder is read
    import mlx.core as mx

    decoder = np.array(sae.W_dec.astype(mx.float32))  # [d_sae, d_in]
    digest = hashlib.sha256(decoder.tobytes()).hexdigest()[:16]
    return decoder, {"path": str(folder), "sae_id": sae.cfg.sae_id, "hook_point": sae.cfg.hook_point,
                     "d_sae": int(decoder.shape[0]), "d_in": int(decoder.shape[1]), "decoder_sha256_16": digest}


def _toy_unit(spec: ToySpec, seed: int, purpose: str, on_step) -> list[dict]:
    trained = train_toy(spec, seed, purpose, on_progress=on_step)
    copies = []
    for k, s in enumerate(spec.sparsities):
        n_real = int(spec.real_features()[k])
        w, b = trained.W[k][:, :n_real], trained.b[k][:n_real]
        copies.append({"n": n_real, "m": spec.n_hidden, "sparsity": s, "importance_decay": spec.importance_decay,
                       "loss": float(trained.loss[k]), "W": w.tolist(), **geometry.summarize_copy(w, b)})
    return copies


def run_unit(config: LabConfig, experiment: str, seed: int, decoder: np.ndarray | None = None,
             on_step: Callable[[str, int, int, float], None] | None = None) -> tuple[dict, float]:
    """One (experiment, seed): its result dict and the seconds it took.
    ``on_step(what, step, steps, mean_loss)`` reports toy training progress."""
    started = time.perf_counter()
    say = on_step or (lambda *a: None)
    if experiment in ("phase", "geometry", "pictures", "interference"):
        sweeps = []
        for index, spec in enumerate(specs(config)[experiment]):
            label = f"{experiment} {spec.n_features}→{spec.n_hidden}"
            sweeps.append(_toy_unit(spec, seed, f"{experiment}/{index}",
                                    lambda step, losses, label=label, total=spec.steps: say(label, step, total, float(np.mean(losses)))))
        result: dict = {"sweeps": sweeps}
        if experiment == "interference":
            rng = np.random.default_rng([seed, 23])
            for copy in sweeps[0]:
                w = np.asarray(copy.pop("W"))
                rep = geometry.represented(w)
                copy["cosines"] = cosine_stats(w[:, rep].T, rng)
                copy["random"] = cosine_stats(np.random.default_rng([seed, copy["n"]]).standard_normal((int(rep.sum()), w.shape[0])), rng)
    elif experiment == "xor":
        result = run_xor(seed, tuple(config.xor_hidden), config.xor_networks)
    elif experiment == "interference_sae":
        if decoder is None:
            raise SuperpositionError("interference_sae needs the SAE decoder (load_decoder)")
        result = {"sweep": dictionary_sweep(decoder, tuple(config.sae_ratios), seed)}
    else:
        raise SuperpositionError(f"unknown experiment {experiment!r}")
    return result, time.perf_counter() - started


__all__ = ["EXPERIMENTS", "LabConfig", "PHASE_SPARSITIES", "PICTURES", "SuperpositionError", "geometry_sparsities",
           "load_decoder", "run_unit", "shipped_sae_path", "specs"]
