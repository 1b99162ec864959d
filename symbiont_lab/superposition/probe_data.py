"""Labelled text sets for sparse probing: the built-in contrast sets, or the user's JSON, JSONL or CSV.

Built-in sets ship as JSON in ``symbiont_lab/superposition/probe_sets/`` (``french_english``,
``numbers_words``, ``plural_singular``, ``past_present``, ``sentiment``, ``code_prose``: 32 pairs
each, written for this project). Each pair differs only in the property, and a pair always lands
in one cross-validation fold together (its ``group``), so a probe is never tested on the twin of
a sentence it was trained on.

A user's set is a file:

- ``.json``: the built-in format — ``{"pairs": [{"positive": ..., "negative": ...}]}`` or
  ``{"positive": [...], "negative": [...]}``, optionally ``name``, ``description``,
  ``positive_label``, ``negative_label``;
- ``.jsonl``: one ``{"text": ..., "label": ...}`` per line, optionally ``"group"``;
- ``.csv``: a header with ``text`` and ``label`` columns (and optionally ``group``).

JSONL/CSV labels must take exactly two values. The positive class is ``positive`` when given,
else ``1``/``true`` when the labels are 0/1 or booleans, else the label of the first row.
Errors name the file and the line.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from .experiments import SuperpositionError

SETS_FOLDER = "probe_sets"


class ProbeSetError(SuperpositionError):
    """A labelled set that cannot be used (names the file and the line or field)."""


@dataclass(frozen=True)
class LabelledSet:
    """Texts with a binary label each."""

    name: str
    texts: tuple[str, ...]
    labels: tuple[int, ...]
    """1 = the positive class (the property present), 0 = negative."""
    groups: tuple[int, ...]
    """Texts of a group are kept in one fold (a pair's two sentences; every text alone by default)."""
    positive_label: str = "positive"
    negative_label: str = "negative"
    description: str = ""
    source: str = ""

    @property
    def y(self) -> np.ndarray:
        return np.asarray(self.labels, dtype=np.int64)

    def counts(self) -> tuple[int, int]:
        """(positives, negatives)."""
        y = self.y
        return int(y.sum()), int((1 - y).sum())


def builtin_names() -> list[str]:
    folder = resources.files(__package__) / SETS_FOLDER
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def load_probe_set(spec: str | Path, positive: str | None = None) -> LabelledSet:
    """A built-in set by name, or a ``.json`` / ``.jsonl`` / ``.csv`` file."""
    if isinstance(spec, str) and spec in builtin_names():
        resource = resources.files(__package__) / SETS_FOLDER / f"{spec}.json"
        return _from_document(json.loads(resource.read_text(encoding="utf-8")), f"built-in {spec}", spec)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ProbeSetError(f"{path}: no such file, and not a built-in probe set ({', '.join(builtin_names())})")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ProbeSetError(f"{path}: not UTF-8 text ({exc})") from None
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProbeSetError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})") from None
        return _from_document(document, str(path), path.stem)
    if suffix == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ProbeSetError(f"{path}: line {number}: invalid JSON ({exc.msg})") from None
            if not isinstance(item, dict) or "text" not in item or "label" not in item:
                raise ProbeSetError(f"{path}: line {number}: expected an object with 'text' and 'label'")
            rows.append((number, item["text"], item["label"], item.get("group")))
        return _from_rows(rows, path, positive)
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or not {"text", "label"} <= set(reader.fieldnames):
            raise ProbeSetError(f"{path}: line 1: the header needs 'text' and 'label' columns (found "
                                f"{', '.join(reader.fieldnames or []) or 'none'})")
        rows = [(reader.line_num, r["text"], r["label"], r.get("group") or None) for r in reader]
        return _from_rows(rows, path, positive)
    raise ProbeSetError(f"{path}: unknown file type {suffix!r} (use .json, .jsonl or .csv)")


def _texts(value, where: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(t, str) and t.strip() for t in value):
        raise ProbeSetError(f"{where}: expected a non-empty list of non-empty strings")
    return value


def _from_document(document, where: str, default_name: str) -> LabelledSet:
    if not isinstance(document, dict):
        raise ProbeSetError(f"{where}: expected a JSON object")
    if "pairs" in document:
        pairs = document["pairs"]
        if not isinstance(pairs, list) or not pairs:
            raise ProbeSetError(f"{where}: pairs: expected a non-empty list")
        for i, pair in enumerate(pairs):
            if not isinstance(pair, dict) or set(pair) != {"positive", "negative"} or not all(
                    isinstance(pair[k], str) and pair[k].strip() for k in pair):
                raise ProbeSetError(f"{where}: pairs/{i}: expected {{\"positive\": text, \"negative\": text}}")
        texts = [t for p in pairs for t in (p["positive"], p["negative"])]
        labels = [1, 0] * len(pairs)
        groups = [i // 2 for i in range(len(texts))]
    elif "positive" in document and "negative" in document:
        pos = _texts(document["positive"], f"{where}: positive")
        neg = _texts(document["negative"], f"{where}: negative")
        texts, labels = pos + neg, [1] * len(pos) + [0] * len(neg)
        groups = list(range(len(texts)))
    else:
        raise ProbeSetError(f"{where}: needs 'pairs', or both 'positive' and 'negative'")
    return LabelledSet(document.get("name") or default_name, tuple(texts), tuple(labels), tuple(groups),
                       document.get("positive_label", "positive"), document.get("negative_label", "negative"),
                       document.get("description", ""), where)


def _from_rows(rows: list[tuple], path: Path, positive: str | None) -> LabelledSet:
    if not rows:
        raise ProbeSetError(f"{path}: no rows")
    for number, text, label, _ in rows:
        if not isinstance(text, str) or not text.strip():
            raise ProbeSetError(f"{path}: line {number}: 'text' must be a non-empty string")
        if not isinstance(label, (str, int, bool)) or isinstance(label, float):
            raise ProbeSetError(f"{path}: line {number}: 'label' must be a string, a whole number or a boolean")
    values = list(dict.fromkeys(str(r[2]).lower() if isinstance(r[2], bool) else str(r[2]) for r in rows))
    if len(values) != 2:
        raise ProbeSetError(f"{path}: labels must take exactly two values (found {len(values)}: "
                            f"{', '.join(values[:6])}{' ...' if len(values) > 6 else ''})")
    if positive is not None:
        if positive not in values:
            raise ProbeSetError(f"{path}: positive label {positive!r} is not one of the labels ({', '.join(values)})")
        pos = positive
    elif set(values) in ({"0", "1"}, {"false", "true"}):
        pos = "1" if "1" in values else "true"
    else:
        pos = values[0]
    neg = next(v for v in values if v != pos)
    key = lambda label: str(label).lower() if isinstance(label, bool) else str(label)  # noqa: E731
    group_ids: dict = {}
    groups = [group_ids.setdefault(("g", str(g)) if g is not None else ("row", i), len(group_ids))
              for i, (_, _, _, g) in enumerate(rows)]
    return LabelledSet(path.stem, tuple(r[1] for r in rows), tuple(int(key(r[2]) == pos) for r in rows), tuple(groups),
                       pos, neg, "", str(path))


__all__ = ["LabelledSet", "ProbeSetError", "builtin_names", "load_probe_set"]
