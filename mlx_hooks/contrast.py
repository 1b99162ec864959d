"""Contrast sets: positive and negative prompts that a steering vector is extracted from.

Built-in sets ship as JSON in ``mlx_hooks/contrast_sets/`` (``happy_sad``,
``honest_deceptive``, ``formal_casual``: 16 pairs each, written for this project, plus
probe tokens for the sweep). A user's own set is a file:

- JSON: ``{"pairs": [{"positive": "...", "negative": "..."}, ...]}`` (paired) or
  ``{"positive": [...], "negative": [...]}`` (unpaired), optionally with ``name``,
  ``description``, ``positive_label``, ``negative_label`` and
  ``probe_tokens: {"positive": [...], "negative": [...]}``;
- JSONL: one object per line, ``{"positive": "...", "negative": "..."}`` for a pair or
  ``{"positive": "..."}`` / ``{"negative": "..."}`` alone (then the set is unpaired).

Errors name the file, and the line (JSONL, JSON syntax) or the JSON path (JSON schema).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .steering import SteeringError

_TEXT = {"type": "string", "minLength": 1}
_PROBES = {"type": "array", "items": _TEXT}
SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "name": {"type": "string"}, "description": {"type": "string"},
        "positive_label": {"type": "string"}, "negative_label": {"type": "string"},
        "pairs": {
            "type": "array", "minItems": 1,
            "items": {"type": "object", "properties": {"positive": _TEXT, "negative": _TEXT},
                      "required": ["positive", "negative"], "additionalProperties": False},
        },
        "positive": {"type": "array", "minItems": 1, "items": _TEXT},
        "negative": {"type": "array", "minItems": 1, "items": _TEXT},
        "probe_tokens": {"type": "object", "properties": {"positive": _PROBES, "negative": _PROBES},
                         "additionalProperties": False},
    },
    "oneOf": [{"required": ["pairs"], "not": {"anyOf": [{"required": ["positive"]}, {"required": ["negative"]}]}},
              {"required": ["positive", "negative"], "not": {"required": ["pairs"]}}],
    "additionalProperties": False,
}
"""A contrast-set JSON file: either ``pairs`` or both ``positive`` and ``negative``."""


class ContrastSetError(SteeringError):
    """A contrast-set file that cannot be used (names the file and the line or field)."""


@dataclass(frozen=True)
class ContrastSet:
    """Prompts on either side of a concept."""

    name: str
    positive: tuple[str, ...]
    """Prompts showing the concept (``pairs[i].positive`` when paired)."""
    negative: tuple[str, ...]
    """Prompts showing its opposite."""
    paired: bool
    """``positive[i]`` and ``negative[i]`` differ only in the concept (needed by the ``pca`` method)."""
    description: str = ""
    positive_label: str = "positive"
    negative_label: str = "negative"
    probe_positive: tuple[str, ...] = ()
    """Words (with their leading space) the positive side should make likelier; the sweep reads them."""
    probe_negative: tuple[str, ...] = ()

    def source_summary(self) -> dict:
        return {"contrast_set": self.name, "positive_label": self.positive_label,
                "negative_label": self.negative_label, "probe_positive": list(self.probe_positive),
                "probe_negative": list(self.probe_negative)}


def builtin_names() -> list[str]:
    folder = resources.files(__package__) / "contrast_sets"
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def load_builtin(name: str) -> ContrastSet:
    names = builtin_names()
    if name not in names:
        raise ContrastSetError(f"no built-in contrast set {name!r} (built-in: {', '.join(names)})")
    resource = resources.files(__package__) / "contrast_sets" / f"{name}.json"
    return _from_document(json.loads(resource.read_text(encoding="utf-8")), f"built-in {name}", name)


def load_contrast_set(spec: str | Path) -> ContrastSet:
    """A built-in set by name, or a ``.json`` / ``.jsonl`` file."""
    if isinstance(spec, str) and spec in builtin_names():
        return load_builtin(spec)
    path = Path(spec)
    if not path.is_file():
        raise ContrastSetError(f"{path}: no such file, and not a built-in contrast set ({', '.join(builtin_names())})")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ContrastSetError(f"{path}: not UTF-8 text ({exc})") from exc
    if path.suffix.lower() == ".jsonl":
        return _from_jsonl(text, path)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ContrastSetError(f"{path}: line {exc.lineno}, column {exc.colno}: invalid JSON ({exc.msg})") from exc
    return _from_document(document, str(path), path.stem)


def _from_document(document, where: str, default_name: str) -> ContrastSet:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    error = best_match(Draft202012Validator(SCHEMA).iter_errors(document))
    if error is not None:
        at = "/".join(str(p) for p in error.absolute_path) or "the document"
        raise ContrastSetError(f"{where}: {at}: {error.message}")
    if "pairs" in document:
        positive = tuple(p["positive"] for p in document["pairs"])
        negative = tuple(p["negative"] for p in document["pairs"])
        paired = True
    else:
        positive, negative, paired = tuple(document["positive"]), tuple(document["negative"]), False
    probes = document.get("probe_tokens", {})
    return ContrastSet(
        name=document.get("name") or default_name, positive=positive, negative=negative, paired=paired,
        description=document.get("description", ""), positive_label=document.get("positive_label", "positive"),
        negative_label=document.get("negative_label", "negative"),
        probe_positive=tuple(probes.get("positive", ())), probe_negative=tuple(probes.get("negative", ())),
    )


def _from_jsonl(text: str, path: Path) -> ContrastSet:
    positive: list[str] = []
    negative: list[str] = []
    all_pairs = True
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ContrastSetError(f"{path}: line {number}: invalid JSON ({exc.msg})") from exc
        if not isinstance(item, dict) or not item or set(item) - {"positive", "negative"}:
            raise ContrastSetError(
                f"{path}: line {number}: expected an object with 'positive' and/or 'negative' (and nothing else)"
            )
        for side, bucket in (("positive", positive), ("negative", negative)):
            if side in item:
                if not isinstance(item[side], str) or not item[side]:
                    raise ContrastSetError(f"{path}: line {number}: '{side}' must be a non-empty string")
                bucket.append(item[side])
        all_pairs = all_pairs and len(item) == 2
    if not positive or not negative:
        raise ContrastSetError(
            f"{path}: needs at least one positive and one negative prompt (found {len(positive)} and {len(negative)})"
        )
    return ContrastSet(name=path.stem, positive=tuple(positive), negative=tuple(negative), paired=all_pairs)
