"""Presets: a versioned, byte-stable file format for steering setups.

A preset is a JSON document (schema: ``mlx_hooks/preset_schema.json``, JSON Schema
draft 2020-12) plus its steering vectors in safetensors (:mod:`mlx_hooks.vector_file`):

- ``name.json`` with a sidecar ``name.safetensors`` next to it (same stem), or
- ``name.symbiont-preset``: a zip holding ``preset.json`` and ``vectors.safetensors``
  (stored, not compressed; fixed timestamps and attributes).

The document has ``schema_version``, ``name``, ``description``, ``created_with``,
``target_model`` (name and :class:`~mlx_hooks.fingerprint.ModelFingerprint`),
``sampling`` (:class:`~mlx_hooks.sampling.SamplingSettings`) and ``interventions``:
steering vectors by key with hook point, coefficient, ``relative`` and positions; SAE
clamps by SAE id, hook point, latent, label, value and ``value_mode``.

Byte-stable: keys sorted, two-space indent, floats in Python's shortest round-trip form,
coefficients and values always written as floats, zip entries in a fixed order with
fixed metadata. Exporting the same preset twice gives the same bytes, and so does
import then export. Writes are atomic. Reading validates everything it can without a
model (syntax, schema, version, sidecar presence, tensor keys and widths); checks
against a loaded model and SAEs are :mod:`mlx_hooks.preset_apply`'s.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Union

from . import __version__
from .atomic_io import atomic_write_bytes
from .errors import SymbiontError
from .fingerprint import ModelFingerprint
from .interventions import PositionSpec
from .sampling import SamplingSettings
from .steering import SteeringVector
from .vector_file import VectorFileError, canonical_json, vectors_from_bytes, vectors_to_bytes

SCHEMA_VERSION = 2
ARCHIVE_SUFFIX = ".symbiont-preset"
ARCHIVE_JSON, ARCHIVE_VECTORS = "preset.json", "vectors.safetensors"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry: a fixed stamp for stable bytes


class PresetError(SymbiontError):
    """A preset that cannot be read, written or applied (names the file and the problem)."""


@dataclass
class SteeringEntry:
    """Add stored vector ``vector`` at ``hook_point``."""

    vector: str
    """Key of the vector in the preset's vectors."""
    hook_point: str
    coefficient: float
    relative: bool = True
    """Coefficient in units of the vector's typical residual norm (else absolute: ``c · v̂``)."""
    positions: PositionSpec = "all"


@dataclass
class SaeClampEntry:
    """Clamp latent ``latent`` of SAE ``sae_id`` (at ``hook_point``) to ``value``."""

    sae_id: str
    hook_point: str
    latent: int
    label: str
    value: float
    value_mode: str = "absolute"
    """``absolute``, or ``max_multiple``: ``value`` × the latent's recorded maximum activation."""
    positions: PositionSpec = "all"


Entry = Union[SteeringEntry, SaeClampEntry]


@dataclass
class Preset:
    """A preset in memory: the document's fields and the vectors its steering entries name."""

    name: str
    target_model_name: str
    fingerprint: ModelFingerprint
    description: str = ""
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    interventions: list[Entry] = field(default_factory=list)
    vectors: dict[str, SteeringVector] = field(default_factory=dict)
    created_with: dict = field(default_factory=lambda: {"name": "symbiont", "version": __version__})
    origin: str = ""
    """Where it was read from (for messages); empty for a preset built in memory."""
    notes: list[str] = field(default_factory=list)
    """Things noticed while reading (e.g. a migration), for the user."""

    @property
    def steering(self) -> list[SteeringEntry]:
        return [e for e in self.interventions if isinstance(e, SteeringEntry)]

    @property
    def clamps(self) -> list[SaeClampEntry]:
        return [e for e in self.interventions if isinstance(e, SaeClampEntry)]


# -- document <-> objects ------------------------------------------------------------------------


def _positions_json(positions: PositionSpec):
    return positions if isinstance(positions, str) else [int(p) for p in positions]


def to_document(preset: Preset) -> dict:
    items = []
    for e in preset.interventions:
        if isinstance(e, SteeringEntry):
            items.append({"type": "steering", "vector": e.vector, "hook_point": e.hook_point,
                          "coefficient": float(e.coefficient), "relative": bool(e.relative),
                          "positions": _positions_json(e.positions)})
        else:
            items.append({"type": "sae_clamp", "sae_id": e.sae_id, "hook_point": e.hook_point, "latent": int(e.latent),
                          "label": e.label, "value": float(e.value), "value_mode": e.value_mode,
                          "positions": _positions_json(e.positions)})
    sampling = asdict(preset.sampling)
    for key in ("temp", "top_p", "min_p"):
        sampling[key] = float(sampling[key])
    return {
        "schema_version": SCHEMA_VERSION, "name": preset.name, "description": preset.description,
        "created_with": dict(preset.created_with),
        "target_model": {"name": preset.target_model_name, "fingerprint": preset.fingerprint.to_dict()},
        "sampling": sampling, "interventions": items,
    }


