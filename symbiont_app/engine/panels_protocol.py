"""Requests and events of the meters, SAE, steering and lens panels (Qt-free, MLX-free).

Like :mod:`.protocol`: frozen dataclasses, requests carry a ``request_id``, events carry
plain Python and numpy values only. Requests marked *live* are meant for
``post_live`` (they change engine state between generation steps, so a slider move
acts on the next token); the rest are submitted and may be cancelled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .protocol import Event, Request

Positions = Any
"""``"all"``, ``"prompt"``, ``"generated"``, ``"last"`` or a tuple of absolute positions."""


# -- SAE ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoadSae(Request):
    """Load an SAE (a registry id, or a folder/file path) and meter it on every reply."""

    source: str = ""
    top_n: int = 8
    """Latents shown per token by the meter."""
    hook_point: str | None = None
    """Override the SAE's own hook point."""


@dataclass(frozen=True)
class UnloadSae(Request):
    """Drop the SAE, its meter and its clamps."""


@dataclass(frozen=True)
class SaeLoaded(Event):
    sae_id: str = ""
    path: str = ""
    hook_point: str = ""
    d_in: int = 0
    d_sae: int = 0
    architecture: str = ""
    k: int | None = None
    labels: tuple[str, ...] = ()
    """One label per latent (empty strings when the SAE has no records or labels)."""
    frequencies: np.ndarray | None = field(default=None, repr=False)
    """``[d_sae]`` fraction of held-out tokens each latent fires on (None without records)."""
    max_activations: np.ndarray | None = field(default=None, repr=False)
    """``[d_sae]`` observed maxima (None without records)."""
    messages: tuple[str, ...] = ()
    """Load warnings (e.g. records that describe other weights)."""


@dataclass(frozen=True)
class SaeUnloaded(Event):
    pass


@dataclass(frozen=True)
class GetLatentRecord(Request):
    """*Live*: the loaded SAE's feature record of one latent (a read of what is in memory)."""

    latent: int = 0


@dataclass(frozen=True)
class ContextRow:
    value: float
    before: str
    focus: str
    after: str


@dataclass(frozen=True)
class LatentRecord(Event):
    """What the SAE's feature records know about one latent."""

    latent: int = 0
    label: str = ""
    has_record: bool = False
    frequency: float = 0.0
    max_activation: float = 0.0
    mean_activation: float = 0.0
    contexts: tuple[ContextRow, ...] = ()
    promoted: tuple[tuple[str, float], ...] = ()
    """(token text, logit per unit of the decoder direction), most promoted first."""
    suppressed: tuple[tuple[str, float], ...] = ()
    auto_label: str = ""
    """The records' label: the tokens it fires on most → the tokens its decoder direction promotes most."""
    user_label: str = ""
    """The user's own label (``labels.json``), empty if none; it wins over the automatic one."""


@dataclass(frozen=True)
class ContrastSearch(Request):
    """Latents whose mean activation differs most between two prompt sets (``mlx_hooks.sae.search``)."""

    texts_a: tuple[str, ...] = ()
    texts_b: tuple[str, ...] = ()
    top_n: int = 20


@dataclass(frozen=True)
class ContrastFound(Event):
    latents: tuple[tuple[int, float, float, float, str], ...] = ()
    """``(latent, mean on A, mean on B, difference, label)``, largest difference first."""


@dataclass(frozen=True)
class WatchLatents(Request):
    """*Live*: add (``watch=True``) or remove latents from the meter's watched list."""

    latents: tuple[int, ...] = ()
    watch: bool = True


@dataclass(frozen=True)
class WatchedChanged(Event):
    watched: tuple[int, ...] = ()


@dataclass(frozen=True)
class TrainSae(Request):
    """Train (or resume) a TopK SAE run in ``run_dir``; save it to ``out`` and load it."""

    out: str = ""
    run_dir: str = ""
    """Working folder; the same folder resumes an interrupted run (default ``OUT.run``)."""
    hook_point: str = "resid_post.15"
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


@dataclass(frozen=True)
class SaeTrained(Event):
    out: str = ""
    finished: bool = False
    """False when cancelled: re-submit with the same run folder to resume."""
    run_dir: str = ""
    evaluation: dict = field(default_factory=dict)


# -- interventions (steering vectors and SAE clamps) -------------------------------------------------
@dataclass(frozen=True)
class InterventionInfo:
    """One active intervention as the steering panel lists it."""

    name: str
    kind: str
    """``vector`` or ``clamp``."""
    hook_point: str
    value: float
    """Coefficient (vector) or clamp value."""
    enabled: bool = True
    positions: Positions = "all"
    relative: bool = True
    """Vector: coefficient in units of the typical residual norm."""
    mode: str = "absolute"
    """Clamp: ``absolute`` or ``max_multiple``."""
    latent: int | None = None
    label: str = ""
    sae_id: str = ""
    detail: str = ""


