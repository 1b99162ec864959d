"""Longest GUI event-loop stall while the engine thread works, against an idle baseline.

    QT_QPA_PLATFORM=offscreen python benchmarks/gui_stall.py [--tokens 64] [--idle 3] [--no-sae] [--train 20]
        [--panels model,temperature,...]

Opens the full main window (every panel) on the default model, then measures, in one
process, phase after phase, the gaps between ticks of a 5 ms QTimer on the GUI thread:

  idle         model loaded, nothing running (the baseline)
  generation   a chat reply of --tokens tokens streaming into the window (chat, meters,
               temperature and lens panels all updating), the shipped SAE's meters on
  sae-training (with --train S > 0, when the SAE panel's TrainSae request exists) S seconds
               of a small SAE training run with its live progress, then cancelled

A gap is the time between two consecutive timer callbacks (5 ms when the loop is free).
Prints one row per phase: ticks, median / p99 / max gap, max gap / idle max gap, and the
longest single event dispatch in GUI-thread CPU time (what the window's own handlers and
paints cost; wall-clock gaps also include waiting for a CPU on a loaded machine).
Target: max gap < 50 ms in every phase. To add a phase, append ``(name, start, done)``
to ``phases`` in :func:`main`: ``start(window)`` begins the work, ``done(window)`` says
when the phase is over (it may also stop the work itself).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from mlx_hooks.backend import reexec_with_fast_blas  # noqa: E402

reexec_with_fast_blas()
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("SYMBIONT_CONFIG_DIR", tempfile.mkdtemp(prefix="symbiont-stall-config-"))

TARGET_MS = 50.0
PROMPT = "Tell me a short story about a lighthouse keeper and a storm."


def timed_application_class():
    """A QApplication that times each outermost event dispatch in GUI-thread CPU time.

    Wall-clock gaps include time the GUI thread waited for a CPU (on a loaded machine,
    other processes' work); the thread's CPU time per dispatch is what our handlers and
    paints cost, whatever the load.
    """
    from PySide6.QtWidgets import QApplication

    class TimedApplication(QApplication):
        def __init__(self, argv):
            super().__init__(argv)
            self.dispatch_ms: list[float] = []
            self.slow: list[tuple[float, str, str]] = []
            self._depth = 0

        def notify(self, receiver, event):
            self._depth += 1
            began = time.thread_time()
            try:
                return super().notify(receiver, event)
            finally:
                self._depth -= 1
                if self._depth == 0:
                    spent = (time.thread_time() - began) * 1000.0
                    self.dispatch_ms.append(spent)
                    if spent > 5.0:  # what the slow ones were, for the report
                        self.slow.append((spent, _owner(receiver), event.type().name))

    return TimedApplication


def _owner(receiver) -> str:
    """The receiver's class, and the app panel it belongs to (a plot's scene -> its panel)."""
    name = type(receiver).__name__
    widget = receiver.views()[0] if hasattr(receiver, "views") and receiver.views() else receiver
    while widget is not None and hasattr(widget, "parentWidget"):
        if type(widget).__module__.startswith("symbiont_app.widgets"):
            return f"{name} in {type(widget).__name__}"
        widget = widget.parentWidget()
    return name


class StallMeter:
    """Records the gaps between ticks of a 5 ms timer on the GUI thread."""

    def __init__(self, interval_ms: int = 5):
        from PySide6.QtCore import Qt, QTimer

        self.timer = QTimer()
        self.timer.setTimerType(Qt.PreciseTimer)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)
        self.gaps: list[float] = []
        self._last: float | None = None

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.gaps.append((now - self._last) * 1000.0)
        self._last = now

    def start(self) -> None:
        self.gaps, self._last = [], None
        self.timer.start()

    def stop(self) -> list[float]:
        self.timer.stop()
        return self.gaps


def run_phase(app, meter: StallMeter, window, start, done, timeout: float) -> tuple[list[float], float, list[float]]:
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    began = time.perf_counter()
    poll = QTimer()
    poll.setInterval(20)
    poll.timeout.connect(lambda: (done(window) or time.perf_counter() - began > timeout) and loop.quit())
    dispatch = getattr(app, "dispatch_ms", None)
    first = len(dispatch) if dispatch is not None else 0
    if hasattr(app, "slow"):
        app.slow.clear()
    meter.start()
    start(window)
    poll.start()
    loop.exec()  # the real event loop: the window's own work and the meter's ticks interleave here
    poll.stop()
    return meter.stop(), time.perf_counter() - began, (dispatch[first:] if dispatch is not None else [])


def summary(name: str, gaps: list[float], seconds: float, baseline: float | None, dispatch: list[float]) -> str:
    if not gaps:
        return f"{name:13s} no ticks"
    ordered = sorted(gaps)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    worst = ordered[-1]
    ratio = f"{worst / baseline:5.2f}" if baseline else "  1.00"
    verdict = "ok" if worst < TARGET_MS else f"OVER {TARGET_MS:.0f} ms"
    return (f"{name:13s} {seconds:7.1f} s {len(gaps):7d} ticks  median {statistics.median(gaps):6.2f} ms  "
            f"p99 {p99:7.2f} ms  max {worst:7.2f} ms  max/idle {ratio}  {verdict};  "
            f"longest event dispatch {max(dispatch, default=0.0):6.2f} ms GUI-thread CPU")


def _wait(app, predicate, timeout: float, what: str) -> None:
    from PySide6.QtCore import QEventLoop

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        app.processEvents(QEventLoop.AllEvents, 20)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--idle", type=float, default=3.0, help="seconds of idle baseline")
    parser.add_argument("--no-sae", action="store_true", help="do not load the shipped SAE (no meters)")
    parser.add_argument("--train", type=float, default=0.0, help="seconds of SAE training to measure (0: skip)")
    parser.add_argument("--panels", default=None,
                        help="comma-separated panel names to open (default: all; 'none': the chat alone)")
    args = parser.parse_args()

    from PySide6.QtWidgets import QApplication

    from mlx_hooks.backend import backend_info
    from symbiont_app.engine.handlers.chat.messages import SendMessage
    from symbiont_app.gui import build_window

    app = QApplication.instance() or timed_application_class()([sys.argv[0]])
    from symbiont_app.widgets.panels import PANELS

    chosen = None if args.panels is None else [p for p in PANELS if p.name in args.panels.split(",")]
    window = build_window(args.model, panels=chosen)
    window.resize(1600, 1000)
    window.show()
    session = window.session
    _wait(app, lambda: session.model_info is not None or session.models.loading_request is None, 600, "the model")
    if session.model_info is None:
        print(f"model did not load: {session.last_error.message if session.last_error else '?'}")
        return 1
    sae = None
    if not args.no_sae:
        try:
            from symbiont_app.bundle import shipped_sae_root
            from symbiont_app.session.sae import SaeModel

            sae = SaeModel.of(session)
            sae.load(str(sorted(p.parent for p in shipped_sae_root().rglob("cfg.json"))[0]))
            _wait(app, lambda: not session.active, 300, "the SAE")
        except ImportError:
            print("(no SAE panel in this build: generation without meters)")
    print(f"model {session.model_info.name}; SAE {sae.info.sae_id if sae is not None and sae.info else 'none'}; "
          f"panels {', '.join(window.docks) or 'none (chat only)'}; {backend_info().summary()}; "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")

    window.chat.max_tokens.setValue(args.tokens)
    window.chat.temp.setValue(0.8)

    def send(w):
        w.chat.entry.setText(PROMPT)
        w.chat.send()

    phases = [
        ("idle", lambda w: None, lambda w, t=[]: t.append(1) or len(t) * 0.02 >= args.idle),
        ("generation", send, lambda w: not w.session.busy(SendMessage)),
    ]
    if args.train > 0:
        phases.append(_training_phase(args.train))

    meter = StallMeter()
    rows, baseline = [], None
    for name, start, done in phases:
        gaps, seconds, dispatch = run_phase(app, meter, window, start, done, timeout=900)
        if name == "generation":
            tokens = len(session.conversation.turns[-1].tokens) if session.conversation.turns else 0
            name_note = f"{tokens} tokens in {seconds:.1f} s ({tokens / seconds:.1f} tok/s)"
        else:
            name_note = getattr(done, "state", {}).get("note", "")
        worst = max(gaps) if gaps else 0.0
        if name == "idle":
            baseline = worst
        rows.append((summary(name, gaps, seconds, baseline, dispatch), name_note))
        slowest = sorted(getattr(app, "slow", []), reverse=True)[:3]
        if slowest:
            rows.append(("              slowest dispatches: " + "; ".join(
                f"{ms:.1f} ms {receiver} {kind}" for ms, receiver, kind in slowest), ""))
    window.close()
    window.wait_for_engine()  # (a lens run may still be finishing: MLX must not be mid-call at exit)
    print(f"event-loop stalls (5 ms timer on the GUI thread; target max < {TARGET_MS:.0f} ms)")
    for row, note in rows:
        print(row + (f"   [{note}]" if note else ""))
    if session.last_error is not None:
        print(f"error shown in the window: {session.last_error.message}")
    return 0


def _training_phase(seconds: float):
    """SAE training through the SAE panel's request (cancelled after ``seconds``)."""
    try:
        from symbiont_app.session.sae import SaeModel
    except ImportError:
        return ("sae-training", lambda w: print("(no TrainSae request in this build)"), lambda w: True)
    state = {}

    # A small text folder (Python's own docs), written before the phase starts, instead of the
    # built-in corpus, whose model-written part would spend the whole phase generating text:
    # here the phase reaches the training steps (activation extraction first) within seconds.
    from mlx_hooks.sae.corpus import python_docs_texts

    out = tempfile.mkdtemp(prefix="symbiont-stall-sae-")
    corpus = os.path.join(out, "corpus")
    os.makedirs(corpus)
    for i, text in enumerate(python_docs_texts()[:10]):
        with open(os.path.join(corpus, f"{i:03d}.txt"), "w", encoding="utf-8") as f:
            f.write(text[:1200])  # ~2.5k tokens: extraction takes seconds, then the optimizer runs

    def start(w):
        state["began"] = time.perf_counter()
        SaeModel.of(w.session).train(out=os.path.join(out, "sae"), corpus=corpus, d_sae=1152, k=16, steps=100_000,
                                     batch_size=256, context_length=64, report_every=5, build_records=False,
                                     load_when_done=False)

    def done(w):
        sae = SaeModel.of(w.session)
        steps = sae.train_metrics["step"]
        state["note"] = f"reached: {sae.train_progress[2]}; {int(steps[-1]) if steps else 0} training steps"
        if time.perf_counter() - state["began"] > seconds and sae.training:
            sae.cancel_training()
        return not sae.training

    done.state = state
    return ("sae-training", start, done)


if __name__ == "__main__":
    sys.exit(main())
