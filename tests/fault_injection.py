"""Deterministic "kill -9 after the N-th file write" for resumability tests.

:class:`WriteFaults` counts the writes a run makes under one folder — every ``os.replace``
into it (what commits an atomic write: ``mlx_hooks.atomic_io``, the safetensors writers) and
every ``os.write`` to a file in it (the append-only logs: teacher responses, progress) — and
at the N-th one "kills" the run: a replace is done and then the run dies; an append is cut
in half (a torn write: the first half of its bytes reach the file) and then the run dies.

A real kill runs no ``finally`` blocks; here the run dies by :class:`SimulatedKill` (a
``BaseException``, so no ``except Exception`` swallows it), and every later write, rename or
unlink under the folder raises it again, so the clean-up code on the way out cannot repair
the folder either: temporary files stay where a killed process would leave them.
A kill between writing a temporary file and renaming it is the kill "after" the previous
write (the temporary file is written, nothing commits it).

Run once with ``kill_at=None`` to count the writes (``.count``); then once per N.
"""

from __future__ import annotations

import os
from pathlib import Path


class SimulatedKill(BaseException):
    """The simulated SIGKILL (a BaseException: nothing catches it on the way out)."""


class WriteFaults:
    """Context manager: count (and at ``kill_at`` cut) the file writes under ``root``."""

    def __init__(self, root: str | os.PathLike, kill_at: int | None = None):
        self.root = os.path.realpath(root)
        self.kill_at = kill_at
        self.count = 0
        self.killed = False
        self.log: list[str] = []  # what each write was, for failure messages
        self._fd_paths: dict[int, str] = {}

    def _under(self, path) -> bool:
        try:
            real = os.path.realpath(os.fspath(path))
        except TypeError:  # a file descriptor or bytes-like path we do not track
            return False
        return real == self.root or real.startswith(self.root + os.sep)

    def _dead(self, what: str) -> None:
        if self.killed:
            raise SimulatedKill(f"after the kill: {what}")

    def _event(self, what: str) -> bool:
        """Count a write; True when it is the one to kill at."""
        self.count += 1
        self.log.append(what)
        return self.kill_at is not None and self.count == self.kill_at

    def __enter__(self):
        self._saved = {name: getattr(os, name) for name in ("replace", "rename", "write", "open", "unlink", "close")}
        real = dict(self._saved)

        def replace(src, dst, *args, **kwargs):
            if not self._under(dst):
                return real["replace"](src, dst, *args, **kwargs)
            self._dead(f"replace {dst}")
            result = real["replace"](src, dst, *args, **kwargs)
            if self._event(f"replace -> {Path(dst).relative_to(self.root) if self._under(dst) else dst}"):
                self.killed = True
                raise SimulatedKill(f"killed after write {self.count}: {self.log[-1]}")
            return result

        def rename(src, dst, *args, **kwargs):
            if self._under(dst):
                self._dead(f"rename {dst}")
            return real["rename"](src, dst, *args, **kwargs)

        def open_(path, flags, *args, **kwargs):
            fd = real["open"](path, flags, *args, **kwargs)
            if self._under(path) and flags & (os.O_WRONLY | os.O_RDWR):
                self._fd_paths[fd] = os.path.realpath(os.fspath(path))
            return fd

        def close(fd):
            self._fd_paths.pop(fd, None)
            return real["close"](fd)

        def write(fd, data):
            path = self._fd_paths.get(fd)
            if path is None:
                return real["write"](fd, data)
            self._dead(f"write {path}")
            if self.kill_at is not None and self.count + 1 == self.kill_at:
                torn = bytes(data)[: max(1, len(data) // 2)]
                real["write"](fd, torn)
                self._event(f"torn append -> {os.path.relpath(path, self.root)}")
                self.killed = True
                raise SimulatedKill(f"killed in write {self.count}: {self.log[-1]}")
            result = real["write"](fd, data)
            self._event(f"append -> {os.path.relpath(path, self.root)}")
            return result

        def unlink(path, *args, **kwargs):
            if self._under(path):
                self._dead(f"unlink {path}")
            return real["unlink"](path, *args, **kwargs)

        os.replace, os.rename, os.write, os.open, os.unlink, os.close = replace, rename, write, open_, unlink, close
        return self

    def __exit__(self, *exc):
        for name, fn in self._saved.items():
            setattr(os, name, fn)
        self._fd_paths.clear()
        return False
