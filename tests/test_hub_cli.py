"""`symbiont models download` and `--model org/name` against tests/fake_hub.py: the estimate
and verdict first, a progress bar on stderr, Ctrl-C cancels cleanly (a real SIGINT to a real
process, which finds the server through HF_ENDPOINT / HF_HOME)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from hub_env import home, hub, leftovers, point_hub_at, tiny_repo_folder  # noqa: F401 - fixtures
from symbiont_app.cli import main

ROOT = Path(__file__).resolve().parents[1]


# The CLI as a terminal starts it: with Python's Ctrl-C handler. A process started in the
# background by a non-interactive shell (as a CI runner may start pytest) inherits SIGINT
# *ignored*, and Python then installs no handler, so the SIGINT test would wait forever.
_AS_FROM_A_TERMINAL = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                       "sys.argv[0] = 'symbiont'; runpy.run_module('symbiont_app.cli', run_name='__main__')")


def _symbiont(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _AS_FROM_A_TERMINAL, *args], cwd=ROOT, env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_models_download_prints_verdict_and_progress(hub, home):
    process = _symbiont("models", "download", "org/tiny", "--dtype", "float32")
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    folder = Path(out.strip().splitlines()[-1])
    assert folder.is_dir() and (folder / "model.safetensors").is_file()
    assert str(home) in str(folder)  # HF_HOME was honoured
    assert "org/tiny: not in the local cache" in err and "memory: weights" in err and "(budget" in err
    assert "(0%)" in err and "(100%)" in err  # the first and the last step of the bar
    assert "Traceback" not in err


def test_models_download_over_budget_fetches_nothing(hub):
    process = _symbiont("models", "download", "org/tiny", "--dtype", "float32", "--memory-budget", "0.0001")
    out, err = process.communicate(timeout=300)
    assert process.returncode == 1
    assert "over the memory budget" in err and "checked before fetching any weights" in err
    assert hub.full_gets("model.safetensors") == 0


def test_ctrl_c_cancels_cleanly_and_a_rerun_completes(hub, home):
    hub.hold["model.safetensors"] = 64 * 1024
    process = _symbiont("models", "download", "org/tiny")
    lines: list[str] = []
    cancelling = threading.Event()

    def read_stderr():
        for line in process.stderr:
            lines.append(line)
            if line.startswith("cancelling"):
                cancelling.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        assert hub.held.wait(120), "the download never reached the weights"
        process.send_signal(signal.SIGINT)
        assert cancelling.wait(60), "".join(lines)
        hub.release.set()  # huggingface-hub reads 10 MiB chunks: the flag is seen when the next one arrives
        process.wait(120)
        reader.join(10)
    finally:
        process.kill()
    err = "".join(lines)
    assert process.returncode == 130, err
    assert "org/tiny: download cancelled" in err and "resumes" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert leftovers(home) == []
    hub.hold.clear()
    again = _symbiont("models", "download", "org/tiny")
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert (Path(out.strip().splitlines()[-1]) / "model.safetensors").is_file()


def test_chat_with_a_repo_id_downloads_then_answers_offline(hub, capsys):
    assert main(["chat", "--model", "org/tiny", "--prompt", "hi", "--max-tokens", "3", "--temp", "0"]) == 0
    captured = capsys.readouterr()
    assert "memory: weights" in captured.err and "(100%)" in captured.err and captured.out.strip()
    hub.stop()
    assert main(["chat", "--model", "org/tiny", "--prompt", "hi", "--max-tokens", "3", "--temp", "0"]) == 0
    again = capsys.readouterr()
    assert again.out == captured.out and "not in the local cache" not in again.err