def from_document(doc: dict, vectors: dict[str, SteeringVector], origin: str, notes: list[str]) -> Preset:
    entries: list[Entry] = []
    for item in doc["interventions"]:
        positions = item["positions"] if isinstance(item["positions"], str) else tuple(item["positions"])
        if item["type"] == "steering":
            entries.append(SteeringEntry(item["vector"], item["hook_point"], float(item["coefficient"]),
                                         item["relative"], positions))
        else:
            entries.append(SaeClampEntry(item["sae_id"], item["hook_point"], item["latent"], item["label"],
                                         float(item["value"]), item["value_mode"], positions))
    try:
        sampling = SamplingSettings(**doc["sampling"])
    except ValueError as exc:
        raise PresetError(f"{origin}: sampling: {exc}") from exc
    return Preset(
        name=doc["name"], target_model_name=doc["target_model"]["name"],
        fingerprint=ModelFingerprint.from_dict(doc["target_model"]["fingerprint"]), description=doc["description"],
        sampling=sampling, interventions=entries, vectors=vectors, created_with=dict(doc["created_with"]),
        origin=origin, notes=notes,
    )


# -- validation and migration --------------------------------------------------------------------


@lru_cache(maxsize=1)
def schema() -> dict:
    return json.loads((resources.files(__package__) / "preset_schema.json").read_text(encoding="utf-8"))


def _validate(doc, subschema: str | None, where: str) -> None:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    full = schema()
    target = full if subschema is None else {"$defs": full["$defs"], "$ref": f"#/$defs/{subschema}"}
    error = best_match(Draft202012Validator(target).iter_errors(doc))
    if error is not None:
        at = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
        raise PresetError(f"{where}: does not match the preset schema at {at or 'the top level'}: {error.message}")


def migrate_v1(doc: dict) -> dict:
    """v1 → v2: v1 coefficients were absolute at every position, clamp values absolute."""
    out = dict(doc, schema_version=2, interventions=[])
    for item in doc["interventions"]:
        if item["type"] == "steering":
            out["interventions"].append({**item, "relative": False, "positions": "all"})
        else:
            out["interventions"].append({**item, "value_mode": "absolute", "positions": "all"})
    return out


MIGRATIONS = {1: migrate_v1}
"""schema_version → function to the next version."""


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number a preset may hold")


def parse_document(text: bytes | str, where: str) -> tuple[dict, list[str]]:
    """Parse, check the version, validate and migrate a preset document to the current version."""
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise PresetError(f"{where}: line {exc.lineno}, column {exc.colno}: invalid JSON ({exc.msg})") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise PresetError(f"{where}: invalid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise PresetError(f"{where}: a preset is a JSON object, got {type(doc).__name__}")
    version = doc.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise PresetError(f"{where}: schema_version is missing or not a positive integer ({version!r})")
    if version > SCHEMA_VERSION:
        raise PresetError(
            f"{where}: schema_version {version} was written by a newer Symbiont; this one ({__version__}) reads "
            f"versions 1 to {SCHEMA_VERSION}: update Symbiont to open it"
        )
    notes = []
    while version < SCHEMA_VERSION:
        _validate(doc, f"preset_v{version}", where)
        doc = MIGRATIONS[version](doc)
        notes.append(f"{where}: migrated from schema_version {version} to {version + 1}")
        version += 1
    _validate(doc, None, where)
    return doc, notes


# -- files -----------------------------------------------------------------------------------------


def sidecar_path(json_path: str | Path) -> Path:
    return Path(json_path).with_suffix(".safetensors")


def _read_vectors(data: bytes | None, where: str, doc: dict, origin: str, notes: list[str]) -> dict[str, SteeringVector]:
    needed = sorted({i["vector"] for i in doc["interventions"] if i["type"] == "steering"})
    if data is None:
        if needed:
            raise PresetError(f"{origin}: its vectors file {where} is missing (needed for {', '.join(needed)})")
        return {}
    try:
        vectors, meta = vectors_from_bytes(data, where)
    except VectorFileError as exc:
        raise PresetError(str(exc)) from exc
    missing = [n for n in needed if n not in vectors]
    if missing:
        raise PresetError(f"{where}: has no tensor for vector(s) {', '.join(missing)} (it holds: {sorted(vectors)})")
    width = doc["target_model"]["fingerprint"]["d_model"]
    for v in vectors.values():
        if v.d_model != width:
            raise PresetError(
                f"{where}: vector {v.name!r} has shape [{v.d_model}], but the preset's target model has d_model {width}"
            )
    if meta.get("preset") not in (None, doc["name"]):
        notes.append(f"{where}: was written for preset {meta['preset']!r}, read as part of {doc['name']!r}")
    return vectors


def read_preset(path: str | Path) -> Preset:
    """Read and check a preset (``.json`` + sidecar, or ``.symbiont-preset``) without a model."""
    path = Path(path)
    if not path.is_file():
        raise PresetError(f"{path}: preset file not found")
    if path.suffix == ARCHIVE_SUFFIX:
        json_bytes, vectors_bytes = _read_archive(path)
        json_where, vectors_where = f"{path}!{ARCHIVE_JSON}", f"{path}!{ARCHIVE_VECTORS}"
    else:
        json_bytes = _read_bounded(path, MAX_DOCUMENT_BYTES, "preset document")
        side = sidecar_path(path)
        vectors_bytes = _read_bounded(side, MAX_VECTORS_BYTES, "vectors file") if side.is_file() else None
        json_where, vectors_where = str(path), str(side)
    doc, notes = parse_document(json_bytes, json_where)
    vectors = _read_vectors(vectors_bytes, vectors_where, doc, json_where, notes)
    return from_document(doc, vectors, json_where, notes)


MAX_DOCUMENT_BYTES = 16 * 2**20
"""Largest preset document read (a preset with thousands of entries is well under 1 MiB)."""
MAX_VECTORS_BYTES = 1 * 2**30
"""Largest vectors file read (a thousand 8192-wide float32 vectors are 32 MiB)."""
MAX_ARCHIVE_ENTRIES = 16
"""Central-directory entries looked at before a preset archive is refused (it holds two)."""


def _read_bounded(path: Path, limit: int, what: str) -> bytes:
    size = path.stat().st_size
    if size > limit:
        raise PresetError(f"{path}: {size} bytes, more than a {what} can be ({limit} bytes); not read")
    return path.read_bytes()


def _read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, where: str) -> bytes:
    # The sizes in a zip's directory are claims: check the claim before inflating, then read at most
    # one byte past it (a 1.2 MB archive inflating to 1.2 GB used to be read whole).
    if info.file_size > limit:
        raise PresetError(f"{where}!{info.filename}: inflates to {info.file_size} bytes, more than a preset "
                          f"entry can be ({limit} bytes); not read")
    with archive.open(info) as handle:
        data = handle.read(info.file_size + 1)
    if len(data) != info.file_size:
        raise PresetError(f"{where}!{info.filename}: holds {len(data)} bytes, its directory says {info.file_size}")
    return data


