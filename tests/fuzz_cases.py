"""Seeded mutations of small valid files, fed to Symbiont's readers (run by tests/test_fuzz.py).

Each target builds one small valid file (or folder) and a reader call. Mutation ``seed``
derives everything from ``random.Random(seed)``: 1-4 edits chosen among byte flips, runs of
random bytes, truncation, extreme integers (0, 2^31, 2^40, 2^63, 2^64-1) written over 4 or 8
bytes, duplicated or deleted spans, and for text files token edits (numbers replaced by nan,
1e400, -1, "576x", true, null; keys deleted; brackets dropped). A case passes when the reader
returns or raises a :class:`~mlx_hooks.errors.SymbiontError`; any other exception, or a case
running past ``--case-timeout`` seconds, is reported with its seed so that

    python tests/fuzz_cases.py TARGET --seed SEED --count 1

replays it. The process runs under an address-space limit (``--memory-gb``) set by the test,
so a reader that allocates for a claimed size fails with MemoryError instead of growing.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

EXTREMES = [0, 1, 2**31, 2**32 - 1, 2**40, 2**63, 2**64 - 1]
TEXT_VALUES = ["nan", "-nan", "inf", "1e400", "-1", "0", '"576x"', "true", "null", '""', "[]", "{}", "1.5", "99999999999"]


# -- mutations ------------------------------------------------------------------------------------------
def mutate_bytes(data: bytes, rng: random.Random, fields: list[tuple[int, int]] = ()) -> bytes:
    """``fields``: (offset, width) of the file's integer fields (counts, lengths, dimensions): half the
    extreme-integer edits land exactly on one, where a blind edit rarely would."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(8 if fields else 7)
        if kind == 7:  # an extreme value in a real integer field
            at, width = rng.choice(fields)
            if at + width <= len(out):
                out[at:at + width] = (rng.choice(EXTREMES) % (1 << (8 * width))).to_bytes(width, "little")
            continue
        at = rng.randrange(max(len(out), 1))
        if kind == 0 and out:  # flip a byte
            out[at] ^= 1 << rng.randrange(8)
        elif kind == 1:  # random bytes over a span
            n = rng.randint(1, 16)
            out[at:at + n] = bytes(rng.randrange(256) for _ in range(n))
        elif kind == 2:  # truncate
            del out[at:]
        elif kind == 3 and len(out) >= 8:  # an extreme integer over 4 or 8 bytes (a count, a length)
            width = rng.choice([4, 8])
            value = rng.choice(EXTREMES) % (1 << (8 * width))
            at = min(at, len(out) - width)
            out[at:at + width] = value.to_bytes(width, "little")
        elif kind == 4:  # duplicate a span
            n = rng.randint(1, 64)
            out[at:at] = out[at:at + n]
        elif kind == 5:  # delete a span
            del out[at:at + rng.randint(1, 64)]
        else:  # insert random bytes
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return bytes(out)


def mutate_text(text: str, rng: random.Random) -> str:
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(5)
        numbers = list(re.finditer(r"-?\d+(\.\d+)?(e-?\d+)?", text))
        if kind == 0 and numbers:  # a number becomes something else
            m = rng.choice(numbers)
            text = text[:m.start()] + rng.choice(TEXT_VALUES) + text[m.end():]
        elif kind == 1:  # a string value becomes something else
            strings = list(re.finditer(r'"[^"\n]*"', text))
            if strings:
                m = rng.choice(strings)
                text = text[:m.start()] + rng.choice(TEXT_VALUES) + text[m.end():]
        elif kind == 2:  # a line goes
            lines = text.splitlines(keepends=True)
            if lines:
                del lines[rng.randrange(len(lines))]
                text = "".join(lines)
        elif kind == 3:  # a bracket goes
            brackets = [i for i, c in enumerate(text) if c in "[]{}"]
            if brackets:
                i = rng.choice(brackets)
                text = text[:i] + text[i + 1:]
        else:
            text = mutate_bytes(text.encode("utf-8", "surrogateescape"), rng).decode("utf-8", "surrogateescape")
    return text


# -- targets: build a valid file once, then read mutated copies ----------------------------------------------
def build_gguf(folder: Path) -> Path:
    from gguf_fixtures import write_model_gguf
    from tiny_models import make_model

    path = folder / "model.gguf"
    write_model_gguf(path, make_model("llama"), "llama")
    return path