@dataclass(frozen=True)
class InterventionsChanged(Event):
    items: tuple[InterventionInfo, ...] = ()
    message: str = ""


@dataclass(frozen=True)
class ListInterventions(Request):
    pass


@dataclass(frozen=True)
class ClampLatent(Request):
    """*Live*: pin an SAE latent to ``value`` (0 ablates) at ``positions``; replaces an earlier clamp of it."""

    latent: int = 0
    value: float = 0.0
    mode: str = "absolute"
    positions: Positions = "all"


@dataclass(frozen=True)
class BuildVector(Request):
    """Extract a steering vector from two prompt lists (or a built-in contrast set) and apply it."""

    name: str = "steering"
    positive: tuple[str, ...] = ()
    negative: tuple[str, ...] = ()
    contrast_set: str = ""
    """Built-in set name or a .json/.jsonl file; used when ``positive``/``negative`` are empty."""
    layer: int | None = None
    """``resid_post.{layer}``; None: the middle layer."""
    method: str = "mean_diff"
    tokens: str = "last"
    chat_template: bool = True
    coefficient: float = 0.2
    relative: bool = True
    positions: Positions = "all"
    enabled: bool = True
    """Apply it at once, or add it switched off."""


@dataclass(frozen=True)
class VectorBuilt(Event):
    name: str = ""
    hook_point: str = ""
    norm: float = 0.0
    typical_norm: float = 0.0


@dataclass(frozen=True)
class SetValue(Request):
    """*Live*: an intervention's coefficient (vector) or value (clamp)."""

    name: str = ""
    value: float = 0.0


@dataclass(frozen=True)
class SetEnabled(Request):
    """*Live*: switch an intervention on or off (it keeps its settings)."""

    name: str = ""
    enabled: bool = True


@dataclass(frozen=True)
class SetPositions(Request):
    """*Live*: where an intervention acts."""

    name: str = ""
    positions: Positions = "all"


@dataclass(frozen=True)
class RemoveIntervention(Request):
    """*Live*."""

    name: str = ""


@dataclass(frozen=True)
class ExportPreset(Request):
    path: str = ""
    name: str = "preset"
    description: str = ""
    sampling: Any = None
    """``SamplingSettings`` to store (None: the defaults)."""


@dataclass(frozen=True)
class PresetExported(Event):
    paths: tuple[str, ...] = ()
    count: int = 0


@dataclass(frozen=True)
class ImportPreset(Request):
    """Replace the active interventions with a preset's (all or nothing)."""

    path: str = ""
    allow_different_weights: bool = False


@dataclass(frozen=True)
class PresetImported(Event):
    path: str = ""
    compatibility: str = ""
    messages: tuple[str, ...] = ()
    sampling: Any = None


# -- lens and patching -------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunLens(Request):
    """Logit lens over the current conversation (a re-run of its tokens through the model)."""

    max_positions: int = 32
    """Only the last positions (the heatmap stays readable and the lens cheap)."""
    k: int = 5
    kind: str = "resid_post"


@dataclass(frozen=True)
class LensComputed(Event):
    points: tuple[str, ...] = ()
    positions: np.ndarray | None = None
    """``[T]`` absolute positions of the columns."""
    tokens: tuple[str, ...] = ()
    """The conversation's token at each column."""
    top_texts: tuple[tuple[tuple[str, ...], ...], ...] = ()
    """``[P][T][k]`` top tokens as text."""
    top_probs: np.ndarray | None = None
    """``[P, T, k]``."""
    target_probs: np.ndarray | None = None
    """``[P, T]`` probability of the conversation's next token."""
    source: str = ""
    """Where the residuals came from, in words."""


@dataclass(frozen=True)
class RunPatching(Request):
    clean: str = ""
    corrupted: str = ""
    clean_answer: str = ""
    corrupted_answer: str = ""
    kind: str = "resid_pre"


@dataclass(frozen=True)
class PatchingComputed(Event):
    layers: tuple[int, ...] = ()
    scores: np.ndarray | None = None
    """``[n_layers, T]``: 1 = clean behaviour restored by patching there, 0 = corrupted."""
    tokens: tuple[str, ...] = ()
    """Corrupted prompt's tokens (columns)."""
    clean_tokens: tuple[str, ...] = ()
    clean_logit_diff: float = 0.0
    corrupted_logit_diff: float = 0.0
    answers: tuple[str, str] = ("", "")
    kind: str = ""
    notes: tuple[str, ...] = ()
