"""Steering vectors and SAE clamps: build, adjust live, switch, remove, export/import presets.

Every entry lives in ``state.table`` (:mod:`symbiont_app.engine.intervention_table`), in the
order it was added; generation applies its enabled entries in that order. Every change calls
``state.changed()``, so a reply that is streaming picks it up at its next token. Every
handler answers with the full list (:class:`InterventionsChanged`).
"""

from __future__ import annotations

from mlx_hooks.errors import SymbiontError

from ...intervention_table import ClampEntry, VectorEntry, clamp_name
from ...registry import HandlerContext, handles
from ...state import EngineState
from .messages import (
    BuildVector, ClampLatent, ExportPreset, ImportPreset, InterventionsChanged, ListInterventions, PresetExported,
    PresetImported, RemoveIntervention, SetEnabled, SetPositions, SetValue, VectorBuilt,
)


class PanelError(SymbiontError):
    """Bad input from a panel, with a message for the window (the worker turns it into ``Failed``)."""


def _require_model(state: EngineState):
    if state.loaded is None:
        raise SymbiontError("no model loaded: load one from the model picker first")
    return state.loaded


def _report(state: EngineState, ctx: HandlerContext, message: str = "") -> None:
    ctx.emit(InterventionsChanged(request_id=ctx.request_id, items=state.table.infos(), message=message))


def add_vector(state: EngineState, vector, coefficient: float, relative: bool = True, positions="all",
               enabled: bool = True, replace: bool = True) -> str:
    """Append a ``SteeringVector`` to the table (replacing one of the same name, which goes to the
    end, unless ``replace`` is False: then it gets a new name)."""
    from dataclasses import replace as with_name

    from mlx_hooks.steering import SteeringSet

    loaded = _require_model(state)
    if state.table.find(vector.name) is not None:
        if replace:
            _remove(state, vector.name)
        else:
            vector = with_name(vector, name=state.table.unique_name(vector.name))
    # SteeringSet.add is where mlx_hooks checks the width and hook point and makes the live AddVector;
    # the table, not this throwaway set, keeps it.
    applied = SteeringSet(loaded.model).add(vector, coefficient, relative=relative, positions=positions)
    state.table.append(VectorEntry(name=vector.name, applied=applied, enabled=enabled))
    state.changed()
    return vector.name


def add_clamp(state: EngineState, latent: int, value: float, mode: str = "absolute", positions="all",
              enabled: bool = True) -> str:
    """Clamp a latent of the loaded SAE (``state.sae``); one clamp per latent, replaced where it stands on re-clamp."""
    from mlx_hooks.sae.meters import clamp

    if state.sae is None:
        raise SymbiontError("no SAE loaded: load one in the SAE panel to clamp its latents")
    sae = state.sae
    intervention = clamp(sae, int(latent), float(value), mode, positions)  # validates latent, mode, maxima
    labels = sae.labels
    name = clamp_name(latent)
    state.table.put(ClampEntry(
        name=name, latent=int(latent), value=float(value), mode=mode, positions=positions,
        label=str(labels[int(latent)]) if labels is not None else "", sae_id=sae.cfg.sae_id,
        hook_point=sae.cfg.hook_point, intervention=intervention, enabled=enabled,
    ))
    state.changed()
    return name


def _remove(state: EngineState, name: str) -> None:
    state.table.remove(name)
    state.changed()


def clear_interventions(state: EngineState) -> None:
    state.table.clear()
    state.changed()


def _lookup(state: EngineState, name: str):
    entry = state.table.find(name)
    if entry is None:
        raise PanelError(f"no intervention named {name!r} (active: {', '.join(state.table.names()) or 'none'})")
    return entry


@handles(ListInterventions)
def list_interventions(state: EngineState, request, ctx: HandlerContext) -> None:
    _report(state, ctx)


@handles(ClampLatent)
def clamp_latent(state: EngineState, request: ClampLatent, ctx: HandlerContext) -> None:
    name = add_clamp(state, request.latent, request.value, request.mode, request.positions)
    verb = "ablated" if request.value == 0 else f"clamped to {request.value:g}" + (
        " × max" if request.mode == "max_multiple" else "")
    _report(state, ctx, f"{name} {verb}")


@handles(SetValue)
def set_value(state: EngineState, request: SetValue, ctx: HandlerContext) -> None:
    item = _lookup(state, request.name)
    if isinstance(item, VectorEntry):
        item.applied.coefficient = request.value  # the live AddVector: no rebuild
        state.changed()
    else:
        add_clamp(state, item.latent, request.value, item.mode, item.positions, item.enabled)
    _report(state, ctx)


@handles(SetEnabled)
def set_enabled(state: EngineState, request: SetEnabled, ctx: HandlerContext) -> None:
    item = _lookup(state, request.name)
    item.enabled = request.enabled  # it keeps its row, its settings and its live intervention
    state.changed()
    _report(state, ctx)


@handles(SetPositions)
def set_positions(state: EngineState, request: SetPositions, ctx: HandlerContext) -> None:
    from mlx_hooks.interventions import ForwardContext, position_mask

    positions = request.positions if isinstance(request.positions, str) else tuple(int(p) for p in request.positions)
    position_mask(positions, ForwardContext.from_offset(0, 1))  # raises on an unknown mode
    item = _lookup(state, request.name)
    if isinstance(item, VectorEntry):
        item.applied.intervention.positions = positions
        state.changed()
    else:
        add_clamp(state, item.latent, item.value, item.mode, positions, item.enabled)
    _report(state, ctx)