def gguf_fields(path: Path) -> list[tuple[int, int]]:
    """Offsets and widths of every integer in the header (gguf-py's own parse of the valid file)."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(path))
    out = []
    for item in [*reader.fields.values(), *(t.field for t in reader.tensors)]:
        offset = item.offset
        for part in item.parts:
            if part.dtype.kind in "ui" and part.size <= 4:  # scalars and small arrays (dims), not string bytes
                for k in range(part.size):
                    out.append((offset + k * part.itemsize, part.itemsize))
            offset += part.nbytes
    del reader
    return sorted(set(out)) or [(8, 8)]


def read_gguf(path: Path) -> None:
    from mlx_hooks.gguf_convert import inspect_gguf

    inspect_gguf(path)


def convert(path: Path) -> None:
    """The whole conversion (tokenizer, every tensor), into a cache of its own."""
    import os

    from mlx_hooks.gguf_convert import convert_gguf

    os.environ["SYMBIONT_CACHE_DIR"] = str(path.parent / "cache")
    convert_gguf(path, path.parent / "converted")


def build_safetensors(folder: Path) -> Path:
    import numpy as np

    from mlx_hooks.steering import SteeringVector
    from mlx_hooks.vector_file import save_vectors

    rng = np.random.default_rng(0)
    path = folder / "vectors.safetensors"
    save_vectors(path, [SteeringVector("a", "resid_post.1", rng.standard_normal(64), typical_norm=3.0),
                        SteeringVector("b", "resid_pre.2", rng.standard_normal(64))])
    return path


def read_safetensors(path: Path) -> None:
    from mlx_hooks.vector_file import load_vectors

    load_vectors(path)


def build_sae(folder: Path) -> Path:
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    sae = folder / "sae"
    sae.mkdir()
    (sae / "cfg.json").write_text(json.dumps({
        "architecture": "topk", "d_in": 16, "d_sae": 24, "k": 4, "dtype": "float32", "apply_b_dec_to_input": True,
        "normalize_activations": "none", "metadata": {"model_name": "tiny", "hook_name": "blocks.1.hook_resid_post"}},
        indent=1))
    save_file({"W_enc": rng.standard_normal((16, 24)).astype(np.float32),
               "W_dec": rng.standard_normal((24, 16)).astype(np.float32),
               "b_enc": np.zeros(24, np.float32), "b_dec": np.zeros(16, np.float32)}, str(sae / "sae_weights.safetensors"))
    return sae


def read_sae(folder: Path) -> None:
    from mlx_hooks.sae.formats import load_sae

    load_sae(folder, attach_records=False)


def build_preset(folder: Path) -> Path:
    import numpy as np
    from conftest import make_tiny_llama

    from mlx_hooks.fingerprint import fingerprint_model
    from mlx_hooks.presets import Preset, SteeringEntry, write_preset
    from mlx_hooks.sampling import SamplingSettings
    from mlx_hooks.steering import SteeringVector

    vector = SteeringVector("ab", "resid_post.1", np.random.default_rng(0).standard_normal(64), typical_norm=2.0)
    preset = Preset(name="fuzz", target_model_name="tiny", fingerprint=fingerprint_model(make_tiny_llama()),
                    sampling=SamplingSettings(temp=0.7, top_p=0.9, seed=3),
                    interventions=[SteeringEntry("ab", "resid_post.1", 0.25, True, "all"),
                                   SteeringEntry("ab", "resid_post.0", -1.5, False, (3, 4))],
                    vectors={"ab": vector})
    path = folder / "fuzz.symbiont-preset"
    write_preset(path, preset)
    write_preset(folder / "fuzz.json", preset)
    return path


def read_preset(path: Path) -> None:
    from mlx_hooks.presets import read_preset as read

    read(path)


LAB_CONFIG = """experiment = "subliminal"
name = "fuzz"
seed = 3

[model]
spec = "default"
dtype = "float32"
memory_budget_gb = 4.5

[trait]
kind = "system_prompt"
animal = "owl"

[numbers]
prompt_count = 64
dataset_size = 40
batch_size = 8
max_tokens = 12
temperature = 1.0
valid_fraction = 0.05

[lora]
iters = 6
batch_size = 4
learning_rate = 5e-3
warmup_steps = 1
steps_per_checkpoint = 4
rank = 4
alpha = 8.0

[probes]
max_questions = 4
samples_per_question = 4
animals = ["owl", "cat", "dog"]

[mechanism]
max_prompts = 4

[variations]
probes = ["logit"]

[variations.fraction]
fractions = [1.0, 0.5]

