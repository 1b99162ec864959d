"""Progress of a lab run, as JSON lines in ``<run folder>/progress.jsonl``.

A lab writes one line per step it wants to show::

    {"time": 1763781234.5, "stage": "aux m=3 seed 2", "done": 40, "total": 120,
     "message": "student (same init)", "metrics": {"loss": 0.41, "accuracy": 0.93}}

``done``/``total`` are the run's overall progress (any unit: steps, seeds); ``stage`` names
what runs now; ``metrics`` holds numbers a viewer may plot (loss, accuracy). The file is
append-only and only ever read incrementally (:func:`read_progress` with the offset it
returned last time), so a viewer in another process — the app's lab panel — can tail it
while the run writes. A run killed mid-write leaves a partial last line: the reader leaves
it unread, and the next :meth:`ProgressLog.emit` (a resumed run) first ends it with a
newline, so it becomes one unparseable line that the reader skips.

This file is a log, not a result: it is deliberately not written atomically (it is
appended to), and nothing reads results from it.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

PROGRESS_FILE = "progress.jsonl"


def _number(value):
    """A JSON-safe metric: plain float/int/str/bool (NumPy and MLX scalars go through float)."""
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return number if math.isfinite(number) else None  # JSON has no NaN/inf


class ProgressLog:
    """Append progress records to ``run_dir/progress.jsonl`` (one flushed line per :meth:`emit`)."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / PROGRESS_FILE

    def _end_partial_line(self) -> None:
        """A killed writer may have left a line without its newline: end it before appending
        (checked on every emit — one 1-byte read — since another process may share the file)."""
        try:
            with open(self.path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                if handle.tell() == 0:
                    return
                handle.seek(-1, os.SEEK_END)
                last = handle.read(1)
        except FileNotFoundError:
            return
        if last != b"\n":
            with open(self.path, "ab") as handle:
                handle.write(b"\n")

    def emit(self, stage: str, done: float, total: float, message: str = "", **metrics) -> dict:
        """Append one record and flush it; returns the record."""
        record = {
            "time": round(time.time(), 3), "stage": str(stage), "done": _number(done), "total": _number(total),
            "message": str(message), "metrics": {str(k): _number(v) for k, v in metrics.items()},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._end_partial_line()
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8")
        # one write() on an O_APPEND descriptor: a reader never sees two records interleaved
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        return record


def read_progress(run_dir: str | os.PathLike, offset: int = 0) -> tuple[list[dict], int]:
    """Records appended to ``run_dir/progress.jsonl`` after byte ``offset``, and the offset to pass next.

    Only complete lines are read (a partial last line stays for the next call); complete lines
    that are not a JSON object (the remains of a killed write) are skipped. A missing file gives
    ``([], offset)``; a file shorter than ``offset`` (replaced by a new run) is read from the start.
    """
    path = Path(run_dir) / PROGRESS_FILE
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() < offset:
                offset = 0
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    records = []
    for line in data[:end].split(b"\n"):
        try:
            record = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(record, dict) and "stage" in record:
            records.append(record)
    return records, offset + end + 1


__all__ = ["PROGRESS_FILE", "ProgressLog", "read_progress"]
