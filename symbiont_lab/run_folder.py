"""What every lab's resumable run folder shares: atomic JSON files, the config.json check, runs.json.

A lab run folder holds ``config.json`` (``{"format", <lab tag>, "settings"}``: the settings its
results depend on, checked when a run resumes so that results made with other settings are never
mixed in) and ``runs.json`` (a list with one entry per invocation: when it started, wall time,
whether it was interrupted, what it computed). The labs' own files (per-seed results, stage files)
stay in the lab packages; the labs pass their own :class:`~mlx_hooks.errors.SymbiontError` (or
``ValueError``) subclass so errors keep naming the lab.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterator

from mlx_hooks.atomic_io import atomic_write_bytes

MAX_LISTED_DIFFERENCES = 6
"""A refused config.json names at most this many differing settings (then " ...")."""


LOCK_FILE = ".lock"
"""Held (``flock``) by the run that owns the folder; the kernel releases it when that process ends, however it ends."""


@contextmanager
def owned(folder: Path, error: type[Exception] = ValueError) -> Iterator[None]:
    """Own ``folder`` (created if needed) for the duration: a second run on it, from this process or
    another, is refused with ``error`` instead of interleaving its writes with the first one's.

    An advisory ``flock`` on ``folder/.lock``, not a lock file's existence: a killed run leaves no
    stale lock behind (the kernel drops it with the process), so resuming never needs a clean-up."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            raise error(f"{folder}: another run is using this folder (process {owner}); wait for it to finish "
                        "or give another output folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def dump_json(path: Path, data) -> None:
    """Write ``data`` as indented, key-sorted JSON, atomically (a killed run never leaves half a file)."""
    atomic_write_bytes(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode("utf-8"))


def read_json(path: Path, what: str, error: type[Exception] = ValueError, advice: str = "delete it to recompute"):
    """The JSON in ``path``, or ``error`` naming the file, ``what`` it should be and ``advice``."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: unreadable {what} ({exc}); {advice}") from None


def differences(stored, now, prefix: str = "") -> list[str]:
    """``"key: folder <stored>, now <now>"`` for every setting that differs, nested keys dotted."""
    if isinstance(stored, dict) and isinstance(now, dict):
        out = []
        for key in sorted(set(stored) | set(now)):
            out += differences(stored.get(key), now.get(key), f"{prefix}{key}.")
        return out
    return [] if stored == now else [f"{prefix.rstrip('.')}: folder {stored!r}, now {now!r}"]


def prepare_config(path: Path, record: dict, *, expect: dict, kind: str, error: type[Exception],
                   same: str = "the same settings") -> bool:
    """Write ``record`` (with a ``"settings"`` dict) to ``path``, or check the stored one against it.

    A stored file must carry every ``expect`` key/value (e.g. the format version or the lab tag)
    and the same settings; otherwise ``error`` names the file and what differs (``kind``: what the
    file should have been, ``same``: what to reuse). Returns whether the file already existed.
    """
    if path.exists():
        stored = read_json(path, "run configuration", error)
        if (not isinstance(stored, dict) or "settings" not in stored
                or any(stored.get(k) != v for k, v in expect.items())):
            raise error(f"{path}: not {kind}")
        differ = differences(stored["settings"], record["settings"])
        if differ:
            listed = "; ".join(differ[:MAX_LISTED_DIFFERENCES])
            more = " ..." if len(differ) > MAX_LISTED_DIFFERENCES else ""
            raise error(f"{path}: this run folder was made with other settings ({listed}{more}); "
                        f"use another output folder or {same}")
        return True
    dump_json(path, record)
    return False


def run_entry(wall_s: float, interrupted: bool, computed, **extra) -> dict:
    """One ``runs.json`` entry for an invocation that took ``wall_s`` seconds and ends now."""
    return {"started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - wall_s)),
            "wall_s": round(wall_s, 1), "interrupted": interrupted, "computed": computed,
            "cpu_count": os.cpu_count(), **extra}


def append_run(folder: Path, entry: dict, error: type[Exception] = ValueError, *, strict: bool = True) -> None:
    """Append ``entry`` to ``folder/runs.json``. A damaged log raises ``error`` when ``strict``,
    else is started afresh (for callers logging from a ``finally`` that must not hide the real error)."""
    path = folder / "runs.json"
    try:
        runs = read_json(path, "run log", error) if path.exists() else []
    except error:
        if strict:
            raise
        runs = []
    if not isinstance(runs, list):
        if strict:
            raise error(f"{path}: not a run log (a JSON list)")
        runs = []
    dump_json(path, runs + [entry])


def read_runs(folder: Path, error: type[Exception] = ValueError) -> list:
    """The entries of ``folder/runs.json`` (empty when there is none)."""
    path = folder / "runs.json"
    return read_json(path, "run log", error) if path.exists() else []


@dataclass
class SeedResults:
    """A run folder with one atomically written result file per (group, seed) — a group is what a
    lab sweeps over (the negation lab's experiment, the aux-logits lab's m) — plus config.json and
    runs.json. Subclasses name the group's JSON key and folder, and may check a result's contents."""

    path: Path
    group_key: ClassVar[str] = "group"
    """The key of the group in a result file (``"experiment"``, ``"m"``)."""
    error: ClassVar[type[Exception]] = ValueError
    """What a damaged or foreign file raises (the message names the file)."""

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    def group_dir(self, group) -> str:
        """The folder under ``results/`` holding a group's seed files."""
        return str(group)

    def describe(self, group) -> str:
        """A group as error messages name it."""
        return str(group)

    def valid_result(self, result: dict) -> bool:
        """Whether a stored result has what this lab's reports read (any dict by default)."""
        return True

    def result_path(self, group, seed: int) -> Path:
        return self.path / "results" / self.group_dir(group) / f"seed_{seed:03d}.json"

    def load_result(self, group, seed: int) -> dict | None:
        """The stored record of (group, seed), None if it has not been computed yet."""
        path = self.result_path(group, seed)
        if not path.exists():
            return None
        data = read_json(path, "result file", self.error)
        if (not isinstance(data, dict) or data.get(self.group_key) != group or data.get("seed") != seed
                or not isinstance(data.get("result"), dict) or not self.valid_result(data["result"])):
            raise self.error(f"{path}: not the result of {self.describe(group)} seed {seed}; delete it to recompute")
        return data

    def save_result(self, group, seed: int, result: dict, unit_seeds: list[int], seconds: float) -> None:
        dump_json(self.result_path(group, seed), {
            self.group_key: group, "seed": seed, "result": result,
            "unit": {"seeds": unit_seeds, "seconds": round(seconds, 2)},
        })

    def collect(self, seeds: dict) -> dict:
        """Finished results ``{group: {seed: result}}`` among seeds ``0..seeds[group]-1`` of each group."""
        out = {}
        for group, count in seeds.items():
            found = {}
            for seed in range(count):
                data = self.load_result(group, seed)
                if data is not None:
                    found[seed] = data["result"]
            out[group] = found
        return out

    def log_run(self, entry: dict) -> None:
        append_run(self.path, entry, self.error)

    def runs(self) -> list:
        """The entries of runs.json, one per invocation."""
        return read_runs(self.path, self.error)


__all__ = ["LOCK_FILE", "SeedResults", "append_run", "differences", "dump_json", "owned", "prepare_config", "read_json",
           "read_runs", "run_entry"]
