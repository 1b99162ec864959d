"""What an emergence run does: the three grokking arms, EI on their checkpoints, EI on a language model.

Published settings (Nanda et al. 2023): a + b mod 113, one layer, d_model 128, 4 heads, MLP 512
ReLU, no LayerNorm, AdamW lr 1e-3, weight decay 1.0, full batch, 30% of pairs; Power et al.
(2022): 30–50% of pairs, weight decay matters most. **Changed here to fit minutes on a 2-core
CPU**: p = 59 (3,481 pairs instead of 12,769: 3.7× fewer per full-batch step) and learning
rate 1e-2 (in trials here at p = 59, test accuracy reached 0.99 at ~3,000 steps with lr 3e-3 and
at 1,400 with 1e-2; with 1e-3 it was still 0.08 at 500 steps); widths, heads, weight decay,
data fraction, betas and full batch are the published ones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from mlx_hooks.intervention_states import MAX_UNITS

from .ei_grokking import GrokEIConfig
from .ei_model import ModelEIConfig
from .grokking import ArmConfig, EmergenceError

ARMS = ("grokking", "no_weight_decay", "large_fraction")
"""The main arm and its two controls."""
EI_ARMS = ("grokking", "no_weight_decay")
"""Arms whose checkpoints get EI measured (the control shows what happens without the transition)."""


@dataclass(frozen=True)
class EmergenceConfig:
    """Settings of one run (all defaults are the measured default run)."""

    p: int = 59
    """Modulus."""
    train_fraction: float = 0.3
    """Share of pairs trained on in the main and no-weight-decay arms."""
    large_fraction: float = 0.7
    """Share of pairs in the large-training-fraction control."""
    weight_decay: float = 1.0
    """AdamW weight decay of the main and large-fraction arms (the no-weight-decay arm: 0)."""
    lr: float = 1e-2
    """AdamW learning rate (published 1e-3; see the module docstring)."""
    steps: int = 2500
    """Step budget of each arm (the main and large-fraction arms stop early once generalised)."""
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int = 512
    seed: int = 0
    eval_every: int = 50
    checkpoint_every: int = 100
    """Steps between saved weights (what EI and restricted/excluded loss are measured on)."""
    stop_patience: int = 300
    """Steps at test accuracy ≥ 0.99 before an arm stops early (0: never)."""
    top_frequencies: int = 4
    """Frequencies counted by the Fourier sparsity and used as key frequencies."""
    ei_every: int = 1
    """Measure EI at every this-many-th saved checkpoint (and always the last)."""
    grok_ei: GrokEIConfig = field(default_factory=GrokEIConfig)
    model_ei: ModelEIConfig | None = field(default_factory=ModelEIConfig)
    """EI on a language model; None skips it."""
    model: str = "default"
    """The language model (``default``, a folder, a GGUF, a repo id)."""
    sae: str | None = None
    """Its SAE folder; None: the shipped SAE for the default model."""
    n_boot: int = 1000
    """Bootstrap resamples of prompts for every interval."""

    def __post_init__(self):
        if self.p < 5:
            raise EmergenceError(f"--p {self.p}: use a modulus of at least 5")
        for name in ("train_fraction", "large_fraction"):
            if not 0 < getattr(self, name) < 1:
                raise EmergenceError(f"{name} {getattr(self, name)} must be between 0 and 1")
        if self.d_model % self.n_heads:
            raise EmergenceError(f"d_model {self.d_model} is not a multiple of n_heads {self.n_heads}")
        units = self.grok_ei.units
        if not 1 <= units <= min(MAX_UNITS, 2 * self.top_frequencies):
            raise EmergenceError(f"--units {units}: use 1 to {min(MAX_UNITS, 2 * self.top_frequencies)} (the Fourier "
                                 f"scale has a cos and a sin unit for each of {self.top_frequencies} key frequencies)")

    def arm(self, name: str) -> ArmConfig:
        base = ArmConfig(name=name, p=self.p, train_fraction=self.train_fraction, weight_decay=self.weight_decay,
                         lr=self.lr, steps=self.steps, d_model=self.d_model, n_heads=self.n_heads, d_mlp=self.d_mlp,
                         seed=self.seed, eval_every=self.eval_every, checkpoint_every=self.checkpoint_every,
                         stop_patience=self.stop_patience, top_frequencies=self.top_frequencies)
        if name == "no_weight_decay":
            return replace(base, weight_decay=0.0)
        if name == "large_fraction":
            return replace(base, train_fraction=self.large_fraction)
        if name != "grokking":
            raise EmergenceError(f"unknown arm {name!r} (arms: {', '.join(ARMS)})")
        return base

    def identity(self) -> dict:
        """Settings the results depend on (config.json; a resumed run must match). Not the step
        budget: a larger one continues the arms that stopped at it (analyses are redone)."""
        out = {k: v for k, v in asdict(self).items() if k != "steps"}
        out["grok_ei"] = self.grok_ei.identity()
        out["model_ei"] = self.model_ei.identity() if self.model_ei else None
        return out


__all__ = ["ARMS", "EI_ARMS", "EmergenceConfig"]
