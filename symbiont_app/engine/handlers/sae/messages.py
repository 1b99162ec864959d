"""Requests and events of the SAE panel and the meters (Qt-free, MLX-free: see
:mod:`symbiont_app.engine.handlers`). Requests marked *live* are meant for ``post_live``
(answered between generation steps); the rest are submitted and may be cancelled."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...protocol import Event, Request


@dataclass(frozen=True, kw_only=True)
class LoadSae(Request):
    """Load an SAE (a registry id, or a folder/file path) and meter it on every reply."""

    source: str
    top_n: int = 8
    """Latents shown per token by the meter."""
    hook_point: str | None = None
    """Override the SAE's own hook point (None: the SAE's)."""


@dataclass(frozen=True, kw_only=True)
class UnloadSae(Request):
    """Drop the SAE, its meter and its clamps."""


@dataclass(frozen=True, kw_only=True)
class SaeLoaded(Event):
    sae_id: str
    path: str
    hook_point: str
    d_in: int
    d_sae: int
    architecture: str
    k: int | None
    """TopK's k (None for other architectures)."""
    labels: tuple[str, ...]
    """One label per latent (empty strings when the SAE has no records or labels)."""
    frequencies: np.ndarray | None = field(repr=False)
    """``[d_sae]`` fraction of held-out tokens each latent fires on (None without records)."""
    max_activations: np.ndarray | None = field(repr=False)
    """``[d_sae]`` observed maxima (None without records)."""
    messages: tuple[str, ...]
    """Load warnings (e.g. records that describe other weights)."""


@dataclass(frozen=True, kw_only=True)
class SaeUnloaded(Event):
    pass


@dataclass(frozen=True, kw_only=True)
class GetLatentRecord(Request):
    """*Live*: the loaded SAE's feature record of one latent (a read of what is in memory)."""

    latent: int


@dataclass(frozen=True, kw_only=True)
class ContextRow:
    value: float
    before: str
    focus: str
    after: str


@dataclass(frozen=True, kw_only=True)
class LatentRecord(Event):
    """What the SAE's feature records know about one latent (``has_record`` False: the SAE has no
    records; the numbers are then 0 and the lists empty)."""

    latent: int
    label: str
    has_record: bool
    frequency: float
    max_activation: float
    mean_activation: float
    contexts: tuple[ContextRow, ...]
    promoted: tuple[tuple[str, float], ...]
    """(token text, logit per unit of the decoder direction), most promoted first."""
    suppressed: tuple[tuple[str, float], ...]
    auto_label: str
    """The records' label: the tokens it fires on most → the tokens its decoder direction promotes most."""
    user_label: str
    """The user's own label (``labels.json``), empty if none; it wins over the automatic one."""


@dataclass(frozen=True, kw_only=True)
class ContrastSearch(Request):
    """Latents whose mean activation differs most between two prompt sets (``mlx_hooks.sae.search``)."""

    texts_a: tuple[str, ...]
    texts_b: tuple[str, ...]
    top_n: int = 20


@dataclass(frozen=True, kw_only=True)
class ContrastFound(Event):
    latents: tuple[tuple[int, float, float, float, str], ...]
    """``(latent, mean on A, mean on B, difference, label)``, largest difference first."""


@dataclass(frozen=True, kw_only=True)
class WatchLatents(Request):
    """*Live*: add (``watch=True``) or remove latents from the meter's watched list."""

    latents: tuple[int, ...]
    watch: bool


@dataclass(frozen=True, kw_only=True)
class WatchedChanged(Event):
    watched: tuple[int, ...]


@dataclass(frozen=True, kw_only=True)
class TrainSae(Request):
    """Train (or resume) a TopK SAE run in ``run_dir``; save it to ``out`` and load it."""

    out: str
    hook_point: str
    run_dir: str | None = None
    """Working folder; the same folder resumes an interrupted run (None or empty: ``OUT.run``)."""
    corpus: str = "builtin"
    """``builtin`` or a folder of .txt/.jsonl files."""
    d_sae: int = 4608
    k: int = 32
    steps: int = 2400
    batch_size: int = 512
    lr: float = 4e-4
    seed: int = 0
    context_length: int = 128
    report_every: int = 50
    build_records: bool = True
    """Build feature records (top contexts, labels) after training."""
    load_when_done: bool = True


@dataclass(frozen=True, kw_only=True)
class SaeTrained(Event):
    out: str
    finished: bool
    """False when cancelled: re-submit with the same run folder to resume."""
    run_dir: str
    evaluation: dict
    """The held-out evaluation (empty when cancelled)."""