def _read_archive(path: Path) -> tuple[bytes, bytes | None]:
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            names = [i.filename for i in infos[:MAX_ARCHIVE_ENTRIES]]
            unexpected = sorted(set(names) - {ARCHIVE_JSON, ARCHIVE_VECTORS})
            if unexpected or ARCHIVE_JSON not in names or len(infos) != len(set(names)):
                shown = names if len(infos) <= MAX_ARCHIVE_ENTRIES else names + [f"... {len(infos)} entries"]
                raise PresetError(
                    f"{path}: a preset archive holds {ARCHIVE_JSON} and optionally {ARCHIVE_VECTORS}, once each; "
                    f"found {shown}"
                )
            by_name = {i.filename: i for i in infos}
            vectors = (_read_entry(archive, by_name[ARCHIVE_VECTORS], MAX_VECTORS_BYTES, str(path))
                       if ARCHIVE_VECTORS in by_name else None)
            return _read_entry(archive, by_name[ARCHIVE_JSON], MAX_DOCUMENT_BYTES, str(path)), vectors
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError, ValueError,
            RuntimeError) as exc:  # zipfile's own errors for damaged entries, unknown methods, encryption
        raise PresetError(f"{path}: not a readable preset archive ({type(exc).__name__}: {exc})") from exc


def preset_bytes(preset: Preset) -> tuple[bytes, bytes | None]:
    """The document's and the vectors' bytes, exactly as written (vectors None when there are none)."""
    missing = sorted({e.vector for e in preset.steering} - set(preset.vectors))
    if missing:
        raise PresetError(f"preset {preset.name!r}: steering entries name vectors it does not have: {missing}")
    doc = to_document(preset)
    _validate(doc, None, f"preset {preset.name!r}")
    text = canonical_json(doc, indent=2) + "\n"
    vectors = [preset.vectors[k] for k in sorted(preset.vectors)]
    return text.encode("utf-8"), vectors_to_bytes(vectors, preset=preset.name) if vectors else None


def _zip_entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_STORED
    info.create_system = 3  # unix; the default depends on the platform writing it
    info.external_attr = 0o100644 << 16
    return info


def write_preset(path: str | Path, preset: Preset) -> list[Path]:
    """Write ``preset`` as an archive (``.symbiont-preset``) or ``.json`` + sidecar; returns the files written."""
    path = Path(path)
    if path.suffix not in (ARCHIVE_SUFFIX, ".json"):
        raise PresetError(f"{path}: a preset is written as .json (+ .safetensors sidecar) or {ARCHIVE_SUFFIX}")
    json_bytes, vectors_bytes = preset_bytes(preset)
    if path.suffix == ARCHIVE_SUFFIX:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr(_zip_entry(ARCHIVE_JSON), json_bytes)
            if vectors_bytes is not None:
                archive.writestr(_zip_entry(ARCHIVE_VECTORS), vectors_bytes)
        atomic_write_bytes(path, buffer.getvalue())
        return [path]
    written = []
    if vectors_bytes is not None:  # the sidecar first: the document is what makes the pair visible
        atomic_write_bytes(sidecar_path(path), vectors_bytes)
        written.append(sidecar_path(path))
    atomic_write_bytes(path, json_bytes)
    return [*written, path]
