"""Progress and cancel for a hub download: bytes done/total, rate, ETA, and a stop flag.

huggingface-hub reports a download through a ``tqdm_class``: it builds a few bars from
it and calls ``update(n)`` as chunks arrive (from its worker threads). The class made by
:meth:`ProgressTracker.bar_class` renders nothing; it adds the byte counts up into
:class:`DownloadProgress` steps for the caller's callback and, at every update, asks the
caller whether to stop, raising :class:`~mlx_hooks.errors.DownloadCancelled` when so.
Qt-free and MLX-free: it runs on whatever thread downloads.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Callable

from .errors import DownloadCancelled

RATE_WINDOW_S = 5.0
"""The rate is measured over the last few seconds (a whole-download average hides a stall)."""


def format_bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}" if unit != "GiB" else f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@dataclass(frozen=True)
class DownloadProgress:
    """One step of a download (plain numbers: it crosses threads and the Qt bridge)."""

    repo_id: str
    done_bytes: int
    """Bytes fetched so far by this download (files already in the cache are not counted)."""
    total_bytes: int
    """Bytes this download has to fetch."""
    rate_bytes_per_s: float
    """Bytes per second over the last few seconds; 0 until two readings exist."""
    eta_s: float | None
    """Seconds left at that rate, or None while the rate is unknown."""
    elapsed_s: float

    @property
    def fraction(self) -> float:
        return min(1.0, self.done_bytes / self.total_bytes) if self.total_bytes else 1.0

    def describe(self) -> str:
        """E.g. ``"120.0 MiB of 1.20 GiB (10%), 12.3 MiB/s, 1:23 left"``."""
        text = f"{format_bytes(self.done_bytes)} of {format_bytes(self.total_bytes)} ({self.fraction:.0%})"
        if self.rate_bytes_per_s > 0:
            text += f", {format_bytes(self.rate_bytes_per_s)}/s"
        if self.eta_s is not None and self.done_bytes < self.total_bytes:
            text += f", {format_duration(self.eta_s)} left"
        return text


class ProgressTracker:
    """Turns huggingface-hub's bar updates into :class:`DownloadProgress` steps; stops on request.

    ``on_progress`` is called from the thread that got the bytes, when ``min_interval_s``
    has passed or another 1% of the total arrived since the last call (so a download that
    stalls has reported what it got), and for the first and last steps; steps never go back.
    """

    def __init__(self, repo_id: str, total_bytes: int,
                 on_progress: Callable[[DownloadProgress], None] | None = None,
                 should_cancel: Callable[[], bool] | None = None, min_interval_s: float = 0.1):
        self.repo_id = repo_id
        self.total_bytes = int(total_bytes)
        self.on_progress = on_progress
        self.should_cancel = should_cancel
        self.min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._byte_bars: list = []
        self._start = time.monotonic()
        self._samples: collections.deque = collections.deque()  # (time, done) over the rate window
        self._last_emit = float("-inf")
        self._last_emitted_done = 0
        self.last: DownloadProgress | None = None
        """The latest step (also the one a cancel reports)."""

    @property
    def done_bytes(self) -> int:
        # huggingface-hub feeds the same file bytes to two bars (bytes written, bytes transferred):
        # the larger count is the progress, never their sum.
        return max((bar.n for bar in self._byte_bars), default=0)

    def check_cancel(self) -> None:
        if self.should_cancel is not None and self.should_cancel():
            done = self.last.done_bytes if self.last else 0
            raise DownloadCancelled(
                f"{self.repo_id}: download cancelled after {format_bytes(done)} of {format_bytes(self.total_bytes)}; "
                "the files already complete stay in the Hugging Face cache, and the same command resumes from them")

    def step(self, final: bool = False) -> DownloadProgress | None:
        """Record the current count; call ``on_progress`` unless it was called a moment ago."""
        with self._lock:
            now = time.monotonic()
            done = self.done_bytes
            if self.last is not None:
                done = max(done, self.last.done_bytes)  # monotonic even if the library rolls a bar back
            self._samples.append((now, done))
            while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW_S:
                self._samples.popleft()
            t0, d0 = self._samples[0]
            rate = (done - d0) / (now - t0) if now > t0 and done > d0 else 0.0
            eta = (self.total_bytes - done) / rate if rate > 0 else None
            progress = DownloadProgress(self.repo_id, done, self.total_bytes, rate, eta, now - self._start)
            self.last = progress
            moved = done - self._last_emitted_done >= max(1, self.total_bytes // 100)
            if not final and not moved and now - self._last_emit < self.min_interval_s:
                return None
            self._last_emit, self._last_emitted_done = now, done
        if self.on_progress is not None:
            self.on_progress(progress)
        return progress

    def bar_class(self) -> type:
        """A ``tqdm_class`` for huggingface-hub bound to this tracker."""
        tracker = self

        class TrackedBar:
            """Renders nothing; counts bytes (bars with ``unit="B"``) and checks for cancel."""

            def __init__(self, *args, **kwargs):
                self.n = int(kwargs.get("initial") or 0)
                self.total = kwargs.get("total")
                self.format_dict: dict = {}  # huggingface-hub reads a rate from it for its postfix
                if kwargs.get("unit") == "B":
                    with tracker._lock:
                        tracker._byte_bars.append(self)

            def update(self, n: float | None = 1) -> None:
                tracker.check_cancel()
                if n:
                    with tracker._lock:
                        self.n += int(n)
                    tracker.step()

            def __enter__(self):
                return self

            def __exit__(self, *exc) -> None:
                pass

            def close(self) -> None:
                pass

            def refresh(self, *args, **kwargs) -> None:
                pass

            def set_description(self, *args, **kwargs) -> None:
                pass

            set_description_str = set_postfix = set_postfix_str = reset = clear = display = set_description

        return TrackedBar