[variations.noise]
kinds = ["shuffle"]
replace_fraction = 0.5
"""


def build_lab_config(folder: Path) -> Path:
    path = folder / "run.toml"
    path.write_text(LAB_CONFIG)
    return path


def read_lab_config(path: Path) -> None:
    from symbiont_lab.subliminal.config import load_config

    load_config(path)


TARGETS = {
    "gguf": (build_gguf, read_gguf, "gguf"),
    "gguf_convert": (build_gguf, convert, "gguf"),
    "safetensors": (build_safetensors, read_safetensors, "bytes"),
    "sae_weights": (build_sae, read_sae, "sae_weights"),
    "sae_config": (build_sae, read_sae, "sae_config"),
    "preset_archive": (build_preset, read_preset, "bytes"),
    "preset_json": (build_preset, read_preset, "preset_json"),
    "lab_config": (build_lab_config, read_lab_config, "text"),
}


class CaseTimeout(BaseException):
    pass


def run(target: str, first_seed: int, count: int, case_timeout: float) -> list[dict]:
    """Failures (seed, what happened) of ``count`` mutations from ``first_seed`` on, and how many
    mutated files were read, refused with a Symbiont error, or failed otherwise."""
    from mlx_hooks.errors import SymbiontError

    build, read, kind = TARGETS[target]
    work = Path(tempfile.mkdtemp(prefix=f"fuzz-{target}-"))
    failures = []
    outcomes = {"read": 0, "refused": 0, "failed": 0}

    def on_alarm(signum, frame):
        raise CaseTimeout

    signal.signal(signal.SIGALRM, on_alarm)
    try:
        (work / "original").mkdir()
        original = build(work / "original")
        fields = gguf_fields(original) if kind == "gguf" else []
        for seed in range(first_seed, first_seed + count):
            rng = random.Random(seed)
            case = work / f"case{seed}"
            if original.is_dir():
                shutil.copytree(original, case)
                victim = case / ("cfg.json" if kind == "sae_config" else "sae_weights.safetensors")
            else:
                case.mkdir()
                victim = case / original.name
                shutil.copy(original, victim)
            if kind == "preset_json":
                shutil.copy(original.with_name("fuzz.safetensors"), case / "fuzz.safetensors")
                victim = case / "fuzz.json"
                victim.write_bytes(original.with_name("fuzz.json").read_bytes())
            data = victim.read_bytes()
            if kind in ("text", "sae_config", "preset_json") and rng.random() < 0.8:
                victim.write_bytes(mutate_text(data.decode(), rng).encode("utf-8", "surrogateescape"))
            else:
                victim.write_bytes(mutate_bytes(data, rng, fields))
            started = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, case_timeout)
            try:
                read(case if original.is_dir() else victim)
                outcomes["read"] += 1
            except SymbiontError:
                outcomes["refused"] += 1
            except CaseTimeout:
                failures.append({"seed": seed, "problem": f"still running after {case_timeout} s"})
            except BaseException as exc:  # noqa: BLE001 - every other type is the finding
                failures.append({"seed": seed, "problem": f"{type(exc).__name__}: {exc}"[:500],
                                 "where": traceback.format_exc().strip().splitlines()[-3:]})
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            if time.perf_counter() - started > case_timeout and not any(f["seed"] == seed for f in failures):
                failures.append({"seed": seed, "problem": f"took {time.perf_counter() - started:.1f} s"})
            shutil.rmtree(case, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    outcomes["failed"] = len(failures)
    return failures, outcomes


def _peak_rss_mib() -> float:
    """Peak resident size of this process's own image so far, in MiB.

    Linux's ru_maxrss survives execve: a child started by a big pytest process reports the
    parent's size at fork (2.6 GiB was seen in CI). VmHWM belongs to the new image only.
    """
    import resource

    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="+", choices=sorted(TARGETS))
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--count", type=int, default=100, help="mutations per target")
    parser.add_argument("--case-timeout", type=float, default=5.0)
    parser.add_argument("--memory-gb", type=float, default=None, help="address-space limit for this process")
    args = parser.parse_args(argv)
    import resource

    if args.memory_gb:
        limit = int(args.memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    failed = False
    for target in args.targets:
        started = time.perf_counter()
        failures, outcomes = run(target, args.seed, args.count, args.case_timeout)
        failed |= bool(failures)
        peak = _peak_rss_mib()
        print(json.dumps({"target": target, "seeds": [args.seed, args.seed + args.count - 1], "outcomes": outcomes,
                          "seconds": round(time.perf_counter() - started, 1), "peak_rss_mib": round(peak),
                          "failures": failures}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
