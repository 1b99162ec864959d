"""The SAE panel's engine side: load/unload an SAE and its meter, latent records, watching, training.

A loaded SAE becomes ``state.sae`` with a :class:`~mlx_hooks.sae.meters.FeatureMeter` in
``state.meter``: the chat handler then reads it at every generated token (its tap runs
inside the forward) and ``TokenStep.step.readings["sae"]`` carries the reading.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from mlx_hooks.errors import SymbiontError

from ...panel_state import panel_state
from ...registry import HandlerContext, handles
from ...state import EngineState
from .messages import (
    ContextRow, ContrastFound, ContrastSearch, GetLatentRecord, LatentRecord, LoadSae, SaeLoaded, SaeTrained,
    SaeUnloaded, TrainSae, UnloadSae, WatchedChanged, WatchLatents,
)


def resolve_sae_path(source: str) -> Path:
    """A folder/file path as given, else an SAE id looked up by :mod:`mlx_hooks.sae.registry`."""
    from mlx_hooks.sae.registry import find_saes, sae_search_paths

    if not source:
        raise SymbiontError("choose an SAE: a shipped one, an SAE id, or a folder/file")
    path = Path(source).expanduser()
    if path.exists():
        return path
    known = find_saes()
    if source in known:
        return known[source]
    searched = ", ".join(str(p) for p in sae_search_paths())
    raise SymbiontError(f"{source}: no such file or folder, and no SAE with that id (searched {searched}; "
                        f"found: {', '.join(sorted(known)) or 'none'})")


def load_sae_into(state: EngineState, source: str, top_n: int = 8, hook_point: str | None = None) -> tuple:
    """Load an SAE into ``state`` (SAE, meter, records); returns (sae, path, records, messages)."""
    from mlx_hooks.sae.features import attach_feature_info
    from mlx_hooks.sae.formats import load_sae
    from mlx_hooks.sae.meters import FeatureMeter

    from ..sae_dashboard.handler import merge_user_labels
    from ..steering.handler import _remove

    if state.loaded is None:
        raise SymbiontError("no model loaded: load a model before its SAE")
    path = resolve_sae_path(source)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Fit errors (wrong width, hook point not in the model) raise here with the file named.
        sae = load_sae(path, state.loaded, hook_point=hook_point, attach_records=False)
        records = attach_feature_info(sae, path) if path.is_dir() else None
    messages = tuple(str(w.message) for w in caught)
    panels = panel_state(state)
    previous = state.sae_id
    watched = state.meter.watched if state.meter is not None and previous == sae.cfg.sae_id else ()
    for clamp in state.table.clamps():
        if clamp.sae_id != sae.cfg.sae_id:
            _remove(state, clamp.name)  # its latent numbers mean nothing for the new SAE
    state.sae, state.sae_id = sae, sae.cfg.sae_id
    state.meter = FeatureMeter(sae, top_n=top_n, watch=watched)
    panels.sae_path, panels.records = str(path), records
    merge_user_labels(state)  # the user's labels kept outside a read-only SAE folder
    state.changed()
    return sae, path, records, messages


def sae_loaded_event(request_id: int, state: EngineState, messages=()) -> SaeLoaded:
    import numpy as np

    sae, panels = state.sae, panel_state(state)
    cfg = sae.cfg
    records = panels.records
    labels = tuple(str(x) for x in sae.labels) if sae.labels is not None else ("",) * cfg.d_sae
    return SaeLoaded(
        request_id=request_id, sae_id=cfg.sae_id, path=panels.sae_path, hook_point=cfg.hook_point, d_in=int(cfg.d_in),
        d_sae=int(cfg.d_sae), architecture=cfg.architecture, k=cfg.k, labels=labels,
        frequencies=np.array([r.frequency for r in records.records], dtype=np.float32) if records else None,
        max_activations=np.asarray(sae.max_activations, dtype=np.float32) if sae.max_activations is not None else None,
        messages=tuple(messages),
    )


@handles(LoadSae)
def load(state: EngineState, request: LoadSae, ctx: HandlerContext) -> None:
    ctx.progress(0, 1, f"loading {request.source}")
    _, _, _, messages = load_sae_into(state, request.source, request.top_n, request.hook_point)
    ctx.emit(sae_loaded_event(request.request_id, state, messages))
    ctx.emit(WatchedChanged(request_id=request.request_id, watched=state.meter.watched))


@handles(UnloadSae)
def unload(state: EngineState, request, ctx: HandlerContext) -> None:
    from ..steering.handler import _remove

    panels = panel_state(state)
    for clamp in state.table.clamps():
        _remove(state, clamp.name)
    state.sae = state.sae_id = state.meter = None
    panels.sae_path, panels.records = "", None
    state.changed()
    ctx.emit(SaeUnloaded(request_id=request.request_id))


@handles(GetLatentRecord)
def latent_record(state: EngineState, request: GetLatentRecord, ctx: HandlerContext) -> None:
    from mlx_hooks.sae.features import visible

    from ..sae_dashboard.handler import user_labels

    if state.sae is None:
        raise SymbiontError("no SAE loaded")
    latent = int(request.latent)
    if not 0 <= latent < state.sae.cfg.d_sae:
        raise SymbiontError(f"latent {latent} is out of range for SAE {state.sae_id} (0..{state.sae.cfg.d_sae - 1})")
    labels = state.sae.labels
    label = str(labels[latent]) if labels is not None else ""
    records = panel_state(state).records
    user = user_labels(state).get(latent, "")
    auto = records.records[latent].auto_label if records is not None else ""
    if records is None:
        ctx.emit(LatentRecord(
            request_id=request.request_id, latent=latent, label=label, has_record=False, frequency=0.0,
            max_activation=0.0, mean_activation=0.0, contexts=(), promoted=(), suppressed=(), auto_label=auto,
            user_label=user,
        ))
        return
    r = records.records[latent]
    contexts = tuple(
        # the focus token's leading space stays in the text before it ("the Earth", not "theEarth")
        ContextRow(value=c.value, before=_one_line("".join(c.tokens[: c.focus]) + _leading_space(c.tokens[c.focus])),
                   focus=visible(c.tokens[c.focus]), after=_one_line("".join(c.tokens[c.focus + 1:])))
        for c in r.top_contexts
    )
    ctx.emit(LatentRecord(
        request_id=request.request_id, latent=latent, label=label, has_record=True, frequency=r.frequency,
        max_activation=r.max_activation, mean_activation=r.mean_activation, contexts=contexts,
        promoted=tuple((t.text, t.logit) for t in r.promoted),
        suppressed=tuple((t.text, t.logit) for t in r.suppressed),
        auto_label=auto, user_label=user,
    ))


@handles(ContrastSearch)
def contrast(state: EngineState, request: ContrastSearch, ctx: HandlerContext) -> None:
    from mlx_hooks.sae.search import contrast_latents

    if state.sae is None or state.loaded is None:
        raise SymbiontError("load a model and an SAE first")
    texts_a = [t for t in request.texts_a if t.strip()]
    texts_b = [t for t in request.texts_b if t.strip()]
    if not texts_a or not texts_b:
        raise SymbiontError("give at least one prompt on each side (one per line)")
    ctx.progress(0, 1, f"running {len(texts_a) + len(texts_b)} prompts through the SAE")
    found = contrast_latents(state.sae, state.loaded.model, state.loaded.tokenizer, texts_a, texts_b,
                             top_n=request.top_n, direction="a")
    ctx.emit(ContrastFound(request_id=request.request_id,
                           latents=tuple((c.index, c.mean_a, c.mean_b, c.difference, c.label)
                                                     for c in found)))


def _leading_space(token: str) -> str:
    return " " if token[:1] == " " and token.strip() else ""


def _one_line(text: str) -> str:
    return text.replace("\n", "⏎").replace("\t", " ")


@handles(WatchLatents)
def watch(state: EngineState, request: WatchLatents, ctx: HandlerContext) -> None:
    if state.meter is None:
        raise SymbiontError("no SAE loaded: load one to watch its latents")
    if request.watch:
        state.meter.watch(*request.latents)  # validates the range
    else:
        state.meter.unwatch(*request.latents)
    ctx.emit(WatchedChanged(request_id=request.request_id, watched=state.meter.watched))


@handles(TrainSae)
def train(state: EngineState, request: TrainSae, ctx: HandlerContext) -> None:
    import json

    from mlx_hooks.sae.pipeline import RunConfig, export_sae, train_sae, write_json_atomic
    from mlx_hooks.sae.formats import save_sae
    from mlx_hooks.sae.train import TrainConfig

    loaded = state.loaded
    if loaded is None:
        raise SymbiontError("no model loaded: an SAE is trained on the loaded model's activations")
    if not request.out:
        raise SymbiontError("choose a folder to save the trained SAE in")
    config = TrainConfig(d_sae=request.d_sae, k=request.k, steps=request.steps, batch_size=request.batch_size,
                         lr=request.lr, seed=request.seed, report_every=max(1, request.report_every),
                         checkpoint_every=max(1, min(250, request.steps // 4 or 1)))
    run = RunConfig(hook_point=request.hook_point, corpus=request.corpus, context_length=request.context_length,
                    train=config)
    out = Path(request.out)
    run_dir = Path(request.run_dir) if request.run_dir else out.with_name(out.name + ".run")

    def stage(name: str, done: int, total: int) -> None:
        ctx.progress(done, max(total, 1), name, stage=name)

    def report(r) -> None:
        ctx.progress(r.step, r.steps, "training", stage="training", step=r.step, mse=r.mse,
                     variance_explained=r.variance_explained, l0=r.l0, dead_fraction=r.dead_fraction,
                     tokens_seen=r.tokens_seen)

    sae, evaluation = train_sae(loaded, run, run_dir, on_report=report, on_stage=stage, should_stop=ctx.is_cancelled)
    if evaluation is None:  # cancelled: the run folder resumes next time
        ctx.emit(SaeTrained(request_id=request.request_id, out=str(out), finished=False, run_dir=str(run_dir),
                            evaluation={}))
        return
    if request.build_records:
        export_sae(sae, loaded, run, run_dir, out, progress=lambda a, b: stage("feature records", a, b))
    else:
        save_sae(sae, out)
        record = run_dir / "training_record.json"
        if record.exists():
            write_json_atomic(out / "training_record.json", json.loads(record.read_text()))
    ctx.emit(SaeTrained(request_id=request.request_id, out=str(out), finished=True, run_dir=str(run_dir),
                        evaluation=evaluation.to_dict()))
    if request.load_when_done:
        _, _, _, messages = load_sae_into(state, str(out))
        ctx.emit(sae_loaded_event(request.request_id, state, messages))
        ctx.emit(WatchedChanged(request_id=request.request_id, watched=state.meter.watched))
