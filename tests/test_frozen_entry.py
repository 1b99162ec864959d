"""The frozen app's entry point runs multiprocessing workers instead of opening the window.

In a PyInstaller bundle a spawned worker starts as ``Symbiont --multiprocessing-fork ...``
and the resource tracker as ``Symbiont -c "from multiprocessing.resource_tracker ..."``.
Without the bundle, this test stands in for it: a launcher that marks the interpreter
frozen, runs PyInstaller's own multiprocessing runtime hook (as the bundle does) and then
calls :func:`symbiont_app.frozen_main.main` exactly as ``packaging/symbiont_launcher.py``
does; the parent, also marked frozen, runs a spawn pool (as the negation lab does) with
that launcher as its executable.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _pyinstaller_rthook() -> Path:
    pyinstaller = pytest.importorskip("PyInstaller", reason="PyInstaller (the packaging extra) is not installed")
    hook = Path(pyinstaller.__file__).parent / "hooks" / "rthooks" / "pyi_rth_multiprocessing.py"
    if not hook.is_file():
        pytest.fail(f"PyInstaller {pyinstaller.__version__} has no {hook}: where does its multiprocessing hook live now?")
    return hook


def _frozen_launcher(folder: Path, hook: Path) -> Path:
    entry = folder / "frozen_entry.py"
    entry.write_text(f"""
import sys
sys.frozen = True
exec(compile(open({str(hook)!r}).read(), {str(hook)!r}, "exec"))
sys.argv[0] = {str(folder / "Symbiont")!r}
from symbiont_app.frozen_main import main
sys.exit(main())
""")
    launcher = folder / "Symbiont"
    launcher.write_text(f'#!/bin/sh\nexec {sys.executable} {entry} "$@"\n')
    launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR)
    return launcher


def test_frozen_entry_runs_spawned_pool_workers_and_exits(tmp_path):
    hook = _pyinstaller_rthook()
    launcher = _frozen_launcher(tmp_path, hook)
    parent = f"""
import json, multiprocessing, operator, os, sys
from concurrent.futures import ProcessPoolExecutor
sys.frozen = True
exec(compile(open({str(hook)!r}).read(), {str(hook)!r}, "exec"))
sys.executable = {str(launcher)!r}
multiprocessing.set_executable({str(launcher)!r})
with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
    sums = list(pool.map(operator.add, [1, 2, 3], [10, 20, 30]))
print(json.dumps(sums))
"""
    env = dict(os.environ, PYTHONPATH=str(ROOT), SYMBIONT_NO_BLAS_REEXEC="1", QT_QPA_PLATFORM="offscreen",
               # without the fix a worker opens the window and loads a model: keep it from finding one quickly
               SYMBIONT_CACHE_DIR=str(tmp_path / "cache"), SYMBIONT_CONFIG_DIR=str(tmp_path / "config"),
               SYMBIONT_DATA_DIR=str(tmp_path / "data"))
    proc = subprocess.Popen([sys.executable, "-c", parent], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the pool and any window its workers opened
        out, err = proc.communicate()
        pytest.fail(f"the spawn pool hung: its workers did not run as workers\n{err[-3000:]}")
    assert proc.returncode == 0, err[-3000:]
    assert json.loads(out.strip().splitlines()[-1]) == [11, 22, 33]


def test_main_calls_freeze_support_before_anything_else(monkeypatch):
    """In-process: a worker's command line never reaches the argument parser or the window."""
    from symbiont_app import frozen_main

    calls = []

    def worker_ran():
        calls.append(list(sys.argv))
        raise SystemExit(0)  # what PyInstaller's freeze_support does after running the worker

    monkeypatch.setattr(frozen_main.multiprocessing, "freeze_support", worker_ran)
    monkeypatch.setattr(frozen_main, "run_gui", lambda *a, **k: pytest.fail("the window was opened"))
    monkeypatch.setattr(frozen_main, "reexec_with_fast_blas", lambda: pytest.fail("re-exec before freeze_support"))
    monkeypatch.setattr(sys, "argv", ["Symbiont", "--multiprocessing-fork", "tracker_fd=5", "pipe_handle=7"])
    with pytest.raises(SystemExit):
        frozen_main.main()
    assert calls == [["Symbiont", "--multiprocessing-fork", "tracker_fd=5", "pipe_handle=7"]]