@handles(RemoveIntervention)
def remove(state: EngineState, request: RemoveIntervention, ctx: HandlerContext) -> None:
    _lookup(state, request.name)
    _remove(state, request.name)
    _report(state, ctx, f"removed {request.name}")


@handles(BuildVector)
def build_vector(state: EngineState, request: BuildVector, ctx: HandlerContext) -> None:
    from mlx_hooks.contrast import load_contrast_set
    from mlx_hooks.steering import extract_steering_vector

    loaded = _require_model(state)
    source = {}
    positive, negative = list(request.positive), list(request.negative)
    if not positive or not negative:
        if not request.contrast_set:
            raise PanelError("give positive and negative prompts (one per line), or choose a contrast set")
        contrast = load_contrast_set(request.contrast_set)
        positive, negative, source = list(contrast.positive), list(contrast.negative), contrast.source_summary()
    ctx.progress(0, 1, f"reading {len(positive) + len(negative)} prompts")
    vector = extract_steering_vector(
        loaded.model, loaded.tokenizer, positive, negative, name=request.name, layer=request.layer,
        method=request.method, tokens=request.tokens, chat_template=request.chat_template, source=source,
    )
    if ctx.is_cancelled():
        return
    add_vector(state, vector, request.coefficient, request.relative, request.positions, request.enabled)
    ctx.emit(VectorBuilt(request_id=request.request_id, name=vector.name, hook_point=vector.hook_point,
                         norm=vector.norm, typical_norm=vector.typical_norm))
    _report(state, ctx, f"built {vector.name} at {vector.hook_point}")


# -- presets -------------------------------------------------------------------------------------------
def current_preset(state: EngineState, name: str, description: str = "", sampling=None):
    """The active interventions (disabled ones left out) as a ``Preset``."""
    from mlx_hooks.presets import Preset
    from mlx_hooks.sampling import SamplingSettings

    loaded = _require_model(state)
    entries, vectors = state.table.preset_entries()
    return Preset(name=name, target_model_name=loaded.name, fingerprint=loaded.fingerprint, description=description,
                  sampling=sampling or SamplingSettings(), interventions=entries, vectors=vectors)


@handles(ExportPreset)
def export_preset(state: EngineState, request: ExportPreset, ctx: HandlerContext) -> None:
    from mlx_hooks.presets import write_preset

    if not request.path:
        raise PanelError("choose a file to export the preset to (.symbiont-preset or .json)")
    preset = current_preset(state, request.name, request.description, request.sampling)
    if not preset.interventions:
        raise PanelError("nothing to export: no enabled steering vector or clamp")
    paths = write_preset(request.path, preset)
    ctx.emit(PresetExported(request_id=request.request_id, paths=tuple(str(p) for p in paths),
                            count=len(preset.interventions)))


def _resolver(state: EngineState):
    """Presets' SAE ids: the loaded SAE first, then the registry (user folders, shipped SAEs)."""
    from mlx_hooks.sae.registry import make_resolver

    registry = make_resolver(state.loaded)

    def resolve(sae_id: str):
        if state.sae is not None and state.sae_id == sae_id:
            return state.sae
        return registry(sae_id)

    return resolve


@handles(ImportPreset)
def import_preset(state: EngineState, request: ImportPreset, ctx: HandlerContext) -> None:
    import warnings

    from mlx_hooks.preset_apply import apply_preset, check_compatibility
    from mlx_hooks.presets import read_preset
    from mlx_hooks.sae.meters import clamp

    loaded = _require_model(state)
    preset = read_preset(request.path)
    verdict = check_compatibility(preset.fingerprint, loaded.fingerprint)
    resolve = _resolver(state)
    with warnings.catch_warnings():  # the messages travel in the event instead
        warnings.simplefilter("ignore")
        # All checks happen here, before anything changes: a preset that fails leaves the current set as it is.
        applied = apply_preset(preset, loaded.model, loaded.fingerprint, sae_resolver=resolve,
                               allow_different_weights=request.allow_different_weights)
    table = state.table
    table.clear()
    vectors = iter(applied.steering.applied)
    for entry in preset.interventions:
        if hasattr(entry, "vector"):
            a = next(vectors)
            table.put(VectorEntry(name=a.vector.name, applied=a))
        else:
            sae = resolve(entry.sae_id)
            name = clamp_name(entry.latent) if entry.sae_id == state.sae_id else f"{entry.sae_id}:{entry.latent}"
            table.put(ClampEntry(
                name=name, latent=entry.latent, value=entry.value, mode=entry.value_mode, positions=entry.positions,
                label=entry.label, sae_id=entry.sae_id, hook_point=sae.cfg.hook_point,
                intervention=clamp(sae, entry.latent, entry.value, entry.value_mode, entry.positions),
            ))
    state.changed()
    _report(state, ctx)
    ctx.emit(PresetImported(request_id=request.request_id, path=request.path, compatibility=verdict.describe(),
                            messages=tuple(applied.messages),
                            sampling=applied.sampling))
