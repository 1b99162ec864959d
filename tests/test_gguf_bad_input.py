"""Damaged or lying GGUF files end in a GGUFError naming the GGUF file, before a cache folder
is made; conversions killed mid-way are cleaned up and never listed as models."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf_fixtures import write_model_gguf
from tiny_models import make_model

from mlx_hooks.errors import GGUFError
from mlx_hooks.gguf_cache import OWNER_FILE, STALE_UNOWNED_S, claim_partial, remove_stale_partials
from mlx_hooks.gguf_convert import convert_gguf, inspect_gguf


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMBIONT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def good_gguf(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_model_gguf(path, make_model("llama"), "llama")
    return path


def _patched(good: Path, tmp_path: Path, key: str, value, part: int = -1) -> Path:
    """A copy of ``good`` with one header value overwritten in place (same size: the layout stays valid)."""
    path = tmp_path / f"{key.replace('.', '_')}.gguf"
    path.write_bytes(good.read_bytes())
    reader = gguf.GGUFReader(str(path), "r+")
    field = reader.fields[key]
    field.parts[part if part >= 0 else field.data[0]][...] = value
    del reader
    return path


@pytest.mark.parametrize("key, value, message", [
    ("llama.attention.head_count", 0, "llama.attention.head_count is 0; it must be a number above 0"),
    ("llama.attention.head_count_kv", 0, "llama.attention.head_count_kv is 0; it must be a number above 0"),
    ("llama.attention.head_count", 3, "attention.head_count 3 is not a multiple of head_count_kv"),
    ("llama.block_count", 9, "tensor 'blk.3.attn_q.weight' is missing (54 missing in all)"),
    ("llama.block_count", 0, "llama.block_count is 0"),
    ("llama.embedding_length", 65, "token_embd.weight is 64 wide, but llama.embedding_length says 65"),
    ("llama.feed_forward_length", 0, "llama.feed_forward_length is 0"),
    ("llama.context_length", 0, "llama.context_length is 0"),
    ("llama.attention.layer_norm_rms_epsilon", np.nan, "llama.attention.layer_norm_rms_epsilon is nan"),
    ("llama.rope.freq_base", -1.0, "llama.rope.freq_base is -1.0"),
])
def test_impossible_header_values_are_refused_naming_the_gguf(good_gguf, tmp_path, key, value, message):
    path = _patched(good_gguf, tmp_path, key, value)
    with pytest.raises(GGUFError) as info:
        convert_gguf(path, tmp_path / "out")
    assert str(path) in str(info.value) and message in str(info.value), str(info.value)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))  # no cache folder, no leftover


def test_an_array_length_of_2_to_the_40_is_refused_at_once_with_bounded_memory(good_gguf, tmp_path):
    """gguf-py walked the claimed 2^40 items past the end of the file (~28 MB/s without end)."""
    path = _patched(good_gguf, tmp_path, "tokenizer.ggml.tokens", 2**40, part=4)  # parts: len, key, type, item type, count
    started = time.perf_counter()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(GGUFError, match=r"tokenizer\.ggml\.tokens \(1099511627776 items of at least 8 bytes\)"):
        inspect_gguf(path)
    assert time.perf_counter() - started < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 64 * 1024  # KiB: under 64 MiB more


def test_a_killed_conversion_is_cleaned_up_and_never_listed(good_gguf, tmp_path, capsys):
    from symbiont_app.cli import main

    cache = tmp_path / "cache" / "models" / "gguf"
    cache.mkdir(parents=True)
    dead = cache / ".tiny-0123.abc.partial"  # a conversion whose process was killed: its lock went with it
    dead.mkdir()
    (dead / OWNER_FILE).write_text("12345\n")
    (dead / "model.safetensors").write_bytes(b"\0" * 1000)
    unowned_old = cache / ".tiny-0123.def.partial"  # killed before it claimed the folder, hours ago
    unowned_old.mkdir()
    os.utime(unowned_old, (time.time() - 2 * STALE_UNOWNED_S,) * 2)
    unowned_new = cache / ".tiny-0123.ghi.partial"  # just created by a conversion that is starting now
    unowned_new.mkdir()
    running = cache / ".tiny-0123.jkl.partial"  # a conversion running in another process
    running.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from pathlib import Path
        from mlx_hooks.gguf_cache import claim_partial
        fd = claim_partial(Path({str(running)!r}))
        print("held", flush=True)
        time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["models", "list"]) == 0
        listed = capsys.readouterr().out
        assert ".partial" not in listed and "gguf\t" not in listed  # nothing finished yet
        folder = convert_gguf(good_gguf, cache / "tiny-0123")  # any conversion sweeps the leftovers first
        assert not dead.exists() and not unowned_old.exists()
        assert unowned_new.exists() and running.exists()
        assert not (folder / OWNER_FILE).exists()
        assert main(["models", "list"]) == 0
        assert [line.split("\t")[1] for line in capsys.readouterr().out.splitlines() if line.startswith("gguf")] == [
            "tiny-0123"]
    finally:
        holder.kill()
        holder.wait()
    assert remove_stale_partials(cache) == [running]  # its owner is gone now


def test_claim_partial_holds_while_the_descriptor_is_open(tmp_path):
    folder = tmp_path / ".x.partial"
    folder.mkdir()
    fd = claim_partial(folder)
    assert remove_stale_partials(tmp_path) == []
    os.close(fd)
    assert remove_stale_partials(tmp_path) == [folder]
