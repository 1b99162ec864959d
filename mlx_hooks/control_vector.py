"""Export steering vectors as a llama.cpp control vector (``llama-cli --control-vector file.gguf``).

The file layout is llama.cpp's, as its ``cvector-generator`` writes it:
``general.architecture = "controlvector"``, ``controlvector.model_hint`` (the model's
architecture as llama.cpp names it, e.g. ``llama`` for Mistral, ``gemma3`` for Gemma 3), ``controlvector.layer_count`` (number of directions), and
one float32 ``[n_embd]`` tensor ``direction.N`` per layer N = 1 … n_layers-1.

Which layer ``direction.N`` steers was read from llama.cpp's source, not assumed:

- ``common_control_vector_load_one`` (common/common.cpp) refuses N = 0 and stores
  ``direction.N`` at offset ``n_embd·(N-1)`` ("layer 1 at [0]");
- ``llama_adapter_cvec::apply`` (src/llama-adapter.cpp) fills block ``il``'s tensor from
  offset ``n_embd·(il-1)``, starting at ``il = 1`` ("there's never a tensor for layer 0");
- the model graphs call ``cur = build_cvec(cur, il)`` on block ``il``'s output, after the
  FFN residual add, just before naming it ``l_out``.

So ``direction.N`` is added to the output of 0-based block N: our ``resid_post.N`` (also
written ``resid_pre.N+1``). Block 0's output cannot be steered in llama.cpp, and neither
can ``embed``; such vectors are refused. llama.cpp adds the direction at every position
and multiplies it by the load-time strength (1 unless ``--control-vector-scaled`` says
otherwise), so the coefficient is baked in here (absolute scale) and position masks are
reported as not carried over. Vectors at the same layer are summed, as llama.cpp does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .architectures import gguf_architecture
from .atomic_io import atomic_path
from .interventions import PositionSpec
from .presets import Preset
from .steering import NAME_PATTERN, SteeringError, SteeringVector


@dataclass(frozen=True)
class ControlVectorItem:
    """One vector to bake into a control vector."""

    vector: SteeringVector
    coefficient: float
    relative: bool = True
    hook_point: str | None = None
    """Where to apply it (default: where it was extracted)."""
    positions: PositionSpec = "all"


def llama_cpp_layer(hook_point: str, n_layers: int) -> int:
    """The ``direction.N`` index for a residual hook point (see the module docstring)."""
    kind, _, index = hook_point.partition(".")
    if kind not in ("resid_post", "resid_pre") or not index.lstrip("-").isdigit():
        raise SteeringError(
            f"{hook_point}: llama.cpp control vectors act on block outputs only (resid_post.N or resid_pre.N)"
        )
    layer = int(index)
    if not -n_layers <= layer < n_layers:
        raise SteeringError(f"{hook_point}: layer out of range for a model with {n_layers} layers")
    layer %= n_layers
    block = layer if kind == "resid_post" else layer - 1  # resid_pre.N is block N-1's output
    if block < 1:
        raise SteeringError(
            f"{hook_point}: llama.cpp cannot steer the embedding or block 0's output (its directions start at "
            "direction.1 = resid_post.1)"
        )
    return block


def control_vector_directions(items: Sequence[ControlVectorItem], n_layers: int) -> tuple[dict[int, np.ndarray], list[str]]:
    """``{N: direction [D]}`` for N = 1 … n_layers-1 (zeros where nothing is applied), and notes."""
    if not items:
        raise SteeringError("no steering vectors to export")
    width = items[0].vector.d_model
    directions = {n: np.zeros(width, dtype=np.float32) for n in range(1, n_layers)}
    notes = []
    for item in items:
        v = item.vector
        if v.d_model != width:
            raise SteeringError(f"vector {v.name!r} has width {v.d_model}, the others {width}")
        point = item.hook_point or v.hook_point
        layer = llama_cpp_layer(point, n_layers)
        directions[layer] += v.added_vector(item.coefficient, item.relative)
        if item.positions != "all":
            notes.append(f"{v.name}: positions {item.positions!r} not carried over; llama.cpp steers every position")
    return directions, notes


def write_control_vector(
    path: str | Path, items: Sequence[ControlVectorItem], *, model_hint: str, n_layers: int,
) -> list[str]:
    """Write a llama.cpp control-vector GGUF atomically; returns notes for the user."""
    import gguf

    directions, notes = control_vector_directions(items, n_layers)
    with atomic_path(path) as tmp:
        writer = gguf.GGUFWriter(str(tmp), "controlvector")
        writer.add_string("controlvector.model_hint", model_hint)
        writer.add_int32("controlvector.layer_count", len(directions))
        for layer, direction in directions.items():
            writer.add_tensor(f"direction.{layer}", np.ascontiguousarray(direction, dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return notes


def export_preset_control_vector(path: str | Path, preset: Preset) -> list[str]:
    """A preset's steering entries as one control vector (its SAE clamps cannot be expressed: noted)."""
    missing = sorted({e.vector for e in preset.steering} - set(preset.vectors))
    if missing:
        raise SteeringError(f"preset {preset.name!r}: steering entries name vectors it does not have: {missing}")
    items = [
        ControlVectorItem(preset.vectors[e.vector], e.coefficient, e.relative, e.hook_point, e.positions)
        for e in preset.steering
    ]
    notes = write_control_vector(
        path, items, model_hint=gguf_architecture(preset.fingerprint.architecture), n_layers=preset.fingerprint.n_layers
    )
    if preset.clamps:
        notes.append(f"{len(preset.clamps)} SAE clamp(s) left out: llama.cpp control vectors only add directions")
    return notes


