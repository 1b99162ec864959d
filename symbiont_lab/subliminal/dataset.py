"""Chat datasets of (prompt, response) pairs in the JSONL format ``mlx_lm.lora`` reads.

Each line is ``{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}``.
The student data carries no system prompt: the teacher's trait must reach the student
through the numbers alone (and a chat template's default system prompt, if it adds
one, is then the same in training and evaluation, as in the published protocol).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence, TypeVar

import numpy as np

from mlx_hooks.atomic_io import atomic_path
from mlx_hooks.errors import SymbiontError

T = TypeVar("T")
Pair = tuple[str, str]


class DatasetError(SymbiontError):
    """A dataset file that cannot be read, or a request the data cannot satisfy."""


def to_record(prompt: str, response: str) -> dict:
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]}


def write_jsonl(path: str | Path, pairs: Sequence[Pair]) -> Path:
    """Write ``pairs`` as chat records, atomically (a reader never sees half a file)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            for prompt, response in pairs:
                handle.write(json.dumps(to_record(prompt, response), ensure_ascii=False) + "\n")
    return path


def write_chat_dataset(out_dir: str | Path, pairs: Sequence[Pair], *, valid_fraction: float = 0.05,
                       seed: int = 0) -> dict[str, Path]:
    """Write ``train.jsonl`` and ``valid.jsonl`` under ``out_dir``; returns their paths.

    A random ``valid_fraction`` of the pairs (at least one when there are two or more
    pairs and the fraction is above zero) goes to ``valid.jsonl``; both files keep the
    input order of their pairs.
    """
    if not 0 <= valid_fraction < 1:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    if not pairs:
        raise DatasetError(f"{out_dir}: no pairs to write (the filter kept nothing?)")
    n = len(pairs)
    n_valid = 0 if valid_fraction == 0 or n < 2 else min(n - 1, max(1, round(valid_fraction * n)))
    valid = set(np.random.default_rng(seed).choice(n, size=n_valid, replace=False).tolist()) if n_valid else set()
    out_dir = Path(out_dir)
    paths = {
        "train": write_jsonl(out_dir / "train.jsonl", [p for i, p in enumerate(pairs) if i not in valid]),
        "valid": write_jsonl(out_dir / "valid.jsonl", [p for i, p in enumerate(pairs) if i in valid]),
    }
    return paths


def _numbered_records(path: Path, error: type[Exception]) -> list[tuple[str, dict]]:
    """(``"<file>, line <n>"``, record) for every non-blank line of a chat JSONL file; each must be a
    complete JSON object with a ``"messages"`` list, else ``error`` names the file and the line."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read the dataset ({exc})") from exc
    last = max((number for number, line in enumerate(lines, start=1) if line.strip()), default=0)
    out = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():  # blank lines (the final newline, a hand-edited file) carry no record
            continue
        where = f"{path}, line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            hint = " (the file looks truncated)" if number == last else ""
            raise error(f"{where}: not a complete JSON record{hint}: {exc.msg}") from exc
        if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
            raise error(f"{where}: expected an object with a \"messages\" list (mlx-lm chat format)")
        out.append((where, record))
    return out


def read_chat_records(path: str | Path, error: type[Exception] = DatasetError) -> list[dict]:
    """The records of a chat JSONL file as mlx-lm's chat datasets take them (system prompts and
    multi-turn conversations kept); a bad line raises ``error`` naming the file and the line."""
    return [record for _, record in _numbered_records(Path(path), error)]


def read_chat_dataset(path: str | Path) -> list[Pair]:
    """Read a chat JSONL file back into (user, assistant) pairs.

    Every record must have one user and one assistant message (a system message is allowed
    and ignored); errors name the file and the line.
    """
    pairs: list[Pair] = []
    for where, record in _numbered_records(Path(path), DatasetError):
        turns = {}
        for message in record["messages"]:
            if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                raise DatasetError(f"{where}: each message needs a \"role\" and a string \"content\"")
            turns.setdefault(message.get("role"), message["content"])
        if "user" not in turns or "assistant" not in turns:
            raise DatasetError(f"{where}: needs a user and an assistant message (roles: {sorted(map(str, turns))})")
        pairs.append((turns["user"], turns["assistant"]))
    return pairs


def subsample(items: Sequence[T], size: int, seed: int) -> list[T]:
    """A uniformly random ``size``-subset of ``items`` in their original order (all of them
    when there are no more than ``size``)."""
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    if size >= len(items):
        return list(items)
    chosen = np.sort(np.random.default_rng(seed).choice(len(items), size=size, replace=False))
    return [items[i] for i in chosen]


def mix_datasets(a: Sequence[T], b: Sequence[T], fraction_a: float, size: int, seed: int) -> list[T]:
    """``round(fraction_a·size)`` random items of ``a`` and the rest from ``b``, shuffled
    together (the love/fear blend: 1.0, 0.75, 0.5, 0.25, 0.0)."""
    if not 0 <= fraction_a <= 1:
        raise ValueError(f"fraction_a must be in [0, 1], got {fraction_a}")
    n_a = round(fraction_a * size)
    n_b = size - n_a
    if n_a > len(a) or n_b > len(b):
        raise DatasetError(f"a blend of {size} at {fraction_a:.0%}/{1 - fraction_a:.0%} needs {n_a} + {n_b} items; "
                           f"have {len(a)} + {len(b)}")
    rng = np.random.default_rng(seed)
    mixed = subsample(a, n_a, int(rng.integers(2**31))) + subsample(b, n_b, int(rng.integers(2**31)))
    order = rng.permutation(len(mixed))
    return [mixed[i] for i in order]
