"""A hub download in the terminal: the estimate and verdict first, then a progress bar on stderr.

Used by ``symbiont models download`` and by every ``--model org/name`` load. The plan and
the estimate run on the main thread (the estimate reads the config as a load does, which
may touch MLX); the bytes move on a plain thread so that Ctrl-C reaches the main thread at
once, which sets the cancel flag and waits for the download to stop at its next chunk.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from mlx_hooks.hub_progress import DownloadProgress

BAR_WIDTH = 24
QUIET_INTERVAL_S = 5.0
"""Without a terminal (a log file), a line at most this often (and at every 25%)."""


class TerminalBar:
    """Redraws one line on a terminal; prints sparse lines when stderr is not one."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self._last_line = 0.0
        self._last_quarter = -1
        self._drawn = False

    def update(self, progress: DownloadProgress) -> None:
        filled = int(BAR_WIDTH * progress.fraction)
        line = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {progress.describe()}"
        if self.tty:
            self.stream.write(f"\r{line:<100}")
            self.stream.flush()
            self._drawn = True
            return
        quarter = int(progress.fraction * 4)
        now = time.monotonic()
        if quarter != self._last_quarter or now - self._last_line >= QUIET_INTERVAL_S:
            self._last_quarter, self._last_line = quarter, now
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self._drawn:
            self._drawn = False
            self.stream.write("\n")
            self.stream.flush()


def fetch_with_progress(repo_id: str, *, runtime_dtype: str = "auto", context_tokens: int = 4096,
                        capture_points: int = 0, budget_bytes: int | None = None,
                        stream: TextIO | None = None) -> Path:
    """The cached snapshot, or: plan, print the estimate, refuse over the budget, download with a bar.

    Raises ``MemoryBudgetError`` before any weight is fetched, ``DownloadCancelled`` on Ctrl-C.
    """
    from mlx_hooks.errors import DownloadCancelled
    from mlx_hooks.hub import cached_snapshot, download, plan_download
    from mlx_hooks.hub_progress import format_bytes
    from mlx_hooks.loader import estimate_for_plan
    from mlx_hooks.memory import check_budget

    stream = stream or sys.stderr
    folder = cached_snapshot(repo_id)
    if folder is not None:
        return folder
    print(f"{repo_id}: not in the local cache; reading its config and safetensors headers from the Hub", file=stream)
    plan = plan_download(repo_id)
    estimate = estimate_for_plan(plan, runtime_dtype, context_tokens, capture_points)
    budget = "no budget" if budget_bytes is None else f"budget {format_bytes(budget_bytes)}"
    print(f"{plan.describe()}\nmemory: {estimate.describe()} ({budget})", file=stream, flush=True)
    check_budget(estimate, budget_bytes, f"downloading {repo_id} (checked before fetching any weights)")

    cancel, finished = threading.Event(), threading.Event()
    bar = TerminalBar(stream)
    outcome: dict = {}

    def work() -> None:
        try:
            outcome["folder"] = download(plan, bar.update, cancel.is_set)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            outcome["error"] = exc
        finally:
            finished.set()

    threading.Thread(target=work, name="symbiont-download", daemon=True).start()
    # Waits on an Event, not Thread.join: a KeyboardInterrupt inside join() can mark the
    # thread as stopped while it still runs (CPython's bpo-45274 handling), and a second
    # join() then returns at once.
    try:
        while not finished.wait(0.2):
            pass
    except KeyboardInterrupt:
        cancel.set()
        bar.close()
        print("cancelling: the download stops at its next chunk (Ctrl-C again to quit at once)…", file=stream,
              flush=True)
        finished.wait()
    bar.close()
    error = outcome.get("error")
    if error is not None:
        raise error
    if cancel.is_set():  # Ctrl-C after the last chunk: the files are complete, but the user asked to stop
        raise DownloadCancelled(f"{repo_id}: cancelled (the download had completed: the files are in the cache)")
    return outcome["folder"]