# -- import ------------------------------------------------------------------------------------------
MAX_CONTROL_VECTOR_BYTES = 1 * 2**30
"""Largest control-vector file read (a 128-layer, 16384-wide one is 8 MiB)."""


def _field(reader, key: str, path: Path):
    from .errors import GGUFError

    field = reader.get_field(key)
    if field is None:
        return None
    try:
        return field.contents()
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise GGUFError(f"{path}: {key} is unreadable ({exc})") from None


def open_control_vector(path: str | Path):
    """gguf-py's reader on a llama.cpp control vector, after the size and header checks, and its
    ``controlvector.model_hint``: every problem of the file alone, found before a model is loaded."""
    from .errors import GGUFError
    from .gguf_header import check_gguf_header
    from .presets import PresetError

    import gguf

    path = Path(path)
    if not path.is_file():
        raise PresetError(f"{path}: control vector file not found")
    if path.stat().st_size > MAX_CONTROL_VECTOR_BYTES:
        raise PresetError(f"{path}: {path.stat().st_size} bytes, more than a control vector can be; not read")
    check_gguf_header(path)
    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, OSError, KeyError, IndexError) as exc:
        raise GGUFError(f"{path}: not a readable GGUF file ({type(exc).__name__}: {exc})") from None
    arch = _field(reader, "general.architecture", path)
    if arch != "controlvector":
        raise PresetError(f"{path}: general.architecture is {arch!r}, not 'controlvector': not a llama.cpp control "
                          "vector (a model GGUF is loaded with --model, a preset is .json or .symbiont-preset)")
    hint = _field(reader, "controlvector.model_hint", path)
    if not isinstance(hint, str):
        raise PresetError(f"{path}: controlvector.model_hint is missing or not a string ({hint!r})")
    return reader, hint


def read_control_vector(path: str | Path, *, fingerprint, model_name: str) -> Preset:
    """A llama.cpp control-vector GGUF as a preset for the model with ``fingerprint``.

    Each non-zero ``direction.N`` becomes a steering vector at ``resid_post.N`` (see the module
    docstring) with an absolute coefficient equal to its length, at every position — exactly what
    llama.cpp adds at strength 1. The file carries no weights identity, so the preset targets the
    model it is imported onto; ``controlvector.model_hint`` must name that model's architecture, and
    every direction must have its width. The header is bounds-checked first (:mod:`.gguf_header`)."""
    from .presets import PresetError, SteeringEntry

    import gguf

    path = Path(path)
    reader, hint = open_control_vector(path)
    expected = gguf_architecture(fingerprint.architecture)
    if hint != expected:
        raise PresetError(f"{path}: controlvector.model_hint is {hint!r}, but {model_name} is a {expected!r} model")
    directions: dict[int, np.ndarray] = {}
    for tensor in reader.tensors:
        name = str(tensor.name)
        prefix, _, index = name.partition(".")
        if prefix != "direction" or not index.isdigit():
            raise PresetError(f"{path}: tensor {name!r} is not a direction.N")
        layer = int(index)
        if not 1 <= layer < fingerprint.n_layers:
            raise PresetError(f"{path}: {name} is outside {model_name}'s blocks 1..{fingerprint.n_layers - 1} "
                              "(llama.cpp has no direction for block 0)")
        if tensor.tensor_type != gguf.GGMLQuantizationType.F32:
            raise PresetError(f"{path}: {name} is {tensor.tensor_type.name}, control vectors are F32")
        data = np.asarray(tensor.data, dtype=np.float32).reshape(-1)
        if data.size != fingerprint.d_model:
            raise PresetError(f"{path}: {name} has {data.size} values, {model_name} has d_model {fingerprint.d_model}")
        if not np.all(np.isfinite(data)):
            raise PresetError(f"{path}: {name} holds NaN or infinite values")
        if layer in directions:
            raise PresetError(f"{path}: {name} appears twice")
        directions[layer] = data
    steering = [(layer, d) for layer, d in sorted(directions.items()) if np.any(d)]
    if not steering:
        raise PresetError(f"{path}: every direction is zero; nothing to steer with")
    vectors = {f"direction.{layer}": SteeringVector(f"direction.{layer}", f"resid_post.{layer}", d, method="control_vector",
                                                    source={"control_vector": path.name})
               for layer, d in steering}
    entries = [SteeringEntry(f"direction.{layer}", f"resid_post.{layer}", float(np.linalg.norm(d.astype(np.float64))),
                             relative=False, positions="all") for layer, d in steering]
    return Preset(name=path.stem if NAME_PATTERN.match(path.stem) else "control_vector", target_model_name=model_name,
                  fingerprint=fingerprint, description=f"imported from the llama.cpp control vector {path.name}",
                  interventions=entries, vectors=vectors, origin=str(path),
                  notes=[f"{path}: a control vector records no model weights; the preset targets {model_name}"])
